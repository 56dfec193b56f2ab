"""SQL fragments the repository modules share: the open pool, "rated/skipped by", leases, usable scores."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Result, and_, exists, false, or_, select

from storage.errors import InvalidInput
from storage.schema import Rating, Sample, ScoreQuarantine, Skip, utcnow


def rowcount(result: Result[Any]) -> int:
    """Rows matched by an UPDATE/DELETE: the check behind every conditional (compare-and-set) update."""
    return cast(CursorResult[Any], result).rowcount


def resolve_now(now: datetime | None) -> datetime:
    """``now`` is injectable for tests and replays; it must be timezone-aware."""
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise InvalidInput("now must be timezone-aware (UTC)")
    return now


def check_seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def is_open() -> ColumnElement[bool]:
    """In no batch and not stale: rateable, and claimable once scored."""
    return and_(Sample.batch_id.is_(None), Sample.stale == false())


def rated_by(rater_id: int | ColumnElement[int]) -> ColumnElement[bool]:
    return exists(select(Rating.id).where(Rating.sample_id == Sample.id, Rating.rater_id == rater_id))


def skipped_by(rater_id: int | ColumnElement[int]) -> ColumnElement[bool]:
    return exists(select(Skip.sample_id).where(Skip.sample_id == Sample.id, Skip.rater_id == rater_id))


def quarantined_for(source: str) -> ColumnElement[bool]:
    """The reward model ``source`` raised or hung on this sample (storage.quarantine)."""
    match = and_(ScoreQuarantine.sample_id == Sample.id, ScoreQuarantine.source == source)
    return exists(select(ScoreQuarantine.sample_id).where(match))


def lease_free(
    now: datetime | ColumnElement[datetime], rater_id: int | ColumnElement[int] | None = None
) -> ColumnElement[bool]:
    """Not leased, lease expired, or (when ``rater_id`` is given) leased to that rater. Values or bound
    parameters (the prebuilt statements of samples.py)."""
    free = or_(Sample.lease_expires_at.is_(None), Sample.lease_expires_at <= now)
    return free if rater_id is None else or_(free, Sample.lease_rater_id == rater_id)


def has_usable_score(use_auto_scores: bool) -> ColumnElement[bool]:
    """The counter form of scoring.training_score() is not None."""
    return or_(Sample.human_n > 0, Sample.auto_n > 0) if use_auto_scores else Sample.human_n > 0

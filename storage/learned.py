"""Queries of the learned reward model (app/learned/): what it is fit on, what it may score, how it is checked.

Its scores are ratings like any reward model's: by the model rater ``reward:learned@vN`` with source
``learned@vN`` (N, the version of the fit that gave the score), so exports show which fit scored what. A sample
is scored by one version only (whichever was current), and a sample the learned model refused (its guard) is
quarantined for the source ``learned``, whatever the version: ``storage.quarantine``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.orm import Session

from storage.conversions import sample_record
from storage.queries import is_open, lease_free, quarantined_for, resolve_now
from storage.records import SampleRecord
from storage.schema import HUMAN_SOURCE, MODEL_RATER_PREFIX, Prompt, Rater, Rating, Sample
from storage.validation import check_int

LEARNED_SOURCE = "learned"
"""The family name: quarantine source and prefix of every version's source (``learned@v3``)."""
_VERSION_SOURCE = re.compile(r"learned@v(\d+)")


def learned_source(version: int) -> str:
    return f"{LEARNED_SOURCE}@v{check_int(version, 'version', minimum=1)}"


def _learned_rating() -> ColumnElement[bool]:
    return Rating.source.like(f"{LEARNED_SOURCE}@v%")


@dataclass(frozen=True)
class HumanScored:
    """A sample people rated: the learned model's training item."""

    sample_id: int
    prompt: str
    response: str
    score: float
    """The mean human score."""
    ratings: int


@dataclass(frozen=True)
class Check:
    """A human rating given after the learned model scored the sample: a check of the model."""

    sample_id: int
    source: str
    learned: float
    human: float
    """The mean of the human scores given after the learned score."""


def human_scored(s: Session) -> list[HumanScored]:
    """Every sample with a human rating, with its mean human score, oldest sample first."""
    stmt = (
        select(Sample.id, Prompt.text, Sample.response_text, func.avg(Rating.score), func.count(Rating.id))
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .join(Rating, Rating.sample_id == Sample.id)
        .where(Rating.source == HUMAN_SOURCE)
        .group_by(Sample.id, Prompt.text, Sample.response_text)
        .order_by(Sample.id)
    )
    return [HumanScored(i, p, r, float(m), int(n)) for i, p, r, m, n in s.execute(stmt).tuples()]


def human_rating_mark(s: Session) -> tuple[int, int]:
    """(human ratings, newest human rating id): changes whenever a human rating is added or undone."""
    n, newest = s.execute(
        select(func.count(Rating.id), func.coalesce(func.max(Rating.id), 0)).where(Rating.source == HUMAN_SOURCE)
    ).one()
    return int(n), int(newest)


def samples_to_score(
    s: Session, *, waited_s: float = 0.0, limit: int = 32, now: datetime | None = None
) -> list[SampleRecord]:
    """Open samples no person rated, nobody holds, no learned version scored and the guard did not refuse,
    generated at least ``waited_s`` seconds ago (humans first), newest first."""
    now = resolve_now(now)
    scored = exists(select(Rating.id).where(Rating.sample_id == Sample.id, _learned_rating()))
    stmt = (
        select(Sample, Prompt.text)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .where(is_open(), Sample.human_n == 0, lease_free(now), ~scored, ~quarantined_for(LEARNED_SOURCE))
        .where(Sample.created_at <= now - timedelta(seconds=waited_s))
        .order_by(Sample.policy_version.desc(), Sample.id.desc())
        .limit(check_int(limit, "limit", minimum=1))
    )
    return [sample_record(sample, text) for sample, text in s.execute(stmt).tuples()]


def checks(s: Session) -> list[Check]:
    """Every learned score that people rated afterwards, with the mean of those later human scores."""
    learned = (
        select(Rating.sample_id, Rating.source, Rating.score, Rating.created_at).where(_learned_rating()).subquery()
    )
    stmt = (
        select(learned.c.sample_id, learned.c.source, learned.c.score, Rating.score)
        .join(Rating, Rating.sample_id == learned.c.sample_id)
        .where(Rating.source == HUMAN_SOURCE, Rating.created_at >= learned.c.created_at)
        .order_by(learned.c.sample_id)
    )
    later: dict[tuple[int, str, float], list[float]] = defaultdict(list)
    for sample_id, source, score, human in s.execute(stmt).tuples():
        later[(sample_id, source, score)].append(human)
    return [Check(i, src, v, sum(h) / len(h)) for (i, src, v), h in later.items()]


def latest_learned_version(s: Session) -> int:
    """The highest N of any ``reward:learned@vN`` rater (0 if none): a restarted app continues after it, so one
    source name never names two fits."""
    names = s.scalars(select(Rater.name).where(Rater.name.like(f"{MODEL_RATER_PREFIX}{LEARNED_SOURCE}@v%")))
    found = [_VERSION_SOURCE.fullmatch(n.removeprefix(MODEL_RATER_PREFIX)) for n in names]
    return max((int(m.group(1)) for m in found if m), default=0)


def count_human_rated_samples(s: Session) -> int:
    """Samples with at least one human rating."""
    return s.scalar(select(func.count()).where(Sample.human_n > 0)) or 0


def count_learned_scores(s: Session) -> int:
    """Ratings given by any learned version."""
    return s.scalar(select(func.count(Rating.id)).where(_learned_rating())) or 0

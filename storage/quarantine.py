"""Score quarantine: samples a reward model could not score (its call raised or ran out of time on them alone).

A quarantined sample is never handed to that reward model again (``samples_needing_auto_score`` leaves it out),
so one bad sample cannot stall automatic scoring; it stays in the open pool, rateable by people, and another
reward model may still score it. The row keeps the first reason; quarantining again is a no-op.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.errors import InvalidInput
from storage.queries import resolve_now
from storage.raters import check_model_source
from storage.samples import load_sample
from storage.schema import ScoreQuarantine
from storage.validation import check_text

MAX_REASON_CHARS = 500


def quarantine_sample(s: Session, sample_id: int, source: str, reason: str, *, now: datetime | None = None) -> bool:
    """Quarantine ``sample_id`` for the reward model ``source``; True if it was not quarantined for it yet.

    ``reason`` is shown to operators: say what happened ("raised ValueError", "no answer within 30 s"), without
    server values (paths, exception messages). Raises ``UnknownSample`` for a bad id and ``InvalidInput`` for an
    empty or oversized reason or a source that is not a reward model's name, writing nothing.
    """
    source = check_model_source(source)
    reason = check_text(reason, "quarantine reason", InvalidInput, max_chars=MAX_REASON_CHARS).strip()
    now = resolve_now(now)
    sample = load_sample(s, sample_id)
    if s.get(ScoreQuarantine, (sample.id, source)) is not None:
        return False
    s.add(ScoreQuarantine(sample_id=sample.id, source=source, reason=reason, created_at=now))
    s.flush()
    return True


def count_quarantined(s: Session, source: str | None = None) -> int:
    """Samples quarantined for ``source``, or for any reward model (a sample counts once) when None."""
    if source is None:
        stmt = select(func.count(func.distinct(ScoreQuarantine.sample_id)))
    else:
        stmt = select(func.count()).where(ScoreQuarantine.source == check_model_source(source))
    return s.scalar(stmt) or 0


def quarantine_reasons(s: Session, source: str) -> dict[int, str]:
    """Sample id -> reason, for the samples quarantined for ``source``."""
    stmt = select(ScoreQuarantine.sample_id, ScoreQuarantine.reason).where(
        ScoreQuarantine.source == check_model_source(source)
    )
    return {sample_id: reason for sample_id, reason in s.execute(stmt).tuples()}

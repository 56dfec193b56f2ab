"""Ratings: record (validated), resubmit, undo, and per-rater progress.

Resubmission rule: one rater has one rating per sample (a unique constraint). Submitting again *updates*
the score and writes the old one to ``rating_history``; submitting the same score again changes nothing.
Changing or undoing a rating is refused with ``RatingLocked`` once its sample is in a training batch
(claimed or trained), because the batch may already have been trained on that score. A *first* rating of a
sample that is already in a batch is stored (a rater's work is never thrown away) but does not change the
batch's frozen training score.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.orm import Session

from storage.conversions import rating_record
from storage.errors import AlreadyRated, InvalidInput, RatingLocked, UnknownSample
from storage.queries import check_seconds, is_open, rated_by, resolve_now, rowcount, skipped_by
from storage.raters import expected_source, load_rater
from storage.records import RaterProgress, RatingRecord, RecentRating
from storage.samples import DEFAULT_LEASE_SECONDS, release_other_leases
from storage.schema import (
    BATCH_TRAINED,
    HUMAN_SOURCE,
    Prompt,
    Rater,
    Rating,
    RatingHistory,
    Sample,
    Skip,
    TrainingBatch,
    utcnow,
)
from storage.validation import DEFAULT_SCORE_RANGE, check_id, check_int, check_score

ALREADY_RATED_MESSAGE = "You have already rated this response (in another tab?); use Undo to change your score."


def record_rating(
    s: Session,
    sample_id: int,
    rater_id: int,
    score: float,
    *,
    source: str = HUMAN_SOURCE,
    score_range: tuple[float, float] = DEFAULT_SCORE_RANGE,
    replace: bool = True,
) -> RatingRecord:
    """Store ``rater_id``'s score for ``sample_id`` (or update it, keeping history); ends their lease on it.

    ``source`` is "human" for people and the reward model's name (e.g. "vader") for a model rater named
    ``reward:<name>``. With ``replace=False`` a *different* score for a sample this rater already rated is
    refused with ``AlreadyRated`` (the same rater in two browser tabs showing the same sample must not
    overwrite their first rating); the same score again stays a no-op (a double click). Raises (writing
    nothing) ``InvalidScore`` for a non-number, non-finite or out-of-range score, ``UnknownSample``/
    ``UnknownRater`` for bad ids, ``InvalidInput`` for a source that does not match the rater,
    ``RatingLocked`` for a change to a rating whose sample is in a batch.
    """
    value = check_score(score, score_range)
    rater = load_rater(s, rater_id)
    if source != expected_source(rater):
        raise InvalidInput(
            f"rater {rater.name!r} (role {rater.role}) must rate with source {expected_source(rater)!r}, not {source!r}"
        )
    sample = _load_sample_for_update(s, sample_id)
    now = utcnow()
    rating = s.scalars(select(Rating).where(Rating.sample_id == sample.id, Rating.rater_id == rater.id)).one_or_none()
    if rating is None:
        rating = Rating(
            sample_id=sample.id, rater_id=rater.id, source=source, score=value, created_at=now, updated_at=now
        )
        s.add(rating)
        _bump_counter(s, sample.id, source, +1)
    elif rating.score != value:
        if not replace:
            raise AlreadyRated(ALREADY_RATED_MESSAGE)
        if sample.batch_id is not None:
            raise RatingLocked(f"sample {sample.id} is already in training batch {sample.batch_id}")
        s.add(_history(rating, "update", value, now))
        rating.score = value
        rating.updated_at = now
    if sample.lease_rater_id == rater.id:
        sample.lease_rater_id = None
        sample.lease_expires_at = None
    s.flush()
    return rating_record(rating, rater.name)


def undo_last_rating(
    s: Session,
    rater_id: int,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    now: datetime | None = None,
) -> RatingRecord | None:
    """Delete this rater's most recently submitted (or changed) rating and hand the sample back to them.

    Returns the deleted rating, or None if they have none. Raises ``RatingLocked`` when its sample is
    already in a training batch. The deleted score is kept in ``rating_history``; the sample is leased to
    the rater again (unless someone else holds it), so the next ``next_sample_for_rater`` shows it.
    """
    rater = load_rater(s, rater_id)
    lease = check_seconds(lease_seconds, "lease_seconds")
    now = resolve_now(now)
    for _ in range(10):  # a second tab's undo may take our pick while we wait for its sample's lock
        rating = s.scalars(_last_rating(rater.id).execution_options(populate_existing=True)).first()
        if rating is None:
            return None
        sample = _load_sample_for_update(s, rating.sample_id)
        if sample.batch_id is not None:
            raise RatingLocked(f"sample {sample.id} is already in training batch {sample.batch_id}; cannot undo")
        deleted = s.execute(delete(Rating).where(Rating.id == rating.id).execution_options(synchronize_session=False))
        s.expunge(rating)
        if rowcount(deleted) == 1:
            break
    else:
        return None
    record = rating_record(rating, rater.name)
    s.add(_history(rating, "undo", None, now))
    _bump_counter(s, sample.id, rating.source, -1)
    free = sample.lease_rater_id in (None, rater.id) or (
        sample.lease_expires_at is not None and sample.lease_expires_at <= now
    )
    if free and not sample.stale:
        release_other_leases(s, rater.id, keep=sample.id)  # the sample they were shown next goes back
        sample.lease_rater_id = rater.id
        sample.lease_expires_at = now + timedelta(seconds=lease)
    s.flush()
    return record


def ratings_for_sample(s: Session, sample_id: int) -> list[RatingRecord]:
    stmt = (
        select(Rating, Rater.name)
        .join(Rater, Rater.id == Rating.rater_id)
        .where(Rating.sample_id == check_id(sample_id, "sample_id", UnknownSample))
        .order_by(Rating.id)
    )
    return [rating_record(r, name) for r, name in s.execute(stmt).tuples()]


def recent_ratings(s: Session, limit: int = 20) -> list[RecentRating]:
    """The newest ratings first (by id, i.e. submission order), with the prompt and response rated."""
    limit = check_int(limit, "limit", minimum=1)
    stmt = (
        select(Rating, Rater.name, Sample.policy_version, Prompt.text, Sample.response_text)
        .join(Rater, Rater.id == Rating.rater_id)
        .join(Sample, Sample.id == Rating.sample_id)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .order_by(Rating.id.desc())
        .limit(limit)
    )
    return [
        RecentRating(rating_record(r, name), version, prompt, response)
        for r, name, version, prompt, response in s.execute(stmt).tuples()
    ]


def rater_progress(s: Session, rater_id: int) -> RaterProgress:
    rater = load_rater(s, rater_id)
    rated, last = s.execute(select(func.count(), func.max(Rating.updated_at)).where(Rating.rater_id == rater.id)).one()
    trained = s.scalar(
        select(func.count())
        .select_from(Rating)
        .join(Sample, Sample.id == Rating.sample_id)
        .join(TrainingBatch, TrainingBatch.id == Sample.batch_id)
        .where(Rating.rater_id == rater.id, TrainingBatch.status == BATCH_TRAINED)
    )
    skipped = s.scalar(select(func.count()).select_from(Skip).where(Skip.rater_id == rater.id))
    available = s.scalar(
        select(func.count()).select_from(Sample).where(is_open(), ~rated_by(rater.id), ~skipped_by(rater.id))
    )
    return RaterProgress(
        rater_id=rater.id,
        name=rater.name,
        rated=rated or 0,
        skipped=skipped or 0,
        trained=trained or 0,
        available=available or 0,
        last_rated_at=last,
        can_undo=last_rating_undoable(s, rater.id),
    )


def last_rating_undoable(s: Session, rater_id: int) -> bool:
    """The rater has a last rating and its sample is in no training batch yet (undo_last_rating would work)."""
    last_sample = s.scalars(_last_rating(rater_id).with_only_columns(Rating.sample_id)).first()
    return last_sample is not None and s.scalar(select(Sample.batch_id).where(Sample.id == last_sample)) is None


def _last_rating(rater_id: int) -> Select[Rating]:
    return (
        select(Rating).where(Rating.rater_id == rater_id).order_by(Rating.updated_at.desc(), Rating.id.desc()).limit(1)
    )


def _load_sample_for_update(s: Session, sample_id: int) -> Sample:
    """Row-locks the sample on databases that have row locks (no-op on SQLite, already serialised), so a
    rating and a concurrent claim of the same sample are ordered."""
    stmt = (
        select(Sample)
        .where(Sample.id == check_id(sample_id, "sample_id", UnknownSample))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    sample = s.scalars(stmt).one_or_none()
    if sample is None:
        raise UnknownSample(f"no sample with id {sample_id}")
    return sample


def _bump_counter(s: Session, sample_id: int, source: str, delta: int) -> None:
    column = Sample.human_n if source == HUMAN_SOURCE else Sample.auto_n
    s.execute(
        update(Sample)
        .where(Sample.id == sample_id)
        .values({column: column + delta})
        .execution_options(synchronize_session=False)
    )


def _history(rating: Rating, action: str, new_score: float | None, now: datetime) -> RatingHistory:
    return RatingHistory(
        sample_id=rating.sample_id,
        rater_id=rating.rater_id,
        action=action,
        old_score=rating.score,
        new_score=new_score,
        changed_at=now,
    )

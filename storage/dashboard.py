"""Counts for a dashboard: a handful of aggregate queries over indexes and the small batches table."""

from __future__ import annotations

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from storage.queries import has_usable_score, is_open
from storage.records import Counts, TrainedShare, VersionScore
from storage.schema import (
    BATCH_CLAIMED,
    BATCH_FAILED,
    BATCH_PENDING,
    BATCH_TRAINED,
    HUMAN_SOURCE,
    Prompt,
    Rater,
    Rating,
    Sample,
    TrainingBatch,
)


def counts(s: Session, *, use_auto_scores: bool = True) -> Counts:
    """Where every sample is in its lifecycle, and how many ratings and raters there are."""
    unrated, scored = s.execute(
        select(
            func.coalesce(func.sum(case((has_usable_score(use_auto_scores), 0), else_=1)), 0),
            func.coalesce(func.sum(case((has_usable_score(use_auto_scores), 1), else_=0)), 0),
        ).where(is_open())
    ).one()
    in_batches = dict(
        s.execute(select(TrainingBatch.status, func.sum(TrainingBatch.size)).group_by(TrainingBatch.status))
        .tuples()
        .all()
    )
    # Counted per rater through the (rater_id, updated_at) index: a range count per reward model, no scan of
    # the ratings table.
    model_raters = select(Rater.id).where(Rater.role == "model").scalar_subquery()
    auto = _count(s, select(func.count()).select_from(Rating).where(Rating.rater_id.in_(model_raters)))
    total_ratings = _count(s, select(func.count()).select_from(Rating))
    return Counts(
        prompts=_count(s, select(func.count()).select_from(Prompt)),
        samples=_count(s, select(func.count()).select_from(Sample)),
        unrated=int(unrated),
        scored_not_trained=int(scored),
        in_claimed_batches=int(in_batches.get(BATCH_PENDING, 0) + in_batches.get(BATCH_CLAIMED, 0)),
        trained=int(in_batches.get(BATCH_TRAINED, 0)),
        failed=int(in_batches.get(BATCH_FAILED, 0)),
        stale=_count(s, select(func.count()).where(Sample.batch_id.is_(None), Sample.stale.is_(True))),
        ratings=total_ratings,
        human_ratings=total_ratings - auto,
        auto_ratings=auto,
        raters=_count(s, select(func.count()).select_from(Rater)),
    )


def version_scores(s: Session) -> list[VersionScore]:
    """Mean human score per policy version of the rated sample, oldest version first; versions without a human
    rating are left out. Reads every human rating (one grouped scan), so call it for a dashboard, not per click."""
    stmt = (
        select(Sample.policy_version, func.avg(Rating.score), func.count(Rating.id))
        .join(Sample, Sample.id == Rating.sample_id)
        .where(Rating.source == HUMAN_SOURCE)
        .group_by(Sample.policy_version)
        .order_by(Sample.policy_version)
    )
    return [VersionScore(int(v), float(mean), int(n)) for v, mean, n in s.execute(stmt).tuples()]


def trained_share(s: Session) -> TrainedShare:
    """Human ratings whose sample is in a trained batch, and all human ratings (one statement: a consistent pair)."""
    trained, total = s.execute(
        select(func.coalesce(func.sum(case((TrainingBatch.status == BATCH_TRAINED, 1), else_=0)), 0), func.count())
        .select_from(Rating)
        .join(Sample, Sample.id == Rating.sample_id)
        .outerjoin(TrainingBatch, TrainingBatch.id == Sample.batch_id)
        .where(Rating.source == HUMAN_SOURCE)
    ).one()
    return TrainedShare(trained=int(trained), total=int(total))


def _count(s: Session, stmt: Select[int]) -> int:
    return int(s.scalar(stmt) or 0)

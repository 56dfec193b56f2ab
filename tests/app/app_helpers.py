"""Helpers for driving a FeedbackService without its threads (tick by tick) and reading what it stored."""

from __future__ import annotations

import torch
from sqlalchemy import select

from app.service import FeedbackService
from app.views import Assignment
from storage.batches import list_batches
from storage.records import BatchRecord
from storage.schema import Sample


def generate(service: FeedbackService, at_least: int) -> None:
    """Run generator ticks until at least `at_least` open samples exist."""
    for _ in range(20):
        if len(open_samples(service)) >= at_least:
            return
        service.generator.tick()
    raise AssertionError(f"the generator did not produce {at_least} samples")


def open_samples(service: FeedbackService, unleased: bool = False) -> dict[int, int]:
    """Open (rateable, untrained, not stale) sample id -> policy version; optionally only those nobody holds."""
    stmt = select(Sample.id, Sample.policy_version).where(Sample.batch_id.is_(None), ~Sample.stale)
    if unleased:
        stmt = stmt.where(Sample.lease_rater_id.is_(None))
    with service.db.read_session_factory.begin() as s:
        return {int(i): int(v) for i, v in s.execute(stmt).tuples()}


def stale_samples(service: FeedbackService) -> set[int]:
    with service.db.read_session_factory.begin() as s:
        return set(s.scalars(select(Sample.id).where(Sample.stale)))


def batch_of(service: FeedbackService, sample_id: int) -> int | None:
    with service.db.read_session_factory.begin() as s:
        return s.scalar(select(Sample.batch_id).where(Sample.id == sample_id))


def batches(service: FeedbackService) -> list[BatchRecord]:
    with service.db.read_session_factory.begin() as s:
        return list_batches(s)


def rate_next(service: FeedbackService, rater_id: int, n: int, score: float = 1.0) -> list[Assignment]:
    """Rate the next `n` samples the rater is offered."""
    rated = []
    for _ in range(n):
        assignment = service.next_for(rater_id).assignment
        assert assignment is not None, "no sample to rate"
        service.rate(rater_id, assignment.sample_id, score)
        rated.append(assignment)
    return rated


def weights(service: FeedbackService) -> dict[str, torch.Tensor]:
    """A copy of the trainer's policy weights (value head included)."""
    return {k: v.detach().clone() for k, v in service.trainer.model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

"""Training history for plots, and checkpoints."""

from __future__ import annotations

import os

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.conversions import checkpoint_record, step_record
from storage.errors import InvalidInput
from storage.records import CheckpointRecord, StepRecord
from storage.schema import Checkpoint, TrainingBatch, TrainingStep, utcnow
from storage.validation import check_int, check_text


def training_history(s: Session, *, since_step_id: int = 0, last: int | None = None) -> list[StepRecord]:
    """Finished steps, oldest first, with each batch's size and mean training score (the reward curve).

    ``since_step_id`` returns only steps after that id, so a plot can poll for what is new; ``last`` keeps
    only the most recent steps (a long run has tens of thousands; each costs ~40 us to read).
    """
    if last is not None:
        check_int(last, "last", minimum=1)
    stmt = (
        select(TrainingStep, TrainingBatch.size, TrainingBatch.score_mean)
        .join(TrainingBatch, TrainingBatch.id == TrainingStep.batch_id)
        .where(TrainingStep.id > since_step_id)
        .order_by(TrainingStep.id.desc())
        .limit(last)
    )
    rows = s.execute(stmt).tuples().all()
    return [step_record(step, size, mean) for step, size, mean in reversed(rows)]


def record_checkpoint(s: Session, version: int, folder: str | os.PathLike[str]) -> CheckpointRecord:
    """Record that policy ``version`` was saved in ``folder``; saving a version again updates its folder."""
    version = check_int(version, "checkpoint version")
    folder = check_text(os.fspath(folder), "checkpoint folder", InvalidInput, max_chars=1000)
    row = s.scalars(select(Checkpoint).where(Checkpoint.version == version)).one_or_none()
    if row is None:
        row = Checkpoint(version=version, folder=folder, created_at=utcnow())
        s.add(row)
    else:
        row.folder, row.created_at = folder, utcnow()
    s.flush()
    return checkpoint_record(row)


def latest_checkpoint(s: Session) -> CheckpointRecord | None:
    row = s.scalars(select(Checkpoint).order_by(Checkpoint.version.desc()).limit(1)).first()
    return None if row is None else checkpoint_record(row)


def list_checkpoints(s: Session) -> list[CheckpointRecord]:
    return [checkpoint_record(c) for c in s.scalars(select(Checkpoint).order_by(Checkpoint.version))]

"""Training history for plots, checkpoints, and the steps a crash lost.

Crash recovery (docs/app.md): a step's batch is marked trained when the step is recorded, but its weights reach
the disk only with the next checkpoint. On restart, ``retire_steps_after(s, loaded_version)`` moves every step
newer than the checkpoint that was loaded into ``lost_steps`` and puts its batch back to pending, so the samples
are trained again; the lost version numbers stay retired (``newest_version`` counts them) and are never reused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from storage.conversions import checkpoint_record, lost_step_record, step_record
from storage.errors import InvalidInput
from storage.queries import resolve_now
from storage.records import CheckpointRecord, LostStepRecord, StepRecord
from storage.schema import BATCH_PENDING, BATCH_TRAINED, Checkpoint, LostStep, TrainingBatch, TrainingStep, utcnow
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


def forget_checkpoints(s: Session, versions: Iterable[int]) -> int:
    """Delete the records of these checkpoint versions (their folders were, or are about to be, deleted)."""
    checked = sorted({check_int(v, "checkpoint version") for v in versions})
    if not checked:
        return 0
    rows = s.scalars(select(Checkpoint).where(Checkpoint.version.in_(checked))).all()
    for row in rows:
        s.delete(row)
    s.flush()
    return len(rows)


def newest_version(s: Session) -> int:
    """The highest policy version any step ever produced, lost ones included (0 before the first step): the
    next step must produce a higher one."""
    trained = s.scalar(select(func.max(TrainingStep.policy_version))) or 0
    lost = s.scalar(select(func.max(LostStep.policy_version))) or 0
    return max(int(trained), int(lost))


def retire_steps_after(s: Session, version: int, *, now: datetime | None = None) -> list[LostStepRecord]:
    """Steps that produced versions above ``version`` (the checkpoint loaded on restart) lost their weights in a
    crash: move each into ``lost_steps`` and put its batch back to pending (same samples, same frozen scores),
    to be trained again before any new batch. Returns the lost steps, oldest first."""
    version = check_int(version, "version")
    now = resolve_now(now)
    steps = s.scalars(
        select(TrainingStep).where(TrainingStep.policy_version > version).order_by(TrainingStep.policy_version)
    ).all()
    lost: list[LostStep] = []
    for step in steps:
        row = LostStep(
            batch_id=step.batch_id,
            policy_version=step.policy_version,
            stats=dict(step.stats),
            created_at=step.created_at,
            lost_at=now,
        )
        s.add(row)
        lost.append(row)
        s.execute(
            update(TrainingBatch)
            .where(TrainingBatch.id == step.batch_id, TrainingBatch.status == BATCH_TRAINED)
            .values(
                status=BATCH_PENDING,
                finished_at=None,
                claim_token=None,
                error=f"its step (version {step.policy_version}) was lost in a crash; trained again",
            )
            .execution_options(synchronize_session=False)
        )
    if steps:
        s.execute(delete(TrainingStep).where(TrainingStep.id.in_([x.id for x in steps])))
    s.flush()
    return [lost_step_record(x) for x in lost]


def list_lost_steps(s: Session) -> list[LostStepRecord]:
    return [lost_step_record(x) for x in s.scalars(select(LostStep).order_by(LostStep.id))]

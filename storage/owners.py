"""Process owners and their heartbeats: who holds a claim, and whether it is still alive (revision 0005).

Several processes share one database (docs/deployment.md): one trainer and any number of rating front-ends.
Each registers an *owner* row when it starts, refreshes its heartbeat every few seconds and marks itself stopped
on a clean exit. A training batch's ``claimed_by`` is its claimer's owner id, so start-up recovery releases only
the claims of the starting process itself or of owners that are dead: stopped, silent for longer than the
expiry, or never registered at all (claims written before revision 0005). A live trainer's claims are never
touched by another process's start-up. If a live owner is wrongly judged dead (its heartbeat stalled past the
expiry) and its batch is released and claimed again, the claim token still refuses its late ``finish_batch``
(batches.py), so a batch is never trained twice.

One trainer per database: the trainer's row holds ``sole_role = 'trainer'``, which is unique, so a second trainer
cannot register while the first lives (a dead one's slot is freed first). Rater leases need none of this: they
expire by time (samples.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.errors import InvalidInput, StorageError
from storage.queries import check_seconds, resolve_now, rowcount
from storage.schema import BATCH_CLAIMED, BATCH_PENDING, ProcessOwner, TrainingBatch
from storage.validation import MAX_NAME_CHARS, check_int, check_text

TRAINER_SLOT = "trainer"
ROLES = ("all", "serve", "train")


class RoleTaken(StorageError):
    """Another live process already holds this database's trainer slot."""


@dataclass(frozen=True)
class OwnerRecord:
    owner: str
    role: str
    trainer: bool
    """Holds the database's trainer slot."""
    machine: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None


def _record(row: ProcessOwner) -> OwnerRecord:
    return OwnerRecord(
        row.owner,
        row.role,
        row.sole_role == TRAINER_SLOT,
        row.machine,
        row.pid,
        row.started_at,
        row.heartbeat_at,
        row.stopped_at,
    )


def _alive(expiry_s: float, now: datetime) -> ColumnElement[bool]:
    cutoff = now - timedelta(seconds=check_seconds(expiry_s, "expiry_s"))
    return (ProcessOwner.stopped_at.is_(None)) & (ProcessOwner.heartbeat_at > cutoff)


def register_owner(
    s: Session,
    owner: str,
    role: str,
    *,
    trainer: bool,
    expiry_s: float,
    machine: str = "",
    pid: int = 0,
    now: datetime | None = None,
) -> OwnerRecord:
    """Register a starting process. With ``trainer``, take the database's trainer slot, freeing it first if its
    holder is dead; ``RoleTaken`` (nothing written) while a live process holds it."""
    owner = check_text(owner, "owner", InvalidInput, max_chars=MAX_NAME_CHARS).strip()
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    now = resolve_now(now)
    if trainer:
        s.execute(
            update(ProcessOwner)
            .where(ProcessOwner.sole_role == TRAINER_SLOT, ~_alive(expiry_s, now))
            .values(sole_role=None)
            .execution_options(synchronize_session=False)
        )
    row = ProcessOwner(
        owner=owner,
        role=role,
        sole_role=TRAINER_SLOT if trainer else None,
        machine=machine[:300],
        pid=check_int(pid, "pid"),
        started_at=now,
        heartbeat_at=now,
        stopped_at=None,
    )
    try:
        with s.begin_nested():  # on PostgreSQL a concurrent insert of the slot waits for the other's commit
            s.add(row)
            s.flush()
    except IntegrityError:
        holder = s.scalars(select(ProcessOwner).where(ProcessOwner.sole_role == TRAINER_SLOT)).first()
        who = f" ({holder.owner}, heartbeat {holder.heartbeat_at:%H:%M:%S} UTC)" if holder is not None else ""
        raise RoleTaken(f"another trainer is alive on this database{who}; one trainer per database") from None
    return _record(row)


def beat(s: Session, owner: str, *, now: datetime | None = None) -> bool:
    """Refresh ``owner``'s heartbeat; False when it is unknown or marked stopped (it was judged dead)."""
    result = s.execute(
        update(ProcessOwner)
        .where(ProcessOwner.owner == owner, ProcessOwner.stopped_at.is_(None))
        .values(heartbeat_at=resolve_now(now))
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


def mark_stopped(s: Session, owner: str, *, now: datetime | None = None) -> None:
    """A clean exit: the owner is dead from now on and gives up the trainer slot."""
    s.execute(
        update(ProcessOwner)
        .where(ProcessOwner.owner == owner)
        .values(stopped_at=resolve_now(now), sole_role=None)
        .execution_options(synchronize_session=False)
    )


def live_owners(s: Session, expiry_s: float, *, now: datetime | None = None) -> list[OwnerRecord]:
    """Processes alive at ``now``, oldest first."""
    stmt = select(ProcessOwner).where(_alive(expiry_s, resolve_now(now))).order_by(ProcessOwner.started_at)
    return [_record(row) for row in s.scalars(stmt)]


def release_orphaned_claims(s: Session, owner: str, expiry_s: float, *, now: datetime | None = None) -> list[int]:
    """Start-up recovery: put back to pending the batches claimed by ``owner`` itself or by a dead owner
    (whatever their attempts: a crash is not the batch's fault). A live owner's claims stay. Returns the ids."""
    now = resolve_now(now)
    live = select(ProcessOwner.owner).where(_alive(expiry_s, now), ProcessOwner.owner != owner)
    stmt = (
        select(TrainingBatch)
        .where(
            TrainingBatch.status == BATCH_CLAIMED,
            or_(TrainingBatch.claimed_by.is_(None), TrainingBatch.claimed_by.not_in(live)),
        )
        .order_by(TrainingBatch.id)
    )
    released: list[int] = []
    for row in s.scalars(stmt).all():
        note = f"claim by {row.claimed_by!r} left by a process that stopped (attempt {row.attempts})"
        result = s.execute(
            update(TrainingBatch)
            .where(
                TrainingBatch.id == row.id,
                TrainingBatch.status == BATCH_CLAIMED,
                TrainingBatch.claim_token == row.claim_token,
            )
            .values(status=BATCH_PENDING, error=note, claim_token=None, finished_at=None)
            .execution_options(synchronize_session=False)
        )
        if rowcount(result) == 1:
            released.append(row.id)
    return released

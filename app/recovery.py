"""Start-up recovery of training after a crash: no scored sample is lost to training, no version number reused.

A step's batch is recorded as trained when the step is, but its weights reach the disk only with a checkpoint
(every `checkpoint_every` steps, in the same transaction as that step). After a kill -9, a power cut, or a
checkpoint that fails its manifest, the weights loaded are those of an older version than storage's newest step.
`recover_training` makes storage agree with them before the trainer claims anything:

- batches left claimed by this process's owner or by a dead one (storage.owners: its heartbeat expired, or it never
  registered) go back to pending, whatever their attempts: a crash is not the batch's fault; another live
  process's claims are never touched;
- steps newer than the loaded checkpoint move to `lost_steps` and their batches back to pending: they are trained
  again before any new batch, and never marked stale (their stored behaviour log-probs correct for their age);
  their version numbers stay retired (`startup.resume_version` counts them);
- records of checkpoints newer than the loaded one (they failed verification) are forgotten, and checkpoint folders
  storage does not record (a crash between the rename and the commit) and temporary leftovers are removed.

It is idempotent, so the trainer thread runs it before its first claim whether or not the composition root already
did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from app.checkpoints import clean_checkpoint_dir
from storage.engine import Database
from storage.history import forget_checkpoints, list_checkpoints, retire_steps_after
from storage.owners import release_orphaned_claims

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovery:
    loaded_version: int
    """The version of the checkpoint the weights came from (0: the initial model)."""
    released_claims: tuple[int, ...]
    """Batches a dead process held, back to pending."""
    lost_versions: tuple[int, ...]
    """Versions whose weights were lost; their batches are trained again."""
    requeued_batches: tuple[int, ...]
    forgotten_checkpoints: tuple[int, ...]
    """Recorded checkpoints newer than the loaded one (they failed verification)."""
    removed_folders: tuple[str, ...]
    """Names of removed folders in the checkpoint folder."""


def recover_training(
    db: Database, checkpoint_dir: Path, loaded_version: int | None, owner: str, expiry_s: float
) -> Recovery:
    """Bring storage and the checkpoint folder in line with the weights loaded (`loaded_version`: the resume
    point's version, None when training starts from the initial model). `owner` is the trainer's owner id; claims
    of owners whose heartbeat is older than `expiry_s` are freed too."""
    loaded = loaded_version or 0
    with db.session_factory.begin() as s:
        claims = release_orphaned_claims(s, owner, expiry_s)
        lost = retire_steps_after(s, loaded)
        newer = [c.version for c in list_checkpoints(s) if c.version > loaded]
        forget_checkpoints(s, newer)
    removed = clean_checkpoint_dir(db, checkpoint_dir)
    result = Recovery(
        loaded_version=loaded,
        released_claims=tuple(claims),
        lost_versions=tuple(x.policy_version for x in lost),
        requeued_batches=tuple(x.batch_id for x in lost),
        forgotten_checkpoints=tuple(newer),
        removed_folders=tuple(p.name for p in removed),
    )
    if lost:
        log.warning(
            "the weights of versions %s were lost (the checkpoint loaded holds version %d); batches %s are trained "
            "again first",
            list(result.lost_versions),
            loaded,
            list(result.requeued_batches),
        )
    if claims:
        log.warning("re-queued training batches %s left claimed by a previous run", claims)
    return result

"""Checkpoints: one folder per policy version, written to a temporary folder and renamed into place.

`<data-dir>/checkpoints/v{N}/` holds the policy with its value head (`save_pretrained`), the tokenizer, the
optimizer state (`optimizer.pt`) and `trainer_state.json` (version, KL coefficient, step count, model name).
A folder without `trainer_state.json` is incomplete and never resumed from; the rename makes that impossible
on one filesystem anyway. Every saved version is also recorded in storage (`record_checkpoint`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from storage.engine import Database
from storage.history import list_checkpoints, record_checkpoint

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


@dataclass(frozen=True)
class TrainerState:
    """What a checkpoint needs besides the weights and the optimizer to continue where it stopped."""

    version: int
    kl_coef: float
    step: int
    model: str
    """The --model the run started from: a checkpoint of another model is never resumed."""


@dataclass(frozen=True)
class ResumePoint:
    folder: Path
    state: TrainerState


def save_checkpoint(root: Path, model: Any, tokenizer: Any, optimizer: Any, state: TrainerState) -> Path:
    """Write `root/v{version}` atomically (temp folder, then rename; an older copy is replaced)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"v{state.version}"
    tmp = Path(tempfile.mkdtemp(prefix=f".v{state.version}-", dir=root))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
        _move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("checkpoint of version %d saved in %s", state.version, final)
    return final


def _move_into_place(tmp: Path, final: Path) -> None:
    if not final.exists():
        tmp.rename(final)
        return
    old = final.with_name(f".{final.name}-old-{uuid.uuid4().hex[:8]}")
    final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def read_state(folder: Path) -> TrainerState | None:
    """The folder's trainer state, or None when the folder is missing or incomplete."""
    try:
        raw = json.loads((folder / STATE_FILE).read_text())
        if not (folder / OPTIMIZER_FILE).is_file():
            return None
        return TrainerState(
            version=int(raw["version"]), kl_coef=float(raw["kl_coef"]), step=int(raw["step"]), model=str(raw["model"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_resume_point(db: Database, model: str) -> ResumePoint | None:
    """The newest complete checkpoint recorded in storage; ValueError if it belongs to another model."""
    with db.read_session_factory.begin() as s:
        recorded = list_checkpoints(s)
    for record in sorted(recorded, key=lambda c: c.version, reverse=True):
        folder = Path(record.folder)
        state = read_state(folder)
        if state is None:
            log.warning("checkpoint of version %d in %s is missing or incomplete; skipped", record.version, folder)
            continue
        if state.model != model:
            raise ValueError(
                f"the database and checkpoints in use were trained from model {state.model!r}, not {model!r}; "
                "pass that --model, or another --data-dir/--db for a new run"
            )
        return ResumePoint(folder, state)
    return None


def load_optimizer_state(optimizer: Any, folder: Path, device: torch.device) -> None:
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location=device, weights_only=True))


def record(db: Database, version: int, folder: Path) -> None:
    with db.session_factory.begin() as s:
        record_checkpoint(s, version, str(folder.resolve()))

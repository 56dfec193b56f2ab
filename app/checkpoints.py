"""Checkpoints: one folder per policy version, durable before storage records it, verified before it is loaded.

`<data-dir>/checkpoints/v{N}/` holds the whole trainer state (ppo_core.trainer_state: the policy with its value
head as `save_pretrained` writes it, `optimizer.safetensors`, `trainer_extra.pt` with the KL coefficient, step count,
scheduler, running score moments and RNG states), the tokenizer, `trainer_state.json` (version, KL coefficient,
step, model name: for people and for the model check) and `manifest.json` (each file's size and sha256).

Writing (docs/app.md, "Crash durability"): everything goes into a temporary folder `.tmp-v{N}-<random>`, every
file is fsynced, the manifest is written and fsynced last, the folder is renamed to `v{N}` and the parent folder
is fsynced, so the rename itself survives a power cut. Only then does the caller record the checkpoint in storage,
in the same transaction as the step that produced it. A crash before that commit leaves an unrecorded folder,
which start-up removes (`clean_checkpoint_dir`), as it removes temporary leftovers.

Loading: the newest recorded checkpoint whose files match its manifest; a missing, truncated or corrupt one is
skipped with a warning and the one before it loads. Retention: after each new checkpoint the newest
`keep_checkpoints` stay; older ones lose their storage record first, then their folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ppo_core import PPOTrainer
from ppo_core.trainer_state import OPTIMIZER_FILE, save_trainer_state
from storage.engine import Database
from storage.history import forget_checkpoints, list_checkpoints, record_checkpoint

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
TEMP_PREFIX = ".tmp-"
_FOLDER = re.compile(r"v\d+")
_LEFTOVER = re.compile(r"\.(tmp-|old-|v\d+-)")  # `.v{N}-xxx` and `.v{N}-old-xxx`: the names of earlier releases
_CHUNK = 1 << 20


@dataclass(frozen=True)
class TrainerState:
    """What `trainer_state.json` says: readable without torch, and enough to refuse another model's checkpoint."""

    version: int
    kl_coef: float
    step: int
    model: str
    """The --model the run started from: a checkpoint of another model is never resumed."""


@dataclass(frozen=True)
class ResumePoint:
    folder: Path
    state: TrainerState


# --------------------------------------------------------------------------------------------------- writing
def save_checkpoint(root: Path, trainer: PPOTrainer, state: TrainerState) -> Path:
    """Write `root/v{version}` durably (see the module docstring) and return it; nothing is recorded here.

    An existing valid folder of the same version is kept as it is (the weights of a version never change)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"v{state.version}"
    if final.exists() and verify_checkpoint(final) is None:
        return final
    tmp = root / f"{TEMP_PREFIX}v{state.version}-{uuid.uuid4().hex[:8]}"
    try:
        save_trainer_state(trainer, tmp)
        trainer.tokenizer.save_pretrained(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
        write_manifest(tmp)
        _move_into_place(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("checkpoint of version %d saved in %s", state.version, final)
    return final


def write_manifest(folder: Path) -> None:
    """fsync every file of `folder`, then write and fsync `manifest.json` (size and sha256 of each) and the folder."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size, digest = _fsync_and_hash(path)
        files[path.relative_to(folder).as_posix()] = {"size": size, "sha256": digest}
    manifest = folder / MANIFEST_FILE
    with open(manifest, "w", encoding="utf-8") as out:
        json.dump({"files": files}, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    for sub in sorted({p.parent for p in folder.rglob("*")}, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(sub)


def _fsync_and_hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb+") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(f.fileno())
    return size, digest.hexdigest()


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (POSIX: fsync the directory itself)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final` (a broken `final` is moved aside first) and fsync the parent folder."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        final.rename(old)
    tmp.rename(final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- reading
def verify_checkpoint(folder: Path) -> str | None:
    """None when every file matches the manifest; else why not (missing, truncated, corrupt). A folder from before
    manifests existed passes with a warning when its state and optimizer files are there."""
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        if (folder / STATE_FILE).is_file() and (folder / OPTIMIZER_FILE).is_file():
            log.warning("checkpoint %s has no manifest (an older release wrote it); its files are not verified", folder)
            return None
        return "missing or incomplete"
    try:
        files: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        for name, expected in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != int(expected["size"]):
                return f"{name} has {path.stat().st_size} bytes, the manifest says {expected['size']}"
            if _hash(path) != expected["sha256"]:
                return f"{name} does not match its sha256"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable manifest ({type(err).__name__})"
    return None


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_state(folder: Path) -> TrainerState | None:
    """The folder's trainer state, or None when the folder is missing, incomplete or fails its manifest."""
    problem = verify_checkpoint(folder)
    if problem is not None:
        log.warning("checkpoint %s is unusable: %s", folder, problem)
        return None
    try:
        raw = json.loads((folder / STATE_FILE).read_text())
        return TrainerState(
            version=int(raw["version"]), kl_coef=float(raw["kl_coef"]), step=int(raw["step"]), model=str(raw["model"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_resume_point(db: Database, model: str) -> ResumePoint | None:
    """The newest recorded checkpoint that passes its manifest; ValueError if it belongs to another model."""
    with db.read_session_factory.begin() as s:
        recorded = list_checkpoints(s)
    for record in sorted(recorded, key=lambda c: c.version, reverse=True):
        folder = Path(record.folder)
        state = read_state(folder)
        if state is None:
            log.warning("checkpoint of version %d in %s skipped; trying the one before", record.version, folder)
            continue
        if state.model != model:
            raise ValueError(
                f"the database and checkpoints in use were trained from model {state.model!r}, not {model!r}; "
                "pass that --model, or another --data-dir/--db for a new run"
            )
        return ResumePoint(folder, state)
    return None


# ------------------------------------------------------------------------------------------------- retention
def record(db: Database, version: int, folder: Path) -> None:
    """Record a checkpoint of a version whose step is already recorded (shutdown, an admin's request)."""
    with db.session_factory.begin() as s:
        record_checkpoint(s, version, str(folder.resolve()))


def prune_checkpoints(db: Database, root: Path, keep: int) -> list[int]:
    """Keep the newest `keep` recorded checkpoints: forget the older records, then delete their folders (only
    inside `root`). A crash in between leaves unrecorded folders, which start-up removes. Returns the versions."""
    with db.session_factory.begin() as s:
        recorded = sorted(list_checkpoints(s), key=lambda c: c.version, reverse=True)
        old = recorded[keep:]
        forget_checkpoints(s, [c.version for c in old])
    for c in old:
        _remove_inside(root, Path(c.folder))
    if old:
        log.info("older checkpoints removed: versions %s", [c.version for c in old])
    return [c.version for c in old]


def clean_checkpoint_dir(db: Database, root: Path) -> list[Path]:
    """Start-up: remove temporary leftovers and `v{N}` folders storage does not record (a crash between the
    rename and the commit). Returns what was removed."""
    if not root.is_dir():
        return []
    with db.read_session_factory.begin() as s:
        recorded = {Path(c.folder).resolve() for c in list_checkpoints(s)}
    removed = []
    for path in sorted(root.iterdir()):
        leftover = _LEFTOVER.match(path.name) is not None
        unrecorded = _FOLDER.fullmatch(path.name) is not None and path.resolve() not in recorded
        if path.is_dir() and (leftover or unrecorded):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.warning("removed checkpoint folders no run can resume from: %s", [p.name for p in removed])
    return removed


def _remove_inside(root: Path, folder: Path) -> None:
    if folder.resolve().parent == root.resolve():
        shutil.rmtree(folder, ignore_errors=True)

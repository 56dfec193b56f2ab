"""Policy versions shared between processes: the trainer writes them to a folder, the front-ends load them.

`rlhf-live train` publishes each new version to `--weights-dir` as `v{N}.safetensors`: written to a temporary
file in the same folder, fsynced, renamed into place and the folder fsynced (as app/checkpoints.py does), and only
then announced in the database (storage.published) with the file's sha256. Each `rlhf-live serve` polls the
database (`WeightsFollower`, every `--poll-seconds`) and loads a newer version into its in-process
`PolicyPublisher`, from which its generator takes it as it does in the all-in-one app (app/policy.py). A file
that does not match its digest is never loaded, nor one of another kind than the front-end's (full weights or a
LoRA adapter of another shape: app.weights_kind). The newest `--keep-checkpoints` versions stay on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from app.checkpoints import fsync_dir
from app.policy import PolicyPublisher
from app.weights_kind import WeightsKind, WeightsKindMismatch, check_kind
from app.worker import ErrorLog, Worker
from storage.engine import Database
from storage.published import PublishedRecord, announce_version, forget_published, newest_published

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"


class CorruptWeights(RuntimeError):
    """A published file does not match the digest announced with it."""


def write_version(folder: Path, version: int, state: Mapping[str, torch.Tensor], kind: WeightsKind) -> tuple[Path, str]:
    """Write `folder/v{version}.safetensors` atomically and durably, its kind in the metadata; returns its path and
    sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"v{version}{SUFFIX}"
    tmp = folder / f".tmp-v{version}-{uuid.uuid4().hex[:8]}{SUFFIX}"
    # safetensors refuses tensors that share memory (tied embeddings): each name gets its own CPU copy
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state.items()}
    try:
        save_file(tensors, str(tmp), metadata={"version": str(version), **kind.metadata()})
        digest = _fsync_and_hash(tmp)
        tmp.rename(final)
        fsync_dir(folder)
    finally:
        tmp.unlink(missing_ok=True)
    return final, digest


def read_version(path: Path, sha256: str, kind: WeightsKind) -> dict[str, torch.Tensor]:
    """The tensors of a published file, after checking its digest (`CorruptWeights` when it does not match) and
    its kind (`WeightsKindMismatch` when it is not `kind`): nothing is loaded from a file that fails either."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CorruptWeights(f"{path.name} does not match the sha256 announced with it")
    metadata = file_metadata(data)
    check_kind(WeightsKind.from_metadata(metadata), kind, int(metadata.get("version", "0")))
    del data  # not deserialised from these bytes: a full model would be in memory twice at once
    return load_file(str(path))  # the same bytes: a published file is renamed into place once, never rewritten


def file_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's header (an 8-byte little-endian length, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    return dict(header.get("__metadata__") or {})


def _fsync_and_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        os.fsync(f.fileno())
    return digest.hexdigest()


class SharedPublisher(PolicyPublisher):
    """The trainer's publisher in `rlhf-live train`: publishing also writes the file and announces it."""

    def __init__(
        self,
        version: int,
        state_dict: Mapping[str, torch.Tensor],
        db: Database,
        folder: Path,
        owner: str,
        keep: int,
        errors: ErrorLog,
        *,
        kind: WeightsKind,
    ) -> None:
        super().__init__(version, state_dict)
        self.db, self.folder, self.owner, self.keep, self.errors = db, folder, owner, keep, errors
        self.kind = kind
        """What the published files hold (app.weights_kind), recorded in each."""

    def publish(self, version: int, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Publish in-process, then share. A failed share (a full disk, the database down) is recorded for the
        dashboard and the log; the step stands, and front-ends catch up with the next version shared."""
        super().publish(version, state_dict)
        try:
            self.share(version, state_dict)
        except Exception as err:
            self.errors.record("publisher", err)

    def share(self, version: int, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Write and announce `version` unless a version at least as new is announced already (a restart)."""
        with self.db.read_session_factory.begin() as s:
            newest = newest_published(s)
        if newest is not None and newest.version >= version:
            return
        path, digest = write_version(self.folder, version, state_dict, self.kind)
        with self.db.session_factory.begin() as s:
            announce_version(s, version, str(path.resolve()), digest, self.owner)
            old = forget_published(s, self.keep)
        for record in old:
            Path(record.path).unlink(missing_ok=True)
        log.info("published version %d to %s", version, path)

    def share_current(self) -> None:
        """At start-up: announce the weights the trainer starts from, so the front-ends follow a restart."""
        entry = self.latest_entry()
        if entry.version > 0:
            self.share(entry.version, entry.state_dict)


def local_path(folder: Path, record: PublishedRecord) -> Path:
    """Where this machine finds an announced file: its name inside our own `--weights-dir` (the share may be
    mounted at another path than on the trainer's machine)."""
    return folder / Path(record.path).name


class WeightsFollower(Worker):
    """In `rlhf-live serve`: loads each newer announced version of its kind into the local publisher (the
    generator's). A version of another kind is refused once, with one line on the dashboard; the front-end keeps
    serving what it has and loads the next version that fits."""

    name = "weights"

    def __init__(
        self,
        db: Database,
        publisher: PolicyPublisher,
        folder: Path,
        errors: ErrorLog,
        poll_seconds: float,
        kind: WeightsKind,
    ) -> None:
        super().__init__(errors, poll_seconds)
        self.db = db
        self.publisher = publisher
        self.folder = folder
        self.kind = kind
        self.refused: int | None = None
        """The newest version refused for its kind (not read again)."""

    def tick(self) -> bool:
        with self.db.read_session_factory.begin() as s:
            newest = newest_published(s)
        if newest is None or newest.version <= self.publisher.version or newest.version == self.refused:
            return False
        try:
            state = read_version(local_path(self.folder, newest), newest.sha256, self.kind)
        except WeightsKindMismatch as err:
            self.refused = newest.version
            self.errors.record(self.name, err)
            return False
        self.publisher.publish(newest.version, state)
        log.info("loaded published version %d", newest.version)
        return True

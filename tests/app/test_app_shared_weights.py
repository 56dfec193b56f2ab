"""Published versions between processes: written atomically with a digest, loaded only when intact and newer;
the heartbeat registers this process's owner and a second trainer is refused. No model: plain tensors."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from app.errors import StartupError
from app.ownership import Heartbeat, this_machine
from app.policy import PolicyPublisher
from app.settings import AppSettings
from app.shared_weights import CorruptWeights, SharedPublisher, WeightsFollower, read_version, write_version
from app.weights_kind import WeightsKind
from app.worker import ErrorLog
from storage.engine import Database, open_database
from storage.owners import live_owners, register_owner
from storage.published import list_published

FULL = WeightsKind(lora=False)


def _state(value: float) -> dict[str, torch.Tensor]:
    shared = torch.full((2, 3), value)
    return {"wte.weight": shared, "lm_head.weight": shared, "v_head.bias": torch.tensor([value])}  # tied, as GPT-2


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{tmp_path / 'feedback.db'}")
    yield database
    database.close()


def test_a_version_is_written_whole_and_a_damaged_file_is_refused(tmp_path: Path) -> None:
    path, digest = write_version(tmp_path / "w", 3, _state(0.5), FULL)
    assert path.name == "v3.safetensors" and [p.name for p in path.parent.iterdir()] == ["v3.safetensors"]
    loaded = read_version(path, digest, FULL)
    assert set(loaded) == {"wte.weight", "lm_head.weight", "v_head.bias"}
    torch.testing.assert_close(loaded["lm_head.weight"], torch.full((2, 3), 0.5))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptWeights):
        read_version(path, digest, FULL)


def test_the_trainer_publishes_and_a_front_end_follows(tmp_path: Path, db: Database) -> None:
    errors = ErrorLog()
    trainer_side = SharedPublisher(0, _state(0.0), db, tmp_path / "w", "train@test", keep=2, errors=errors, kind=FULL)
    trainer_side.share_current()  # version 0 is the model every front-end starts from: nothing to announce
    front = PolicyPublisher(0, _state(0.0))
    follower = WeightsFollower(db, front, tmp_path / "w", ErrorLog(), poll_seconds=0.05, kind=FULL)
    assert not follower.tick()
    for version in (1, 2, 3):
        trainer_side.publish(version, _state(float(version)))
    assert follower.tick() and front.version == 3  # straight to the newest
    torch.testing.assert_close(front.latest()[1]["wte.weight"], torch.full((2, 3), 3.0))
    assert not follower.tick()
    with db.read_session_factory.begin() as s:
        assert [r.version for r in list_published(s)] == [2, 3]  # the older file is gone with its record
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["v2.safetensors", "v3.safetensors"]
    restarted = SharedPublisher(3, _state(9.0), db, tmp_path / "w", "train@again", keep=2, errors=errors, kind=FULL)
    restarted.share_current()  # already announced: never rewritten with other weights
    assert read_version(tmp_path / "w" / "v3.safetensors", _digest(db, 3), FULL)["v_head.bias"].item() == 3.0
    assert errors.all() == []
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    trainer_side.folder = blocked  # cannot be written into: version 4 is live here and recorded, not shared
    trainer_side.publish(4, _state(4.0))
    trainer_side.folder = tmp_path / "w"
    assert trainer_side.version == 4 and [e.worker for e in errors.all()] == ["publisher"]
    assert not follower.tick() and front.version == 3
    trainer_side.publish(5, _state(5.0))
    assert follower.tick() and front.version == 5


def _digest(db: Database, version: int) -> str:
    with db.read_session_factory.begin() as s:
        return next(r.sha256 for r in list_published(s) if r.version == version)


def test_the_heartbeat_registers_beats_and_a_second_trainer_is_refused(tmp_path: Path, db: Database) -> None:
    settings = replace(AppSettings(data_dir=tmp_path), heartbeat_s=0.2, heartbeat_expiry_s=3.0)
    first = Heartbeat(db, settings, ErrorLog(), "train", trainer=True)
    first.start()
    try:
        second = Heartbeat(db, settings, ErrorLog(), "all", trainer=True)
        with pytest.raises(StartupError, match="another trainer is alive"):
            second.register()  # waits out the expiry: the first one keeps beating
        front = Heartbeat(db, settings, ErrorLog(), "serve", trainer=False)
        front.register()
        with db.read_session_factory.begin() as s:
            assert {o.owner for o in live_owners(s, 3.0)} == {first.owner, front.owner}
    finally:
        first.stop()
        first.join(5)
    with db.read_session_factory.begin() as s:
        assert first.owner not in {o.owner for o in live_owners(s, 3.0)}  # a clean stop frees the slot at once
    Heartbeat(db, settings, ErrorLog(), "train", trainer=True).register()


def test_a_role_is_the_first_argument_and_everything_else_is_options() -> None:
    from app.__main__ import split_role

    assert split_role(["serve", "--port", "7861"]) == ("serve", ["--port", "7861"])
    assert split_role(["train"]) == ("train", [])
    assert split_role(["--port", "7861"]) == ("all", ["--port", "7861"])  # today's all-in-one
    assert split_role(["--model", "serve"]) == ("all", ["--model", "serve"])  # only the first word names a role


def test_a_restart_on_the_same_machine_does_not_wait_for_a_killed_owners_expiry(tmp_path: Path, db: Database) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID that no longer runs
    settings = replace(AppSettings(data_dir=tmp_path), heartbeat_s=1.0, heartbeat_expiry_s=600.0)
    with db.session_factory.begin() as s:
        register_owner(s, "train@killed", "train", trainer=True, expiry_s=600.0, machine=this_machine(), pid=gone.pid)
        register_owner(s, "train@elsewhere", "serve", trainer=False, expiry_s=600.0, machine="other", pid=gone.pid)
    started = time.monotonic()
    Heartbeat(db, settings, ErrorLog(), "train", trainer=True).register()  # no 600 s wait
    assert time.monotonic() - started < 5
    with db.read_session_factory.begin() as s:
        alive = {o.owner for o in live_owners(s, 600.0)}
    assert "train@killed" not in alive and "train@elsewhere" in alive  # another machine's PIDs mean nothing here


def test_heartbeat_settings_are_checked_and_the_weights_folder_defaults_to_the_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--heartbeat-expiry-s .* at least twice --heartbeat-s"):
        AppSettings(heartbeat_s=5.0, heartbeat_expiry_s=9.0)
    with pytest.raises(ValueError, match="--heartbeat-s must be a number > 0"):
        AppSettings(heartbeat_s=0.0)
    assert AppSettings(data_dir=tmp_path).published_dir == tmp_path / "weights"
    assert AppSettings(data_dir=tmp_path, weights_dir=Path("/mnt/w")).published_dir == Path("/mnt/w")


def test_a_version_of_another_kind_is_refused_once_and_the_front_end_keeps_its_own(
    tmp_path: Path, db: Database
) -> None:
    lora = WeightsKind(True, 4, 8, ("q_proj", "v_proj"))
    errors = ErrorLog()
    trainer_side = SharedPublisher(0, _state(0.0), db, tmp_path / "w", "train@test", keep=2, errors=errors, kind=lora)
    trainer_side.publish(1, _state(1.0))
    front = PolicyPublisher(0, _state(0.0))
    seen = ErrorLog()
    follower = WeightsFollower(db, front, tmp_path / "w", seen, poll_seconds=0.05, kind=FULL)
    assert not follower.tick() and not follower.tick()
    assert front.version == 0 and torch.equal(front.latest()[1]["wte.weight"], torch.zeros(2, 3))
    assert [e.public for e in seen.all()] == [
        "published version 1 holds a LoRA adapter (rank 4, alpha 8, targets q_proj,v_proj) but this front-end loads "
        "full weights; not loaded (it keeps serving its current version): start it with the trainer's --lora options"
    ]
    other_rank = WeightsFollower(db, front, tmp_path / "w", seen, poll_seconds=0.05, kind=replace(lora, rank=8))
    assert not other_rank.tick() and front.version == 0
    same = WeightsFollower(db, front, tmp_path / "w", seen, poll_seconds=0.05, kind=lora)
    assert same.tick() and front.version == 1 and errors.all() == []


def test_a_file_without_a_recorded_kind_holds_full_weights(tmp_path: Path) -> None:
    """Files published before kinds were recorded held full weights, the only kind then."""
    assert WeightsKind.from_metadata({"version": "3"}) == FULL
    lora = WeightsKind(True, 4, 8, ("q_proj", "v_proj"))
    assert WeightsKind.from_metadata(lora.metadata()) == lora
    with pytest.raises(ValueError, match="unknown kind"):
        WeightsKind.from_metadata({"weights": "int8"})

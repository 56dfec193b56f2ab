"""A `serve` front-end's page with training in another process: the dashboard follows the trainer's heartbeat, and
the controls that belong to the trainer are refused with a message that says where training runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.__main__ import main
from app.access import Caller
from app.errors import UserError
from app.roles import RemoteTrainer
from app.settings import AppSettings
from storage.engine import open_database
from storage.owners import mark_stopped, register_owner
from tests.app.fakes import fake_service

TOKEN = "front-end-admin-token-0123456789"


def test_a_front_end_shows_the_trainer_process_and_refuses_its_controls(
    make_settings: Callable[..., AppSettings],
) -> None:
    service = fake_service(make_settings(admin_token=TOKEN))
    service.trainer = RemoteTrainer(service.db, expiry_s=30.0)
    admin = Caller(admin_token=TOKEN)
    try:
        assert service.dashboard().training == "stopped"  # no trainer process registered
        with service.db.session_factory.begin() as s:
            register_owner(s, "train@gpu", "train", trainer=True, expiry_s=30.0)
        assert service.dashboard().training.startswith("waiting for")
        with pytest.raises(UserError, match="rlhf-live train"):
            service.set_paused(admin, True)
        assert not service.trainer.paused.is_set()
        with pytest.raises(UserError, match="rlhf-live train"):
            service.save_checkpoint(admin)
        service.set_paused(admin, False)  # resuming asks nothing of anyone
        with service.db.session_factory.begin() as s:
            mark_stopped(s, "train@gpu")
        assert service.dashboard().training == "stopped"
    finally:
        service.stop()


def test_a_second_trainer_on_the_same_database_is_refused(
    tiny_model: Path, prompt_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rlhf-live train` while another trainer is alive on the database: exit status 2 and one clear line."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with open_database(url) as db, db.session_factory.begin() as s:  # beats far ahead: alive for the whole test
        later = datetime.now(UTC) + timedelta(hours=1)
        register_owner(s, "train@gpu-box", "train", trainer=True, expiry_s=1.0, now=later)
    options = ["--model", str(tiny_model), "--dataset", str(prompt_file), "--db", url, "--data-dir", str(tmp_path)]
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        status = main(["train", *options, "--heartbeat-s", "0.2", "--heartbeat-expiry-s", "0.5"])
    finally:
        os.umask(umask)
    assert status == 2
    assert "another trainer is alive on this database (train@gpu-box" in capsys.readouterr().err

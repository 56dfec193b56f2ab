"""A `serve` front-end's page with training in another process: the dashboard follows the trainer's heartbeat, and
the controls that belong to the trainer are refused with a message that says where training runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.access import Caller
from app.errors import UserError
from app.roles import RemoteTrainer
from app.settings import AppSettings
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

"""Fault injection on the trainer thread: a fault never burns a batch, a failed record never leaves a half step."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from sqlalchemy.exc import OperationalError

from app.service import FeedbackService
from app.step_faults import backoff_delay, classify
from ppo_core.optimize import NonFiniteError
from ppo_core.scores import RunningMoments
from storage.batches import requeue_failed_batch
from storage.history import list_checkpoints, training_history
from tests.app.app_helpers import batches, generate, rate_next

DISK_FULL = OSError(errno.ENOSPC, "No space left on device", "/srv/secret/checkpoints/.tmp-v1")


def full_state(service: FeedbackService) -> dict[str, Any]:
    """Every tensor and number of the trainer a step changes, copied."""
    trainer = service.trainer.trainer
    opt = trainer.optimizer.state_dict()
    running = trainer.running
    return {
        "model": {k: v.detach().clone() for k, v in service.trainer.model.state_dict().items()},
        "optimizer": {i: {k: v.clone() for k, v in s.items()} for i, s in opt["state"].items()},
        "lr": [g["lr"] for g in opt["param_groups"]],
        "kl": trainer.kl_ctl.value,
        "step": trainer.current_step,
        "scheduler": None if trainer.lr_scheduler is None else trainer.lr_scheduler.state_dict()["last_epoch"],
        "running": None if running is None else (running.mean, running.var, running.count),
    }


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "weights differ"
    assert a["optimizer"].keys() == b["optimizer"].keys()
    for i, state in a["optimizer"].items():
        assert all(torch.equal(v, b["optimizer"][i][k]) for k, v in state.items()), f"optimizer state {i} differs"
    assert [a[k] for k in ("lr", "kl", "step", "scheduler", "running")] == [
        b[k] for k in ("lr", "kl", "step", "scheduler", "running")
    ]


def ready_batch(service: FeedbackService, n: int = 2) -> None:
    alice = service.login("alice")
    generate(service, n)
    rate_next(service, alice.id, n)


def tick_after_backoff(service: FeedbackService) -> bool:
    time.sleep(max(0.0, service.trainer._retry_at - time.monotonic()) + 0.005)
    return service.trainer.tick()


def test_backoff_doubles_up_to_the_cap_and_only_data_faults_are_the_batch_s() -> None:
    assert [backoff_delay(n, 2.0, 10.0) for n in range(5)] == [0.0, 2.0, 4.0, 8.0, 10.0]
    assert classify(ValueError("token id 999 outside the vocabulary"), during_step=True, nonfinite_before=False) == (
        "data"
    )
    assert classify(ValueError("stale claim"), during_step=False, nonfinite_before=False) == "infrastructure"
    assert classify(NonFiniteError("nan"), during_step=True, nonfinite_before=False) == "infrastructure"
    assert classify(NonFiniteError("nan"), during_step=True, nonfinite_before=True) == "data"
    for err in (DISK_FULL, RuntimeError("CUDA out of memory"), OperationalError("x", {}, Exception("locked"))):
        assert classify(err, during_step=True, nonfinite_before=True) == "infrastructure"


def test_five_failures_in_a_row_pause_the_trainer_with_a_reason_and_resume_trains_the_batch(
    make_service: Callable[..., FeedbackService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(retry_backoff_s=0.2, max_backoff_s=0.6, pause_after_failures=5)
    ready_batch(service)
    before = full_state(service)
    trainer = service.trainer

    def disk_full(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise DISK_FULL

    monkeypatch.setattr(trainer.trainer, "step", disk_full)
    assert trainer.tick()
    waits = [trainer._retry_at - time.monotonic()]
    assert not trainer.tick()  # backing off: no claim, no step
    for _ in range(4):
        assert tick_after_backoff(service)
        waits.append(trainer._retry_at - time.monotonic())
    assert 0.1 < waits[0] <= 0.2 and 0.3 < waits[1] <= 0.4 and 0.5 < waits[2] <= 0.6 >= waits[3] > 0.5
    assert trainer.paused.is_set() and trainer.status.consecutive_failures == 5
    reason = trainer.status.paused_reason
    assert reason == "5 steps failed in a row (OSError: No space left on device); see the server log"
    [batch] = batches(service)
    assert (batch.status, batch.attempts) == ("pending", 5)  # over max_attempts (3), never failed
    assert_same_state(before, full_state(service))
    time.sleep(0.6)
    assert not trainer.tick() and batches(service)[0].attempts == 5  # paused: nothing claimed

    monkeypatch.undo()
    trainer.resume()
    assert trainer.tick() and service.publisher.version == 1
    assert (trainer.status.paused_reason, trainer.status.consecutive_failures) == (None, 0)
    assert batches(service)[0].status == "trained"


def test_disk_full_while_checkpointing_undoes_the_step_and_keeps_the_batch(
    make_service: Callable[..., FeedbackService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(checkpoint_every=1, retry_backoff_s=0.01)
    ready_batch(service)
    before = full_state(service)

    def disk_full(folder: Any) -> None:
        raise DISK_FULL

    monkeypatch.setattr("app.checkpoints.write_manifest", disk_full)  # the files are written, the manifest is not
    assert service.trainer.tick()
    assert_same_state(before, full_state(service))
    assert service.publisher.version == 0 and batches(service)[0].status == "pending"
    with service.db.read_session_factory.begin() as s:
        assert training_history(s) == [] and list_checkpoints(s) == []
    assert list(service.settings.checkpoint_dir.iterdir()) == []  # no temporary folder left behind

    monkeypatch.undo()
    assert tick_after_backoff(service) and service.publisher.version == 1
    with service.db.read_session_factory.begin() as s:
        assert [c.version for c in list_checkpoints(s)] == [1]
    assert (service.settings.checkpoint_dir / "v1" / "manifest.json").is_file()


def test_a_failed_record_after_a_good_step_puts_back_the_whole_trainer_state(
    make_service: Callable[..., FeedbackService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(retry_backoff_s=0.01)
    ppo = service.trainer.trainer
    ppo.running = RunningMoments()  # score scaling's moments and a scheduler: state the app may carry
    ppo.lr_scheduler = torch.optim.lr_scheduler.StepLR(ppo.optimizer, step_size=1, gamma=0.5)
    ready_batch(service)
    assert service.trainer.tick() and service.publisher.version == 1  # Adam, moments and scheduler have a past
    alice = service.login("alice")
    generate(service, 2)
    rate_next(service, alice.id, 2)
    before = full_state(service)
    stepped: list[int] = []

    def database_gone(*args: Any, **kwargs: Any) -> None:
        stepped.append(ppo.current_step)
        raise OperationalError("UPDATE training_batches", {}, Exception("disk I/O error"))

    monkeypatch.setattr("app.trainer_worker.finish_batch", database_gone)
    assert service.trainer.tick()
    assert stepped == [before["step"] + 1]  # the step had really happened
    assert_same_state(before, full_state(service))
    assert service.publisher.version == 1 and batches(service)[0].status == "pending"


def test_a_bad_batch_fails_for_good_until_an_admin_requeues_it(
    make_service: Callable[..., FeedbackService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(retry_backoff_s=0.01)
    ready_batch(service)
    nan_then_bad = [NonFiniteError("values contains NaN/inf"), NonFiniteError("values contains NaN/inf")]

    def failing(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise nan_then_bad.pop(0)

    monkeypatch.setattr(service.trainer.trainer, "step", failing)
    assert service.trainer.tick()
    assert batches(service)[0].status == "pending"  # a first NaN may be a fluke: retried
    assert tick_after_backoff(service)
    [batch] = batches(service)
    assert batch.status == "failed" and "NonFiniteError" in (batch.error or "")  # the same NaN again: the data's
    assert not service.trainer.paused.is_set()

    monkeypatch.undo()
    with service.db.session_factory.begin() as s:
        requeue_failed_batch(s, batch.id)
    assert tick_after_backoff(service) and service.publisher.version == 1
    assert batches(service)[0].status == "trained"

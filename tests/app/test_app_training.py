"""The alignment loop at service level with a tiny model: rate -> one PPO step -> new version live; failures."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from app.service import FeedbackService
from tests.app.app_helpers import batches, generate, open_samples, rate_next, same_weights, weights
from tests.app.conftest import PROMPTS, wait_until


def test_a_full_batch_trains_exactly_one_step_and_new_samples_carry_the_new_version(
    make_service: Callable[..., FeedbackService],
) -> None:
    service = make_service()
    service.start()
    alice = service.login("alice")
    assignment = wait_until(lambda: service.next_for(alice.id).assignment, what="a first sample")
    assert assignment.policy_version == 0
    result = service.rate(alice.id, assignment.sample_id, 1.0)
    assert result.notice == "Rating saved" and result.progress.rated == 1
    second = result.assignment or wait_until(lambda: service.next_for(alice.id).assignment, what="a second sample")
    service.rate(alice.id, second.sample_id, 0.5)

    wait_until(lambda: service.dashboard().version == 1, what="version 1")
    wait_until(lambda: 1 in open_samples(service).values(), what="a sample from version 1")
    bob = service.login("bob")  # holds no lease, so the queue gives him the newest version first
    fresh = service.next_for(bob.id).assignment
    assert fresh is not None and fresh.policy_version == 1
    time.sleep(0.3)  # nothing else is scored: no second step may happen
    history = service.history()
    assert [(p.step, p.version) for p in history] == [(1, 1)]
    assert history[0].mean_score == pytest.approx(0.75)
    dashboard = service.dashboard()
    assert dashboard.version == 1 and dashboard.counts["trained"] == 2
    assert dashboard.training == "waiting for 2 more ratings"
    assert [b.status for b in batches(service)] == ["trained"]
    assert service.generator.status.version == 1

    comparison = service.compare("Say something kind.")
    assert (comparison.first_version, comparison.current_version) == (0, 1)
    assert comparison.prompt == "Say something kind."
    assert service.compare("Say something kind.") == comparison  # greedy, cached per version
    assert service.compare().prompt == PROMPTS[0]  # the default: the dataset's first prompt


def test_a_crash_mid_step_leaves_the_batch_reclaimable_and_the_weights_at_the_last_good_version(
    make_service: Callable[..., FeedbackService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(retry_backoff_s=0.5)
    alice = service.login("alice")
    generate(service, 2)
    rate_next(service, alice.id, 2)
    before = weights(service)
    real_step = service.trainer.trainer.step
    changed: list[bool] = []

    def crash_after_updating(*args: Any, **kwargs: Any) -> dict[str, Any]:
        real_step(*args, **kwargs)  # the weights really move ...
        changed.append(not same_weights(before, weights(service)))
        raise RuntimeError("power cut")  # ... and then the step dies

    monkeypatch.setattr(service.trainer.trainer, "step", crash_after_updating)
    assert service.trainer.tick()
    assert changed == [True]
    assert same_weights(before, weights(service))
    assert service.publisher.version == 0 and service.trainer.status.version == 0
    [batch] = batches(service)
    assert (batch.status, batch.attempts) == ("pending", 1) and "power cut" in (batch.error or "")
    dashboard = service.dashboard()
    assert dashboard.training.startswith("error: RuntimeError")  # the message stays in the log and the batch

    monkeypatch.undo()
    assert not service.trainer.tick()  # backing off: the retry waits retry_backoff_s
    time.sleep(max(0.0, service.trainer._retry_at - time.monotonic()) + 0.01)
    assert service.trainer.tick()
    [retried] = batches(service)
    assert (retried.id, retried.status, retried.attempts) == (batch.id, "trained", 2)
    assert service.publisher.version == 1 and not same_weights(before, weights(service))
    assert service.dashboard().training == "waiting for 2 more ratings"


def test_a_nan_mid_step_is_rolled_back_and_the_batch_retried(make_service: Callable[..., FeedbackService]) -> None:
    service = make_service(retry_backoff_s=0.01)
    alice = service.login("alice")
    generate(service, 2)
    rate_next(service, alice.id, 2)
    before = weights(service)
    updates = {"n": 0, "nan_forwards": 0}
    optimizer = service.trainer.trainer.optimizer
    real_step = optimizer.step

    def counted_step(*args: Any, **kwargs: Any) -> Any:
        updates["n"] += 1
        return real_step(*args, **kwargs)

    def nan_after_an_update(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if updates["n"] == 0:  # the rollout and the first update run on the weights before the step
            return output
        updates["nan_forwards"] += 1  # epoch 2, after epoch 1 moved the weights -> NaN
        return output * float("nan")

    optimizer.step = counted_step
    handle = service.trainer.model.v_head.register_forward_hook(nan_after_an_update)
    try:
        assert service.trainer.tick()
    finally:
        handle.remove()
        optimizer.step = real_step
    assert updates["n"] >= 1 and updates["nan_forwards"] >= 1  # the NaN came after a real update
    assert same_weights(before, weights(service))
    assert service.publisher.version == 0
    [batch] = batches(service)
    assert batch.status == "pending" and "NonFiniteError" in (batch.error or "")
    time.sleep(0.02)
    assert service.trainer.tick() and service.publisher.version == 1


def test_the_generator_loads_published_weights_whole(make_service: Callable[..., FeedbackService]) -> None:
    service = make_service()
    alice = service.login("alice")
    generate(service, 2)
    rate_next(service, alice.id, 2)
    assert service.trainer.tick() and service.publisher.version == 1
    service.generator.tick()
    assert service.generator.status.version == 1
    _, published = service.publisher.latest()
    generator_state = service.generator.model.state_dict()
    assert all(torch.equal(generator_state[k], published[k]) for k in published)
    assert same_weights(weights(service), dict(published))


def test_the_dashboard_buffer_drops_as_soon_as_a_rater_takes_a_sample(
    make_service: Callable[..., FeedbackService],
) -> None:
    """The Watch tab's "prefetch buffer" is what raters can get now, not the generator's figure of its last batch."""
    service = make_service()
    generate(service, 3)
    ready = len(open_samples(service, unleased=True))
    assert service.dashboard().buffer_ready == ready
    alice = service.login("alice")
    assert service.next_for(alice.id).assignment is not None  # leased to alice; the generator has not run since
    assert service.dashboard().buffer_ready == ready - 1
    rate_next(service, alice.id, 1)  # rates the leased sample, leases the next one
    assert service.dashboard().buffer_ready == ready - 2

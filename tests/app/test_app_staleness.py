"""Staleness policy: unrated samples older than `max_staleness` versions are never trained (nor shown); a sample a
person rated is trained whatever its age, with the importance correction from its stored behaviour log-probs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from app.service import FeedbackService
from storage.history import training_history
from storage.samples import get_sample
from tests.app.app_helpers import batch_of, batches, generate, open_samples, stale_samples


def test_old_unrated_samples_go_stale_and_rated_ones_train_with_their_behaviour_logprobs(
    make_service: Callable[..., FeedbackService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(max_staleness=1, buffer=6, max_batch_size=6)
    alice = service.login("alice")
    generate(service, 6)
    a, b, c, d = sorted(open_samples(service))[:4]  # four of the six samples of version 0
    calls: list[dict[str, Any]] = []
    real_step = service.trainer.trainer.step

    def spy(queries: Any, responses: Any, scores: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append({"responses": responses, **kwargs})
        return real_step(queries, responses, scores, **kwargs)

    monkeypatch.setattr(service.trainer.trainer, "step", spy)
    for sample_id in (a, b):
        service.rate(alice.id, sample_id, 1.0)
    assert service.trainer.tick() and service.publisher.version == 1

    service.generator.tick()  # new weights: a batch from version 1 at once
    e, f = sorted(i for i, v in open_samples(service).items() if v == 1)
    for sample_id in (c, e):  # one sample one version old (inside the window), one current
        service.rate(alice.id, sample_id, 0.5)
    assert service.trainer.tick() and service.publisher.version == 2
    with service.db.read_session_factory.begin() as s:
        stored_c = get_sample(s, c)
        last_step = training_history(s)[-1]
    assert last_step.stats["app/staleness_max"] == 1.0
    used = {tuple(r.tolist()): lp for r, lp in zip(calls[-1]["responses"], calls[-1]["behaviour_logprobs"])}
    torch.testing.assert_close(used[stored_c.response_ids], torch.tensor(stored_c.behaviour_logprobs))

    unrated_v0 = {i for i, v in open_samples(service).items() if v == 0 and i != d}
    for sample_id in (d, f):  # d is now two versions old, beyond max_staleness=1, but a person rated it
        service.rate(alice.id, sample_id, -1.0)
    assert service.trainer.tick() and service.publisher.version == 3
    assert batch_of(service, d) == batch_of(service, f) is not None
    with service.db.read_session_factory.begin() as s:
        stored_d = get_sample(s, d)
        last_step = training_history(s)[-1]
    assert last_step.stats["app/staleness_max"] == 2.0
    used = {tuple(r.tolist()): lp for r, lp in zip(calls[-1]["responses"], calls[-1]["behaviour_logprobs"])}
    torch.testing.assert_close(used[stored_d.response_ids], torch.tensor(stored_d.behaviour_logprobs))
    # what nobody rated ages out: unrated samples of version 0 are stale, never shown or trained, except the one
    # alice is looking at (her rating may come)
    held = set(open_samples(service)) - set(open_samples(service, unleased=True))
    stale = stale_samples(service)
    assert stale and stale <= unrated_v0 and unrated_v0 - stale <= held
    assert [x.status for x in batches(service)] == ["trained"] * 3
    counts = service.dashboard().counts
    assert counts["human_ratings_trained"] == counts["human_ratings_all"] == 6


def test_the_window_counts_training_steps_not_the_version_numbers_a_crash_skipped() -> None:
    from app.staleness import StalenessWindow

    plain = StalenessWindow(2)
    assert [plain.floor(v) for v in (0, 1, 2, 3, 7)] == [0, 0, 0, 1, 5]
    # checkpoint v10 resumed as v13 (steps 11 and 12 lost): at v13 the weights are v10's
    crash = StalenessWindow(2, checkpoint_version=10, resumed_as=13)
    assert crash.floor(13) == 8, "as fresh as at v10: v8 and newer (and the lost v11, v12) still train"
    assert crash.floor(14) == 9 and crash.floor(15) == 10
    assert crash.floor(16) == 14, "three steps after the restart, the lost versions are 3 steps away: stale"
    assert StalenessWindow(2, checkpoint_version=10, resumed_as=10).floor(13) == 11, "no gap, no change"

"""--lora in the split roles, in-process with a tiny model: `rlhf-live train --lora` publishes only the adapter and
the value head, and resumes from its adapter checkpoint; a `rlhf-live serve --lora` front-end loads each version
into its generator's adapter and then generates with the trainer's policy; a front-end of another kind (full
weights, or an adapter of another shape) refuses a version whole, says so on the dashboard, and keeps serving the
version it has."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from app.errors import StartupError
from app.roles import TrainerProcess, build_front_end
from app.service import FeedbackService
from app.shared_weights import WeightsFollower, file_metadata
from app.startup import open_store
from storage.published import announce_version
from tests.app.app_helpers import generate, rate_next
from tests.app.test_app_lora import LORA, policy_logits


def follower(front: FeedbackService) -> WeightsFollower:
    return next(w for w in front._extra_workers if isinstance(w, WeightsFollower))


def step(front: FeedbackService, trainer: TrainerProcess, rater: str) -> None:
    """Samples from the front-end, rated there, trained by the trainer process: one new published version."""
    version = trainer.publisher.version
    generate(front, 2)
    rate_next(front, front.login(rater).id, 2)
    assert trainer.trainer.tick() and trainer.publisher.version == version + 1


def generator_state(front: FeedbackService) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in front.generator.model.state_dict().items()}


def test_a_lora_trainer_publishes_the_adapter_and_a_lora_front_end_generates_with_it(
    build_role: Callable[..., Any], tiny_model: Path
) -> None:
    front: FeedbackService = build_role("serve", **LORA)
    trainer: TrainerProcess = build_role("train", **LORA)
    assert front.generator.reference.policy is front.generator.model  # version 0 is the adapter switched off
    before = policy_logits(front.generator.model)
    step(front, trainer, "alice")

    published = trainer.publisher.folder / "v1.safetensors"
    full_size = (tiny_model / "model.safetensors").stat().st_size
    assert published.stat().st_size < full_size / 10  # the adapter and the value head, not the model
    metadata = file_metadata(published.read_bytes())
    kind = (metadata["weights"], metadata["lora_rank"], metadata["lora_target_modules"])
    assert kind == ("lora", "4", "q_proj,v_proj")

    assert follower(front).tick() and front.publisher.version == 1
    assert front.generator.load_newest() and front.generator.status.version == 1
    after = policy_logits(front.generator.model)
    assert not torch.allclose(after, before, atol=1e-4)  # the step moved the adapter...
    torch.testing.assert_close(after, policy_logits(trainer.trainer.model), rtol=0, atol=0)  # ...as the trainer's
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        expected = base(input_ids=torch.tensor([[5, 17, 42, 7, 99, 3, 12, 8]])).logits
    torch.testing.assert_close(policy_logits(front.generator.reference), expected)  # still the base model


def test_train_lora_resumes_from_its_adapter_checkpoint_and_front_ends_follow_on(
    build_role: Callable[..., Any],
) -> None:
    front: FeedbackService = build_role("serve", **LORA)
    first: TrainerProcess = build_role("train", **LORA)
    step(front, first, "alice")
    folder = first.trainer.checkpoint()
    assert not (folder / "model.safetensors").exists()  # the adapter checkpoint of the all-in-one app
    logits = policy_logits(first.trainer.model)
    first.stop()

    second: TrainerProcess = build_role("train", **LORA)
    assert second.publisher.version == 1 and second.trainer.status.checkpoint_version == 1
    torch.testing.assert_close(policy_logits(second.trainer.model), logits, rtol=0, atol=0)
    second.publisher.share_current()  # version 1 is announced already: not written again
    step(front, second, "bob")
    assert follower(front).tick() and front.publisher.version == 2 and front.generator.load_newest()
    torch.testing.assert_close(policy_logits(front.generator.model), policy_logits(second.trainer.model))


@pytest.mark.parametrize(
    ("trainer_kind", "front_kind", "said"),
    [
        (LORA, {}, "holds a LoRA adapter (rank 4, alpha 8, targets q_proj,v_proj) but this front-end loads full"),
        ({}, LORA, "holds full weights but this front-end loads a LoRA adapter (rank 4"),
        (
            LORA,
            {**LORA, "lora_rank": 8},
            "holds a LoRA adapter (rank 4, alpha 8, targets q_proj,v_proj) but this "
            "front-end loads a LoRA adapter (rank 8",
        ),
    ],
    ids=["lora-to-full", "full-to-lora", "other-rank"],
)
def test_a_front_end_refuses_weights_of_another_kind_and_keeps_its_version(
    build_role: Callable[..., Any], trainer_kind: dict[str, Any], front_kind: dict[str, Any], said: str
) -> None:
    front: FeedbackService = build_role("serve", **trainer_kind)  # makes the samples the trainer trains on
    trainer: TrainerProcess = build_role("train", **trainer_kind)
    step(front, trainer, "alice")
    other: FeedbackService = build_role("serve", **front_kind)  # started after version 1: refused at start-up
    kept = generator_state(other)
    assert other.publisher.version == 0
    refusals = [e for e in other.errors.all() if e.worker == "weights"]
    assert len(refusals) == 1 and f"published version 1 {said}" in refusals[0].public
    shown = other.dashboard().last_error
    assert shown is not None and "start it with the trainer's --lora options" in shown
    assert not follower(other).tick()  # once per version: no new line every poll
    step(front, trainer, "bob")
    assert not follower(other).tick() and other.publisher.version == 0
    assert [e.public.split(" holds")[0] for e in other.errors.all()] == ["published version 1", "published version 2"]
    other.generator.load_newest()
    now = generator_state(other)
    assert other.generator.status.version == 0 and all(torch.equal(now[k], kept[k]) for k in kept)  # nothing loaded


def test_a_front_end_that_cannot_read_the_newest_version_does_not_start(make_settings: Callable[..., Any]) -> None:
    """A wrong --weights-dir (the announced file is not there) stops `serve` with one line instead of a page that
    silently serves version 0."""
    settings = make_settings()
    db = open_store(settings)
    try:
        with db.session_factory.begin() as s:
            announce_version(s, 1, str(settings.published_dir / "v1.safetensors"), "0" * 64, "train@elsewhere")
    finally:
        db.close()
    with pytest.raises(StartupError, match=r"cannot load the newest published version: .*No such file"):
        build_front_end(settings)

"""--lora at service level with a tiny model: one base model in memory, adapter-only publishing and checkpoints,
restart from a LoRA checkpoint, and refusal of a checkpoint of the other kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from app.cli import parse_settings
from app.errors import StartupError
from app.lora import ADAPTER_WEIGHTS
from app.service import FeedbackService
from app.settings import AppSettings
from ppo_core.generation import generate_batch
from tests.app.app_helpers import generate, rate_next
from tests.app.conftest import PROMPTS

LORA: dict[str, Any] = {
    "lora": True,
    "lora_rank": 4,
    "lora_alpha": 8,
    "lora_target_modules": ("q_proj", "v_proj"),
    "lora_learning_rate": 5e-2,  # a tiny random model: one step must move the adapter visibly
}
IDS = torch.tensor([[5, 17, 42, 7, 99, 3, 12, 8]])


def trained_once(service: FeedbackService) -> None:
    generate(service, 2)
    rate_next(service, service.login("alice").id, 2)
    assert service.trainer.tick() and service.publisher.version == 1


def policy_logits(model: torch.nn.Module) -> torch.Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=IDS)[0]
    model.train(was_training)
    return logits


def trainable(service: FeedbackService) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in service.trainer.model.named_parameters() if p.requires_grad}


def test_lora_options_parse_and_bad_values_are_refused() -> None:
    s = parse_settings(["--lora", "--lora-rank", "4", "--lora-target-modules", "q_proj,v_proj"], env={})
    assert (s.lora, s.lora_rank, s.lora_target_modules) == (True, 4, ("q_proj", "v_proj"))
    assert s.effective_learning_rate == s.lora_learning_rate != s.learning_rate
    assert AppSettings(lora_rank=8).ignored_lora_options == ["--lora-rank"]
    for bad, message in (
        ({"lora_rank": 0}, "--lora-rank"),
        ({"lora_alpha": 0}, "--lora-alpha"),
        ({"lora_dropout": 1.0}, "--lora-dropout"),
        ({"lora_learning_rate": 0.0}, "--lora-learning-rate"),
        ({"lora_target_modules": ()}, "--lora-target-modules"),
        ({"lora_target_modules": ("all-linear", "q_proj")}, "all-linear"),
    ):
        with pytest.raises(ValueError, match=message):
            AppSettings(lora=True, **bad)


def test_a_lora_run_keeps_one_base_model_and_the_generator_gets_only_the_adapter(
    make_service: Callable[..., FeedbackService], tiny_model: Path
) -> None:
    service = make_service(**LORA)
    policy, generator = service.trainer.model, service.generator.model
    assert policy.is_peft_model and service.trainer.trainer.ref_model is None
    generator_params = dict(generator.named_parameters())
    frozen = [(n, p) for n, p in policy.named_parameters() if not p.requires_grad]
    assert frozen and all(generator_params[n].data_ptr() == p.data_ptr() for n, p in frozen)  # one base in memory
    trained_once(service)
    _, published = service.publisher.latest()
    assert published and all("lora_" in k or k.startswith("v_head.") for k in published)
    assert not torch.allclose(policy_logits(generator), policy_logits(policy))  # not loaded yet
    service.generator.tick()
    assert service.generator.status.version == 1
    torch.testing.assert_close(policy_logits(generator), policy_logits(policy), rtol=0, atol=0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        expected = base(input_ids=IDS).logits
    torch.testing.assert_close(policy_logits(service.generator.reference), expected)  # version 0 is the base
    assert not torch.allclose(policy_logits(policy), expected, atol=1e-4)  # the adapter moved the policy
    query = torch.tensor(service.generator.encode(PROMPTS[5]))
    greedy = {"do_sample": False, "max_new_tokens": 6}
    pad, eos = service.generator.tokenizer.pad_token_id, service.generator.tokenizer.eos_token_id
    first = generate_batch(service.generator.reference, [query], pad, eos, greedy, return_prompt=False).sequences
    assert torch.equal(first[0], generate_batch(base, [query], pad, eos, greedy, return_prompt=False).sequences[0])


def test_a_lora_checkpoint_holds_the_adapter_only_and_a_restart_restores_the_same_outputs(
    make_service: Callable[..., FeedbackService], tiny_model: Path
) -> None:
    first = make_service(**LORA)
    trained_once(first)
    folder = first.trainer.checkpoint()
    assert (folder / ADAPTER_WEIGHTS).is_file() and not (folder / "model.safetensors").exists()
    weight_files = sum(f.stat().st_size for f in folder.glob("*.safetensors"))  # adapter, value head, Adam
    assert weight_files < (tiny_model / "model.safetensors").stat().st_size / 4
    logits, weights = policy_logits(first.trainer.model), trainable(first)
    moments = {k: v["exp_avg"].clone() for k, v in enumerate(first.trainer.trainer.optimizer.state.values())}
    kl_coef = first.trainer.trainer.kl_ctl.value

    second = make_service(**LORA)
    assert second.publisher.version == 1 and second.trainer.status.checkpoint_version == 1
    restored = trainable(second)
    assert restored.keys() == weights.keys() and all(torch.equal(restored[k], weights[k]) for k in weights)
    torch.testing.assert_close(policy_logits(second.trainer.model), logits, rtol=0, atol=0)
    torch.testing.assert_close(policy_logits(second.generator.model), logits, rtol=0, atol=0)
    state = list(second.trainer.trainer.optimizer.state.values())
    assert len(state) == len(moments) and all(torch.equal(state[k]["exp_avg"], v) for k, v in moments.items())
    assert second.trainer.trainer.kl_ctl.value == kl_coef
    trained_again = make_service(**LORA)  # and it trains on from there
    generate(trained_again, 2)
    rate_next(trained_again, trained_again.login("bob").id, 2)
    assert trained_again.trainer.tick() and trained_again.publisher.version == 2


def test_a_checkpoint_of_the_other_kind_or_another_adapter_shape_is_refused(
    make_service: Callable[..., FeedbackService], tmp_path: Path
) -> None:
    lora = make_service(**LORA)
    trained_once(lora)
    lora.trainer.checkpoint()
    with pytest.raises(StartupError, match="holds a LoRA adapter, not full weights: add --lora"):
        make_service()
    with pytest.raises(StartupError, match="r 4, this run asks for 8: pass --lora-rank"):
        make_service(**{**LORA, "lora_rank": 8})
    with pytest.raises(StartupError, match="target_modules"):
        make_service(**{**LORA, "lora_target_modules": ("q_proj",)})

    full = make_service(data_dir=tmp_path / "full")
    trained_once(full)
    full.trainer.checkpoint()
    with pytest.raises(StartupError, match="holds full weights, not a LoRA adapter: drop --lora"):
        make_service(data_dir=tmp_path / "full", **LORA)

"""LoRA policies (`--lora`): only an adapter and the value head train; the frozen base is loaded once.

- The trainer's policy is the base model with a PEFT LoRA adapter; its KL reference is the same model with the
  adapter disabled (ppo_core), so there is no second copy of the model.
- The generator's copy shares the frozen base tensors with the trainer's policy and has its own adapter, which a
  publish overwrites (`app.policy.publish_state` / `load_published`: a few MB instead of the whole model). Its
  version 0 (`compare()`) is that copy with the adapter disabled (`AdapterDisabled`).
- A checkpoint holds the adapter as PEFT saves it (`adapter_config.json`, `adapter_model.safetensors`), the value
  head and the optimizer state of those tensors only; a full-weights checkpoint is never loaded into a LoRA run,
  nor a LoRA one into a full run, nor an adapter of another shape (`check_checkpoint_kind`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, set_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

from app.settings import AppSettings
from ppo_core import AutoModelForCausalLMWithValueHead
from ppo_core.value_head import VALUE_HEAD_FILE

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def lora_config(settings: AppSettings) -> LoraConfig:
    """The adapter the settings ask for."""
    names = settings.lora_target_modules
    targets: str | list[str] = "all-linear" if names == ("all-linear",) else list(names)
    return LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        target_modules=targets,
        lora_dropout=settings.lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )


def is_lora_checkpoint(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def check_checkpoint_kind(folder: Path, settings: AppSettings) -> None:
    """ValueError (one line, for the command line) when the checkpoint to resume does not fit this run."""
    again = "or use another --data-dir/--db for a new run"
    if settings.lora and not is_lora_checkpoint(folder):
        raise ValueError(
            f"the checkpoint to resume ({folder.name}) holds full weights, not a LoRA adapter: "
            f"drop --lora to continue that run, {again}"
        )
    if not settings.lora and is_lora_checkpoint(folder):
        raise ValueError(
            f"the checkpoint to resume ({folder.name}) holds a LoRA adapter, not full weights: "
            f"add --lora with the adapter's options to continue that run, {again}"
        )
    if settings.lora:
        saved = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        wanted = lora_config(settings)
        for name, option, have, want in (
            ("r", "--lora-rank", saved.get("r"), wanted.r),
            ("lora_alpha", "--lora-alpha", saved.get("lora_alpha"), wanted.lora_alpha),
            ("target_modules", "--lora-target-modules", _targets(saved.get("target_modules")), _targets(wanted)),
        ):
            if have != want:
                raise ValueError(
                    f"the checkpoint to resume ({folder.name}) has a LoRA adapter with {name} {have!r}, this run "
                    f"asks for {want!r}: pass {option} to match, {again}"
                )


def _targets(value: Any) -> Any:
    if isinstance(value, LoraConfig):
        value = value.target_modules
    return value if value is None or isinstance(value, str) else sorted(value)


def load_adapter(policy: AutoModelForCausalLMWithValueHead, folder: Path) -> None:
    """Put a checkpoint's adapter and value head into a LoRA policy built with the same adapter config."""
    state = load_file(str(folder / ADAPTER_WEIGHTS))
    result: Any = set_peft_model_state_dict(policy.pretrained_model, state)  # torch's (missing, unexpected) keys
    missing = [k for k in result.missing_keys if "lora_" in k]
    unexpected = list(result.unexpected_keys)
    if unexpected or missing:
        raise ValueError(
            f"the adapter in {folder.name} does not fit the model: {len(unexpected)} unexpected and "
            f"{len(missing)} missing adapter tensors"
        )
    v_state = load_file(str(folder / VALUE_HEAD_FILE))
    policy.v_head.load_state_dict({k.removeprefix("v_head."): v for k, v in v_state.items()})


def generator_copy(policy: AutoModelForCausalLMWithValueHead) -> AutoModelForCausalLMWithValueHead:
    """A copy of the policy that shares every frozen tensor (the base model) and owns its trainable ones (the
    adapter, the value head). The trainer never writes the frozen tensors, so both threads may read them."""
    shared: dict[int, Any] = {id(p): p for p in policy.parameters() if not p.requires_grad}
    twin = copy.deepcopy(policy, memo=shared)
    twin.requires_grad_(False)
    return twin.eval()


class AdapterDisabled(nn.Module):
    """A LoRA policy seen without its adapter: the base model, version 0 (for `compare()`), without a copy.

    Only the thread that owns the policy may use it (disabling the adapter is a switch on the policy's layers)."""

    def __init__(self, policy: AutoModelForCausalLMWithValueHead) -> None:
        super().__init__()
        if not policy.is_peft_model:
            raise ValueError("AdapterDisabled needs a LoRA (PEFT) policy")
        self.policy = policy

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.policy.pretrained_model.disable_adapter():
            return self.policy.generate(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self.policy.pretrained_model.disable_adapter():
            return self.policy(*args, **kwargs)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the tensors that training changes (a LoRA policy: adapter and value head)."""
    with torch.no_grad():
        return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

"""The models of a `rlhf-live serve` front-end: no trainer here, only the generator's model and version 0.

- Full weights: the initial model is the reference (version 0, for `compare()`) and the generator gets a copy that
  published versions overwrite whole.
- `--lora`: the base model is loaded once, with a generator adapter of the trainer's shape (app.lora.lora_config);
  the reference is that model with the adapter disabled (no second copy), and a published version (adapter and
  value head, app.policy.publish_state) is copied into the adapter in place (app.policy.load_published).

Either way the front-end starts at version 0 and its `WeightsFollower` loads the newest published version
(app.shared_weights) before the page opens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from app.lora import AdapterDisabled
from app.models import Runtime, load_initial
from app.policy import publish_state
from app.settings import AppSettings
from ppo_core import AutoModelForCausalLMWithValueHead, create_reference_model, set_seed


@dataclass
class FrontEndModels:
    tokenizer: Any
    reference: torch.nn.Module
    """Version 0: the initial model, or (--lora) the generator's model with its adapter disabled."""
    policy: AutoModelForCausalLMWithValueHead
    """The generator's model (frozen; published versions are loaded into it)."""
    state: dict[str, torch.Tensor]
    """Version 0 as `app.policy.publish_state` makes it: what the front-end's publisher starts with."""


def load_front_end_models(settings: AppSettings, runtime: Runtime) -> FrontEndModels:
    """The tokenizer, version 0 and the generator's model (ModelLoadError: one line, for the command line)."""
    set_seed(settings.seed)  # reproducible start-up; every published version overwrites the adapter whole
    tokenizer, initial = load_initial(settings)
    state = publish_state(initial)  # before freezing: of a LoRA model, the tensors that train (by requires_grad)
    if settings.lora:
        policy = initial.to(runtime.device).eval()
        reference: torch.nn.Module = AdapterDisabled(policy)
    else:
        reference = create_reference_model(initial)
        policy = copy.deepcopy(initial).to(runtime.device).eval()
    policy.requires_grad_(False)
    return FrontEndModels(tokenizer, reference, policy, state)

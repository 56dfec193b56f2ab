"""Tiny offline models and helpers shared by the ppo_core tests (imported by the test modules)."""

from __future__ import annotations

import warnings

import torch

from ppo_core import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from ppo_core.tiny import tiny_causal_lm


def make_model(arch: str = "gpt2", seed: int = 0, **kwargs) -> AutoModelForCausalLMWithValueHead:
    torch.manual_seed(seed)
    return AutoModelForCausalLMWithValueHead.from_pretrained(tiny_causal_lm(arch, seed=seed), **kwargs)


def make_trainer(tokenizer, arch: str = "gpt2", model=None, **config) -> PPOTrainer:
    defaults = {"batch_size": 4, "mini_batch_size": 2, "learning_rate": 1e-3, "seed": 0}
    defaults.update(config)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No dataset is provided")
        return PPOTrainer(PPOConfig(**defaults), model if model is not None else make_model(arch), tokenizer=tokenizer)


def make_batch(n: int = 4, seed: int = 0, vocab: int = 300) -> tuple[list, list, list]:
    """n queries and responses of different lengths (no EOS id 0 inside) and scores."""
    g = torch.Generator().manual_seed(seed)
    queries = [torch.randint(1, vocab, (3 + (i * 2) % 5,), generator=g) for i in range(n)]
    responses = [torch.randint(1, vocab, (2 + (i * 3) % 6,), generator=g) for i in range(n)]
    scores = [torch.tensor(float(i) - n / 2) for i in range(n)]
    return queries, responses, scores


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_same_params(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} changed")

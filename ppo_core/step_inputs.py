"""Validation of `PPOTrainer.step` inputs: a clear `ValueError` before anything is computed or changed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class StepInputs:
    """Checked inputs, on the trainer's device."""

    queries: list[torch.Tensor]  # B x (Lq,)
    responses: list[torch.Tensor]  # B x (Lr,)
    scores: torch.Tensor  # (B,)
    response_masks: list[torch.Tensor] | None  # B x (Lr,)
    behaviour_logprobs: torch.Tensor | None  # (B, R), zero-padded


def validate_step_inputs(
    queries: Any,
    responses: Any,
    scores: Any,
    response_masks: Any,
    behaviour_logprobs: Any,
    batch_size: int,
    device: torch.device,
    vocab_size: int | None = None,
) -> StepInputs:
    """Check types, shapes, lengths and values of everything `step` receives."""
    for name, value in (("queries", queries), ("responses", responses), ("scores", scores)):
        _check_list(name, value, batch_size)
    q = [_token_tensor("queries", i, t, vocab_size, device) for i, t in enumerate(queries)]
    r = [_token_tensor("responses", i, t, vocab_size, device) for i, t in enumerate(responses)]
    s = torch.stack([_score(i, v) for i, v in enumerate(scores)]).to(device)
    masks = None
    if response_masks is not None:
        _check_list("response_masks", response_masks, batch_size)
        masks = [_mask(i, m, len(r[i])) for i, m in enumerate(response_masks)]
    behaviour = None
    if behaviour_logprobs is not None:
        _check_list("behaviour_logprobs", behaviour_logprobs, batch_size)
        behaviour = _behaviour(behaviour_logprobs, r, device)
    return StepInputs(q, r, s, masks, behaviour)


def _check_list(name: str, value: Any, batch_size: int) -> None:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{name} must be a list of tensors, got {type(value).__name__}")
    if len(value) != batch_size:
        raise ValueError(
            f"Batch size ({batch_size}) does not match number of examples - but got {len(value)} for: {name}"
        )


def _token_tensor(name: str, i: int, t: Any, vocab_size: int | None, device: torch.device) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}[{i}] must be a torch.Tensor of token ids, got {type(t).__name__}")
    if t.dim() != 1:
        raise ValueError(f"{name}[{i}] must be 1-D (one sequence of token ids), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}[{i}] must hold integer token ids, got dtype {t.dtype}")
    if len(t) == 0:
        raise ValueError(f"{name}[{i}] is empty: every query and response needs at least one token")
    low, high = int(t.min()), int(t.max())
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        raise ValueError(f"{name}[{i}] has token ids outside [0, {vocab_size}): min {low}, max {high}")
    return t.to(device=device, dtype=torch.long)


def _score(i: int, v: Any) -> torch.Tensor:
    if isinstance(v, bool) or not isinstance(v, torch.Tensor | int | float):
        raise ValueError(f"scores[{i}] must be a 0-D tensor or a number, got {type(v).__name__}")
    t = torch.as_tensor(v)
    if t.numel() != 1 or t.dim() > 1:
        raise ValueError(f"scores[{i}] must be a single value (0-D or 1-D of length 1), got shape {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"scores[{i}] must be real-valued, got dtype {t.dtype}")
    value = float(t.reshape(()))
    if not math.isfinite(value):
        raise ValueError(f"scores[{i}] is {value}: scores must be finite")
    return t.reshape(()).float().cpu()


def _mask(i: int, m: Any, length: int) -> torch.Tensor:
    if not isinstance(m, torch.Tensor) or m.dim() != 1 or len(m) != length:
        raise ValueError(f"response_masks[{i}] must be a 1-D tensor of the response's length ({length})")
    if not bool(m.bool().any()):
        raise ValueError(f"response_masks[{i}] masks every token: at least one must stay")
    return m.bool()


def _behaviour(values: Sequence[Any], responses: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    width = max(len(r) for r in responses)
    out = torch.zeros((len(responses), width), dtype=torch.float32)
    for i, (lp, r) in enumerate(zip(values, responses)):
        if not isinstance(lp, torch.Tensor) or lp.dim() != 1 or len(lp) != len(r):
            raise ValueError(f"behaviour_logprobs[{i}] must be a 1-D tensor of the response's length ({len(r)})")
        if not bool(torch.isfinite(lp).all()):
            raise ValueError(f"behaviour_logprobs[{i}] contains NaN/inf")
        out[i, : len(r)] = lp.float().cpu()
    return out.to(device)

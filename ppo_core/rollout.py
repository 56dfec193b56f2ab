"""Batch layout and forward passes over the response window.

Layout of a batch of B (query, response) pairs, Q = longest query, R = longest response, T = Q + R:

    input_ids (B, T):  [left pad | query | response | right pad]

so every response starts at column Q and the response window is the fixed slice [Q, Q + R). Position ids come
from the attention mask, so a sequence gets the same log-probs and values whatever padding surrounds it. Logits
are only computed for the R positions that predict response tokens (`logits_to_keep`), never for the query.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel

from ppo_core.masked import logprobs_from_logits


@dataclass(frozen=True)
class PaddedBatch:
    """Padded model inputs and the response mask of a batch."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    response_mask: torch.Tensor  # (B, R) bool, True on real (and unmasked) response tokens
    query_width: int  # Q

    @property
    def response_width(self) -> int:
        return self.response_mask.shape[1]

    @property
    def labels(self) -> torch.Tensor:
        """Response tokens `(B, R)`."""
        return self.input_ids[:, self.query_width :]

    def select(self, index: torch.Tensor) -> PaddedBatch:
        """Rows `index` of the batch (same Q and R, so statistics line up)."""
        return PaddedBatch(
            self.input_ids[index],
            self.attention_mask[index],
            self.position_ids[index],
            self.response_mask[index],
            self.query_width,
        )


def pad_batch(
    queries: Sequence[torch.Tensor],
    responses: Sequence[torch.Tensor],
    pad_token_id: int,
    device: torch.device,
    response_masks: Sequence[torch.Tensor] | None = None,
) -> PaddedBatch:
    """Left-pad queries and right-pad responses into one `(B, Q + R)` batch on `device`."""
    q_width = max(len(q) for q in queries)
    r_width = max(len(r) for r in responses)
    batch = len(queries)
    input_ids = torch.full((batch, q_width + r_width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, q_width + r_width), dtype=torch.long)
    response_mask = torch.zeros((batch, r_width), dtype=torch.bool)
    for i, (query, response) in enumerate(zip(queries, responses)):
        input_ids[i, q_width - len(query) : q_width] = query
        input_ids[i, q_width : q_width + len(response)] = response
        attention_mask[i, q_width - len(query) : q_width + len(response)] = 1
        response_mask[i, : len(response)] = True
        if response_masks is not None:
            response_mask[i, : len(response)] &= response_masks[i].bool().cpu()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
    return PaddedBatch(
        input_ids.to(device),
        attention_mask.to(device),
        position_ids.to(device),
        response_mask.to(device),
        q_width,
    )


def lm_window(lm: Any, batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits `(B, R, V)` and last hidden states `(B, R, H)` at the positions that predict response tokens."""
    out = lm(**_window_inputs(lm, batch), output_hidden_states=True)
    return _window_logits(out.logits, batch), _response_positions(out.hidden_states[-1], batch)  # (B, R, V|H)


def policy_forward(model: Any, batch: PaddedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probs `(B, R)`, values `(B, R)` and logits `(B, R, V)` of a value-head model on the batch.

    `model` is the value-head model as `accelerator.prepare` returned it, and it is called, not its submodules:
    DDP (and FSDP) synchronise gradients through the wrapper's forward, which a call to `model.pretrained_model`
    would bypass.
    """
    lm = extract_model_from_parallel(model).pretrained_model
    lm_logits, _, values = model(**_window_inputs(lm, batch))  # (B, R, V) with logits_to_keep, (B, T)
    logits = _window_logits(lm_logits, batch)  # (B, R, V)
    values = _response_positions(values, batch)  # (B, R)
    logprobs = logprobs_from_logits(logits, batch.labels)  # (B, R)
    return logprobs, values, logits


def _window_inputs(lm: Any, batch: PaddedBatch) -> dict[str, Any]:
    """Model inputs; logits only at the R positions that predict response tokens when the model can: HF's
    `logits_to_keep` takes their indices, so neither an extra position nor a slice (whose backward allocates a
    `(B, R + 1, V)` buffer) is paid for."""
    inputs: dict[str, Any] = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids,
        "use_cache": False,
    }
    if _accepts_logits_to_keep(lm):
        start = batch.query_width - 1
        inputs["logits_to_keep"] = torch.arange(start, start + batch.response_width, device=batch.input_ids.device)
    return inputs


def _window_logits(logits: torch.Tensor, batch: PaddedBatch) -> torch.Tensor:
    """`(B, R, V)`: the model's logits when it kept only the window, else the window of its `(B, T, V)`."""
    return logits if logits.shape[1] == batch.response_width else _response_positions(logits, batch)


def _response_positions(per_position: torch.Tensor, batch: PaddedBatch) -> torch.Tensor:
    """`(B, T, ...) -> (B, R, ...)`: the positions whose outputs predict the response tokens (Q - 1 ... T - 2)."""
    start = batch.query_width - 1
    return per_position[:, start : start + batch.response_width]


def _accepts_logits_to_keep(lm: Any) -> bool:
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return _forward_takes_logits_to_keep(type(base).__module__, type(base).__qualname__, type(base).forward)


@functools.cache
def _forward_takes_logits_to_keep(module: str, qualname: str, forward: Any) -> bool:
    """Looked up once per model class: `inspect.signature` on every forward is slow on a tiny model's step."""
    return "logits_to_keep" in inspect.signature(forward).parameters

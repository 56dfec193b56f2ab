"""Batched generation with left padding, and the per-token log-probs of what was generated.

Differences from TRL 0.11.4's `_generate_batched`, on purpose:
- an EOS token inside the prompt does not cut the output (TRL searches the whole sequence for the first EOS);
- the model generates in eval mode (TRL leaves dropout on after a step), and its mode is restored afterwards;
- the default batch is the whole list (TRL uses 4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Generation:
    """Per query: the output tokens (1-D) and, when asked, the log-prob of each generated token (1-D)."""

    sequences: list[torch.Tensor]
    logprobs: list[torch.Tensor] | None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run a block with dropout off, restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def left_pad(
    queries: Sequence[torch.Tensor], pad_token_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """`input_ids, attention_mask: (B, Q)` with queries aligned to the right."""
    width = max(len(q) for q in queries)
    input_ids = torch.full((len(queries), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(queries), width), dtype=torch.long)
    for i, query in enumerate(queries):
        input_ids[i, width - len(query) :] = query
        attention_mask[i, width - len(query) :] = 1
    return input_ids.to(device), attention_mask.to(device)


def generate_batch(
    model: Any,
    queries: Sequence[torch.Tensor],
    pad_token_id: int,
    eos_token_id: int | None,
    generation_kwargs: dict[str, Any],
    return_prompt: bool = True,
    remove_padding: bool = True,
    output_logprobs: bool = False,
    length_sampler: Callable[[], int] | None = None,
) -> Generation:
    """Generate for all `queries` in one batch (left padded); see the module docstring."""
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(queries, pad_token_id, device)
    kwargs = dict(generation_kwargs)
    kwargs.setdefault("pad_token_id", pad_token_id)
    if length_sampler is not None:
        kwargs["max_new_tokens"] = int(length_sampler())
    with eval_mode(model), torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            return_dict_in_generate=True,
            output_logits=output_logprobs,
            **kwargs,
        )
    generated = out.sequences[:, input_ids.shape[1] :]  # (B, G)
    token_logprobs = _chosen_logprobs(out.logits, generated) if output_logprobs else None  # (B, G)
    sequences: list[torch.Tensor] = []
    logprobs: list[torch.Tensor] = []
    for i, query in enumerate(queries):
        length = _response_length(generated[i], eos_token_id, pad_token_id) if remove_padding else None
        response = generated[i, :length]
        sequences.append(torch.cat([query.to(device), response]) if return_prompt else response)
        if token_logprobs is not None:
            logprobs.append(token_logprobs[i, :length])
    return Generation(sequences, logprobs if output_logprobs else None)


def _chosen_logprobs(step_logits: Sequence[torch.Tensor], generated: torch.Tensor) -> torch.Tensor:
    """Log-prob under the raw (unwarped) model distribution of each generated token: `(B, G)`."""
    logits = torch.stack(list(step_logits), dim=1).float()  # (B, G, V)
    picked = torch.gather(logits, -1, generated.unsqueeze(-1)).squeeze(-1)  # (B, G)
    return picked - torch.logsumexp(logits, dim=-1)


def _response_length(tokens: torch.Tensor, eos_token_id: int | None, pad_token_id: int) -> int:
    """Generated tokens up to and including the first EOS; without EOS, trailing padding is dropped."""
    if eos_token_id is not None:
        hits = (tokens == eos_token_id).nonzero()
        if len(hits):
            return int(hits[0, 0]) + 1
    real = (tokens != pad_token_id).nonzero()
    return int(real[-1, 0]) + 1 if len(real) else 0

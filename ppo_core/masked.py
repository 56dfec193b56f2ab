"""Masked statistics and log-prob helpers. Masks are `True` (or 1) on real response tokens.

Shapes: `values, mask: (B, T)` unless a docstring says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Sums a partial sum over the processes of a data-parallel run (`Collectives.sum`); the identity on one process.
Reduce = Callable[[torch.Tensor], torch.Tensor]


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The `Reduce` of a single process: the sum is already whole."""
    return tensor


def masked_sum(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Sum of `values` where `mask` is set (masked entries may hold NaN/inf: they are selected away)."""
    masked = torch.where(mask.bool(), values, torch.zeros_like(values))
    return masked.sum() if axis is None else masked.sum(axis)


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, axis: int | None = None, reduce: Reduce = local
) -> torch.Tensor:
    """Mean of `values` over the entries where `mask` is set; with `reduce`, over every process's entries
    (sum and count are reduced; only with `axis=None`)."""
    if axis is not None:
        return masked_sum(values, mask, axis) / mask.to(values.dtype).sum(axis)
    return reduce(masked_sum(values, mask)) / reduce(mask.to(values.dtype).sum())


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, reduce: Reduce = local) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected when `unbiased`, as in TRL), over every process's entries
    with `reduce` (two passes: the global mean, then the global sum of squared deviations)."""
    mean = masked_mean(values, mask, reduce=reduce)
    variance = masked_mean((values - mean) ** 2, mask, reduce=reduce)
    if unbiased:
        count = reduce(mask.to(values.dtype).sum())
        if count < 2:
            raise ValueError(f"masked_var needs at least 2 unmasked values for the unbiased estimate, got {int(count)}")
        variance = variance * (count / (count - 1))
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8, reduce: Reduce = local
) -> torch.Tensor:
    """(values - mean) / std over the masked entries (of every process, with `reduce`); the mean is added back
    when `shift_mean` is False."""
    mean, var = masked_mean(values, mask, reduce=reduce), masked_var(values, mask, reduce=reduce)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    return whitened if shift_mean else whitened + mean


def whiten(values: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Whiten every entry of `values` (unbiased variance)."""
    mean, var = values.mean(), values.var()
    whitened = (values - mean) * torch.rsqrt(var + eps)
    return whitened if shift_mean else whitened + mean


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, gather: bool = True) -> torch.Tensor:
    """Log-probabilities of `labels` under `logits`: `logits (B, T, V), labels (B, T) -> (B, T)`.

    Uses gather - logsumexp instead of a full `log_softmax`: no second (B, T, V) tensor is kept.
    With `gather=False` returns the full log-softmax `(B, T, V)`, as TRL does.
    """
    logits = logits.float()
    if not gather:
        return torch.log_softmax(logits, dim=-1)
    picked = torch.gather(logits, -1, labels.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: `(B, T, V) -> (B, T)`. No autograd."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)  # (B, T)
    probs = torch.softmax(logits, dim=-1)
    return lse - (probs * logits).sum(-1)

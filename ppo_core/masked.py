"""Masked statistics and log-prob helpers. Masks are `True` (or 1) on real response tokens.

Shapes: `values, mask: (B, T)` unless a docstring says otherwise.
"""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Sum of `values` where `mask` is set (masked entries may hold NaN/inf: they are selected away)."""
    masked = torch.where(mask.bool(), values, torch.zeros_like(values))
    return masked.sum() if axis is None else masked.sum(axis)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """Mean of `values` over the entries where `mask` is set."""
    count = mask.to(values.dtype).sum() if axis is None else mask.to(values.dtype).sum(axis)
    return masked_sum(values, mask, axis) / count


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected when `unbiased`, as in TRL)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.to(values.dtype).sum()
        if count < 2:
            raise ValueError(f"masked_var needs at least 2 unmasked values for the unbiased estimate, got {int(count)}")
        variance = variance * (count / (count - 1))
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(values - mean) / std over the masked entries; the mean is added back when `shift_mean` is False."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
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

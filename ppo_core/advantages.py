"""Per-token rewards and generalised advantage estimation (Schulman et al. 2016), vectorised."""

from __future__ import annotations

import torch

from ppo_core.masked import Reduce, local, masked_whiten


def compute_rewards(
    scores: torch.Tensor, kls: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards `-kl_coef * kl`, plus each score at its sequence's last real response token.

    `scores: (B,)`, `kls: (B, T)`, `mask: (B, T)` -> `rewards, non_score_rewards: (B, T)`.
    """
    mask = mask.bool()
    non_score_rewards = -kl_coef * kls * mask  # (B, T)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, T)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values  # (B,)
    if bool((last < 0).any()):
        raise ValueError("every response needs at least one unmasked token")
    rewards = non_score_rewards.clone()
    rewards[torch.arange(mask.shape[0], device=mask.device), last] += scores.to(rewards.dtype)
    return rewards, non_score_rewards


def discount_matrix(length: int, factor: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`M[t, k] = factor ** (k - t)` for k >= t else 0: `(T, T)`. Row t sums discounted future terms."""
    idx = torch.arange(length, device=device)
    exponent = (idx[None, :] - idx[:, None]).to(dtype)  # (T, T)
    powers = torch.pow(torch.tensor(factor, device=device, dtype=dtype), exponent.clamp(min=0))
    return torch.where(exponent >= 0, powers, torch.zeros_like(powers))


def compute_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
    whiten_rewards: bool = False,
    reduce: Reduce = local,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over response tokens. `rewards, values, mask: (B, T)` -> `advantages (whitened), returns: (B, T)`.

    Masked positions get value 0 and reward 0, so the value after the last real token is 0 (the episode ends
    there) and trailing padding contributes nothing. Whitening uses the statistics of the global batch: `reduce`
    sums partial sums over the processes of a data-parallel run. delta_t = r_t + gamma * V_{t+1} - V_t and
    A_t = sum_k (gamma * lam)^(k - t) delta_k, computed as one matrix product instead of a Python loop.
    """
    mask_f = mask.to(values.dtype)
    values = values * mask_f
    rewards = rewards * mask_f
    if whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False, reduce=reduce) * mask_f
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)  # (B, T)
    deltas = rewards + gamma * next_values - values  # (B, T)
    discount = discount_matrix(values.shape[1], gamma * lam, values.device, values.dtype)  # (T, T)
    advantages = deltas @ discount.T  # (B, T): A[b, t] = sum_k M[t, k] * delta[b, k]
    returns = advantages + values
    advantages = masked_whiten(advantages, mask, reduce=reduce) * mask_f
    return advantages.detach(), returns.detach()

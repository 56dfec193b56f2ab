"""Per-token KL penalties and the KL coefficient controllers (Ziegler et al. 2019, sec. 2.2)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ppo_core.config import KLPenalty

KLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def kl_estimate(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """k1 estimator: logp - logp_ref. `(B, T), (B, T) -> (B, T)`."""
    return logprob - ref_logprob


def abs_kl(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """|logp - logp_ref|: `(B, T) -> (B, T)`."""
    return (logprob - ref_logprob).abs()


def mse_kl(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """k2 estimator, 0.5 * (logp - logp_ref)^2: `(B, T) -> (B, T)`."""
    return 0.5 * (logprob - ref_logprob).square()


def full_kl(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """Exact KL(pi || ref) per position from full log-softmax tensors: `(B, T, V), (B, T, V) -> (B, T)`."""
    return F.kl_div(ref_logprob, logprob, log_target=True, reduction="none").sum(-1)


KL_PENALTIES: dict[KLPenalty, KLFn] = {"kl": kl_estimate, "abs": abs_kl, "mse": mse_kl, "full": full_kl}


def kl_penalty_fn(name: KLPenalty) -> KLFn:
    """The per-token penalty for `PPOConfig.kl_penalty`, chosen once at construction."""
    try:
        return KL_PENALTIES[name]
    except KeyError:
        raise ValueError(f"unknown kl_penalty {name!r}; choose from {sorted(KL_PENALTIES)}") from None


class AdaptiveKLController:
    """Moves the KL coefficient towards a target KL (Ziegler et al. 2019, eq. 2)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current: float, n_steps: int) -> None:
        """Proportional update clipped to +-20%, scaled by the number of samples seen."""
        proportional_error = float(np.clip(current / self.target - 1, -0.2, 0.2))
        self.value *= 1 + proportional_error * n_steps / self.horizon


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current: float, n_steps: int) -> None:
        """Nothing changes."""

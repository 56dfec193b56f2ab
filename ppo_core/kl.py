"""Per-token KL penalties and the KL coefficient controllers (Ziegler et al. 2019, sec. 2.2)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ppo_core.config import KLPenalty

KLFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def kl_estimate(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """k1 estimator: logp - logp_ref. `(B, T), (B, T) -> (B, T)`."""
    return logprob - ref_logprob


def k3_kl(logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """k3 estimator (Schulman 2020, "Approximating KL divergence"): `(r - 1) - log r` with `r = p_ref / p`,
    unbiased for KL(pi || ref) on samples from pi and never negative, unlike k1 = logp - logp_ref, whose sum over
    a response can go below 0. `(B, T), (B, T) -> (B, T)`."""
    log_ratio = (ref_logprob - logprob).float().clamp(max=20.0)
    return torch.expm1(log_ratio) - log_ratio


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


# What a penalty reads of a model's output at the response positions: `(logits (b, R, V), logprobs (b, R))`.
PenaltyInput = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sampled_logprobs(logits: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """The log-prob of each sampled token, `(b, R)`: all that `kl`, `abs` and `mse` need."""
    return logprobs


def full_logprobs(logits: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    """The whole log-softmax `(b, R, V)` in fp32, for the exact KL over the vocabulary."""
    return torch.log_softmax(logits.float(), dim=-1)


@dataclass(frozen=True)
class TokenKL:
    """A per-token penalty with what it needs of each model's output (chosen once, from `PPOConfig.kl_penalty`).

    The rollout keeps `policy_input(logits, logprobs)` while the reference runs, so only the exact KL holds the
    policy's `(b, R, V)` distribution; the others keep the `(b, R)` log-probs and free the logits first.
    """

    penalty: KLFn
    policy_input: PenaltyInput
    ref_input: PenaltyInput

    def __call__(self, policy: torch.Tensor, ref_logits: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
        """Per-token penalty `(b, R)` from `policy_input`'s output and the reference's logits and log-probs."""
        return self.penalty(policy, self.ref_input(ref_logits, ref_logprobs))


TOKEN_KLS: dict[KLPenalty, TokenKL] = {
    "kl": TokenKL(kl_estimate, sampled_logprobs, sampled_logprobs),
    "abs": TokenKL(abs_kl, sampled_logprobs, sampled_logprobs),
    "mse": TokenKL(mse_kl, sampled_logprobs, sampled_logprobs),
    "full": TokenKL(full_kl, full_logprobs, full_logprobs),
}


def token_kl(name: KLPenalty) -> TokenKL:
    """The `TokenKL` of `PPOConfig.kl_penalty`."""
    try:
        return TOKEN_KLS[name]
    except KeyError:
        raise ValueError(f"unknown kl_penalty {name!r}; choose from {sorted(TOKEN_KLS)}") from None


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

"""Step statistics with TRL 0.11's keys, computed without autograd and returned as floats / numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ppo_core.collectives import Collectives
from ppo_core.kl import k3_kl
from ppo_core.masked import masked_mean, masked_sum


@torch.no_grad()
def objective_stats(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    kls: torch.Tensor,
    non_score_rewards: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> dict[str, Any]:
    """`objective/*` and the reward statistics of a rollout; inputs `(B, R)` except `scores (B,)`.

    As in TRL 0.11 (`record_step_stats`), `objective/kl` and `objective/kl_dist` sum the selected per-token penalty
    `kls` (`kl_penalty`: `kl`, `abs`, `mse` or `full`) over each response; the adaptive controller reads
    `objective/kl`. `objective/kl_estimate` (not in TRL) is the same with the plain `logprob - ref_logprob` (k1,
    which can be negative); `objective/kl_k3` (not in TRL) sums the k3 estimator (`ppo_core.kl.k3_kl`), never
    negative: what the app plots.
    """
    mask_f = mask.float()
    kl_list = masked_sum(kls.float(), mask, axis=-1)  # (B,)
    return {
        "objective/kl": kl_list.mean(),
        "objective/kl_dist": kl_list,
        "objective/kl_estimate": masked_sum(logprobs - ref_logprobs, mask, axis=-1).mean(),
        "objective/kl_k3": masked_sum(k3_kl(logprobs, ref_logprobs), mask, axis=-1).mean(),
        "objective/logprobs": logprobs,
        "objective/ref_logprobs": ref_logprobs,
        "objective/kl_coef": kl_coef,
        "objective/entropy": (-logprobs * mask_f).sum(-1).mean(),
        "ppo/mean_non_score_reward": masked_mean(non_score_rewards, mask),
        "ppo/mean_scores": scores.float().mean(),
        "ppo/std_scores": scores.float().std() if scores.numel() > 1 else torch.zeros(()),
    }


def token_stats(query_lens: torch.Tensor, response_lens: torch.Tensor) -> dict[str, Any]:
    """`tokens/*`: lengths `(B,)` of queries and responses."""
    stats: dict[str, Any] = {}
    for name, lens_t in (("queries", query_lens), ("responses", response_lens)):
        lens = lens_t.cpu().double().numpy()
        stats[f"tokens/{name}_len_mean"] = float(lens.mean())
        stats[f"tokens/{name}_len_std"] = float(lens.std(ddof=1)) if len(lens) > 1 else 0.0
        stats[f"tokens/{name}_dist"] = lens
    return stats


def aggregate_train_stats(per_minibatch: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Mean of scalar minibatch stats under `ppo/`; `policy/advantages` and `policy/ratio` concatenated."""
    stats: dict[str, Any] = {}
    if not per_minibatch:
        return stats
    for key in per_minibatch[0]:
        values = [mb[key] for mb in per_minibatch]
        if values[0].dim() == 0:
            stats[f"ppo/{key}"] = torch.stack(values).float().mean()
        else:
            stats[f"ppo/{key}"] = torch.cat([v.flatten() for v in values])
    if "ppo/val/error" in stats and "ppo/returns/var" in stats:
        stats["ppo/val/var_explained"] = 1 - stats["ppo/val/error"] / stats["ppo/returns/var"]
    return stats


def to_numpy(stats: dict[str, Any]) -> dict[str, Any]:
    """Tensors -> python floats (0-d) or numpy arrays; other values unchanged."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().float().cpu()
            out[key] = float(value) if value.dim() == 0 else value.numpy()
        elif isinstance(value, np.generic):
            out[key] = float(value)
        else:
            out[key] = value
    return out


def scalar_stats(stats: dict[str, Any]) -> dict[str, float]:
    """Only the scalar entries (for storing a step's record or printing a summary)."""
    return {k: float(v) for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def global_objective_stats(
    collectives: Collectives,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    kls: torch.Tensor,
    non_score_rewards: torch.Tensor,
    scores: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> dict[str, Any]:
    """`objective_stats` over every process's rows: the `(B, R_p)` tensors are gathered (one collective) as
    `(P * B, R)`, rows in process order, so the figures equal one process's on the whole batch."""
    per_token = torch.stack([logprobs, ref_logprobs, kls.float(), non_score_rewards, mask.float()], -1)  # (B, R, 5)
    lp, ref_lp, kl, non_score, every_mask = collectives.gather_rows(per_token).unbind(-1)  # each (P * B, R)
    every_scores = collectives.gather_rows(scores)  # (P * B,)
    return objective_stats(lp, ref_lp, kl, non_score, every_scores, every_mask.bool(), kl_coef)


def global_token_stats(
    collectives: Collectives, queries: Sequence[torch.Tensor], responses: Sequence[torch.Tensor]
) -> dict[str, Any]:
    """`token_stats` of every process's queries and responses."""
    lengths = torch.tensor([[len(q), len(r)] for q, r in zip(queries, responses)], device=queries[0].device)
    every = collectives.gather_rows(lengths).cpu()  # (P * B, 2)
    return token_stats(every[:, 0], every[:, 1])


def slowest(collectives: Collectives, timing: dict[str, float]) -> dict[str, float]:
    """Each duration as the slowest process's, so every process returns the same figures."""
    durations = collectives.max(torch.tensor(list(timing.values()), dtype=torch.float64))  # (n,)
    return dict(zip(timing, durations.tolist()))

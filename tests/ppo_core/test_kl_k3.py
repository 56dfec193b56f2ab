"""The k3 KL estimator the app plots: never negative where k1 (logp - logp_ref) is, and a hand-computed value."""

from __future__ import annotations

import math

import pytest
import torch

from ppo_core.kl import k3_kl, kl_estimate
from ppo_core.masked import masked_sum
from ppo_core.stats import objective_stats


def test_k3_is_never_negative_where_k1_is_and_matches_the_formula() -> None:
    logprob = torch.tensor([[-2.0, -1.0, -0.5]])  # (B, T)
    ref = torch.tensor([[-1.0, -1.5, -0.5]])
    mask = torch.tensor([[True, True, True]])
    k1 = masked_sum(kl_estimate(logprob, ref), mask, axis=-1)
    k3 = k3_kl(logprob, ref)  # (B, T)
    assert k1.item() < 0  # the sampled tokens were likelier under the reference: k1's sum goes negative
    expected = [math.expm1(1.0) - 1.0, math.expm1(-0.5) + 0.5, 0.0]
    torch.testing.assert_close(k3, torch.tensor([expected]))
    stats = objective_stats(logprob, ref, kl_estimate(logprob, ref), torch.zeros(1, 3), torch.zeros(1), mask, 0.1)
    assert float(stats["objective/kl_k3"]) == pytest.approx(sum(expected)) and sum(expected) > 0
    assert float(stats["objective/kl_estimate"]) < 0

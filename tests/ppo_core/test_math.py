"""KL penalties, controllers, rewards, GAE and the clipped losses: hand-computed and against plain loops."""

from __future__ import annotations

import math

import pytest
import torch

from ppo_core import AdaptiveKLController, FixedKLController
from ppo_core.advantages import compute_advantages, compute_rewards
from ppo_core.kl import kl_penalty_fn
from ppo_core.losses import ppo_losses
from ppo_core.masked import masked_mean, masked_whiten

LP = torch.tensor([[-1.0, -2.0, -0.5]])
REF = torch.tensor([[-1.5, -1.0, -0.5]])


@pytest.mark.parametrize(
    ("name", "expected"),
    [("kl", [0.5, -1.0, 0.0]), ("abs", [0.5, 1.0, 0.0]), ("mse", [0.125, 0.5, 0.0])],
)
def test_per_token_kl_penalties(name, expected):
    torch.testing.assert_close(kl_penalty_fn(name)(LP, REF), torch.tensor([expected]))


def test_full_kl_is_exact_kl_and_nonnegative():
    torch.manual_seed(0)
    p = torch.log_softmax(torch.randn(2, 3, 5), -1)
    q = torch.log_softmax(torch.randn(2, 3, 5), -1)
    expected = (p.exp() * (p - q)).sum(-1)
    out = kl_penalty_fn("full")(p, q)
    torch.testing.assert_close(out, expected)
    assert (out >= 0).all()


def test_unknown_kl_penalty_raises():
    with pytest.raises(ValueError, match="unknown kl_penalty"):
        kl_penalty_fn("bogus")  # type: ignore[arg-type]


def test_adaptive_controller_follows_ziegler_update():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(current=9.0, n_steps=100)  # error 0.5 clipped to 0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 100 / 10000))
    ctl.update(current=5.4, n_steps=100)  # error -0.1
    assert ctl.value == pytest.approx(0.2 * (1 + 0.002) * (1 - 0.1 * 100 / 10000))
    fixed = FixedKLController(0.3)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.3


def test_rewards_put_score_on_last_real_token():
    kls = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    rewards, non_score = compute_rewards(torch.tensor([10.0, -1.0]), kls, mask, kl_coef=0.5)
    torch.testing.assert_close(non_score, torch.tensor([[-0.5, -1.0, 0.0], [-0.5, -0.5, -0.5]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.5, 9.0, 0.0], [-0.5, -0.5, -1.5]]))


def test_rewards_refuse_a_fully_masked_response():
    with pytest.raises(ValueError, match="at least one unmasked token"):
        compute_rewards(torch.tensor([1.0]), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool), 0.1)


def gae_loop(rewards, values, mask, gamma, lam):
    """TRL's reference loop."""
    values, rewards = values * mask, rewards * mask
    lastgaelam = 0.0
    reversed_adv = []
    length = rewards.shape[-1]
    for t in reversed(range(length)):
        nextvalues = values[:, t + 1] if t < length - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        reversed_adv.append(lastgaelam)
    advantages = torch.stack(reversed_adv[::-1]).transpose(0, 1)
    returns = advantages + values
    return masked_whiten(advantages, mask) * mask, returns


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8), (1.0, 0.0), (0.99, 1.0)])
def test_vectorised_gae_matches_plain_loop(gamma, lam):
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 7), torch.randn(3, 7)
    mask = torch.ones(3, 7)
    mask[0, 5:] = 0
    mask[2, 2:] = 0
    adv, ret = compute_advantages(rewards, values, mask, gamma, lam)
    exp_adv, exp_ret = gae_loop(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, exp_adv, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ret * mask, exp_ret * mask, rtol=1e-5, atol=1e-5)


def test_gae_hand_computed_single_step():
    # one token: A = r - V, returns = r
    adv, ret = compute_advantages(
        torch.tensor([[2.0], [0.0]]), torch.tensor([[0.5], [1.0]]), torch.ones(2, 1), 1.0, 0.95
    )
    torch.testing.assert_close(ret, torch.tensor([[2.0], [0.0]]))
    raw = torch.tensor([1.5, -1.0])
    torch.testing.assert_close(adv.squeeze(1), (raw - raw.mean()) / raw.std(), rtol=1e-4, atol=1e-4)


def _loss_inputs(seed=0):
    torch.manual_seed(seed)
    shape = (2, 3)
    return {
        "logprobs": torch.randn(shape) - 2,
        "old_logprobs": torch.randn(shape) - 2,
        "vpreds": torch.randn(shape),
        "values": torch.randn(shape),
        "advantages": torch.randn(shape),
        "returns": torch.randn(shape),
    }


def test_ratio_one_means_no_clipping_and_zero_kl():
    x = _loss_inputs()
    x["old_logprobs"] = x["logprobs"].clone()
    x["vpreds"] = x["values"].clone()
    out = ppo_losses(**x, mask=torch.ones(2, 3, dtype=torch.bool), cliprange=0.2, cliprange_value=0.2)
    assert out.stats["policy/clipfrac"].item() == 0.0
    assert out.stats["val/clipfrac"].item() == 0.0
    assert out.stats["policy/approxkl"].item() == 0.0
    torch.testing.assert_close(out.pg_losses, -x["advantages"])


def test_clipped_surrogate_hand_computed():
    # ratio e^0.5 = 1.6487 with A = 1 -> clipped at 1.2: loss -1.2; with A = -1 -> max(1.6487, 1.2) = 1.6487
    lp = torch.tensor([[0.5, 0.5]])
    out = ppo_losses(
        lp,
        torch.zeros(1, 2),
        torch.zeros(1, 2),
        torch.zeros(1, 2),
        torch.tensor([[1.0, -1.0]]),
        torch.zeros(1, 2),
        torch.ones(1, 2, dtype=torch.bool),
        cliprange=0.2,
        cliprange_value=0.2,
    )
    torch.testing.assert_close(out.pg_losses, torch.tensor([[-1.2, math.exp(0.5)]]))
    assert out.stats["policy/clipfrac"].item() == pytest.approx(0.5)


def test_value_clipping_hand_computed():
    # values 0, vpred 1, return 1: clipped vpred 0.2 -> loss 0.5 * max(0, 0.64) = 0.32
    out = ppo_losses(
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        torch.ones(1, 1),
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        torch.ones(1, 1),
        torch.ones(1, 1, dtype=torch.bool),
        cliprange=0.2,
        cliprange_value=0.2,
    )
    torch.testing.assert_close(out.vf_losses, torch.tensor([[0.32]]))
    assert out.stats["val/clipfrac"].item() == 1.0


def test_masked_loss_equals_loss_with_masked_tokens_removed():
    x = _loss_inputs(1)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    full = ppo_losses(**x, mask=mask, cliprange=0.2, cliprange_value=0.2)
    kept = {k: v[mask].unsqueeze(0) for k, v in x.items()}
    removed = ppo_losses(**kept, mask=torch.ones(1, 3, dtype=torch.bool), cliprange=0.2, cliprange_value=0.2)
    torch.testing.assert_close(masked_mean(full.pg_losses, mask), removed.pg_losses.mean())
    torch.testing.assert_close(masked_mean(full.vf_losses, mask), removed.vf_losses.mean())
    for key in ("policy/approxkl", "policy/clipfrac", "val/error", "returns/mean"):
        torch.testing.assert_close(full.stats[key], removed.stats[key])


def test_importance_weights_scale_the_surrogate():
    x = _loss_inputs(2)
    mask = torch.ones(2, 3, dtype=torch.bool)
    base = ppo_losses(**x, mask=mask, cliprange=0.2, cliprange_value=0.2)
    weights = torch.full((2, 3), 0.5)
    weighted = ppo_losses(**x, mask=mask, cliprange=0.2, cliprange_value=0.2, importance_weights=weights)
    torch.testing.assert_close(weighted.pg_losses, base.pg_losses * 0.5)

"""Masked statistics and log-prob helpers, hand-computed on 2x3 tensors."""

from __future__ import annotations

import pytest
import torch

from ppo_core import logprobs_from_logits, masked_mean, masked_var, masked_whiten, whiten
from ppo_core.masked import entropy_from_logits

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)


def test_masked_mean_ignores_masked_entries_even_nan():
    values = VALUES.clone()
    values[0, 2] = float("nan")
    assert masked_mean(values, MASK).item() == pytest.approx((1 + 2 + 4) / 3)
    torch.testing.assert_close(masked_mean(VALUES, MASK, axis=1), torch.tensor([1.5, 4.0]))


def test_masked_var_is_unbiased_like_torch_var_on_the_kept_values():
    kept = torch.tensor([1.0, 2.0, 4.0])
    assert masked_var(VALUES, MASK).item() == pytest.approx(kept.var().item())
    assert masked_var(VALUES, MASK, unbiased=False).item() == pytest.approx(kept.var(unbiased=False).item())


def test_masked_var_with_one_value_raises():
    with pytest.raises(ValueError, match="at least 2"):
        masked_var(VALUES, torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool))


def test_masked_whiten_gives_zero_mean_unit_var_on_kept_values():
    out = masked_whiten(VALUES, MASK)
    assert masked_mean(out, MASK).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(out, MASK).item() == pytest.approx(1.0, abs=1e-5)
    shifted = masked_whiten(VALUES, MASK, shift_mean=False)
    assert masked_mean(shifted, MASK).item() == pytest.approx(7 / 3, abs=1e-5)


def test_whiten_all_entries():
    out = whiten(VALUES)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert out.var().item() == pytest.approx(1.0, abs=1e-5)


def test_logprobs_from_logits_matches_log_softmax_gather():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    labels = torch.randint(0, 7, (2, 3))
    expected = torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logprobs_from_logits(logits, labels), expected)
    torch.testing.assert_close(logprobs_from_logits(logits, labels, gather=False), torch.log_softmax(logits, -1))


def test_entropy_of_uniform_is_log_vocab():
    logits = torch.zeros(2, 3, 8)
    torch.testing.assert_close(entropy_from_logits(logits), torch.full((2, 3), torch.log(torch.tensor(8.0)).item()))

"""Bradley-Terry: recovers a planted ordering from noisy comparisons; hand-computed cases; ties and both-bad."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.bradley_terry import fit_strengths, scores_from_outcomes, strength_to_score
from app.learned.fit import spearman


def _noisy_comparisons(true: np.ndarray, n: int, rng: np.random.Generator) -> list[tuple[int, int, str]]:
    """n answers drawn from the BT model itself, with some ties when the two are close."""
    out = []
    for _ in range(n):
        a, b = rng.choice(len(true), size=2, replace=False)
        p = 1 / (1 + math.exp(-(true[a] - true[b])))
        if abs(true[a] - true[b]) < 0.15 and rng.random() < 0.5:
            out.append((int(a), int(b), "tie"))
        else:
            out.append((int(a), int(b), "a_better" if rng.random() < p else "b_better"))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_planted_ordering(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.permutation(np.linspace(-2.0, 2.0, 30))
    fitted = fit_strengths(_noisy_comparisons(true, 900, rng))
    order = sorted(fitted)
    rho = spearman([true[i] for i in order], [fitted[i] for i in order])
    assert rho > 0.9


def test_few_comparisons_rank_worse_than_many() -> None:
    """The threshold above is not trivially met: with 40 noisy comparisons the ranking is much weaker."""
    rng = np.random.default_rng(5)
    true = rng.permutation(np.linspace(-2.0, 2.0, 30))
    fitted = fit_strengths(_noisy_comparisons(true, 40, rng))
    order = sorted(fitted)
    assert spearman([true[i] for i in order], [fitted[i] for i in order]) < 0.9


def test_nearly_flat_prior_gives_the_maximum_likelihood_answer() -> None:
    """3 wins and 1 loss: MLE theta_a - theta_b = log 3, split symmetrically by the (tiny) prior."""
    fitted = fit_strengths([("a", "b", "a_better")] * 3 + [("a", "b", "b_better")], prior_precision=1e-9)
    assert fitted["a"] == pytest.approx(math.log(3) / 2, abs=1e-6)
    assert fitted["b"] == pytest.approx(-math.log(3) / 2, abs=1e-6)


def test_a_single_win_is_finite_and_the_prior_shrinks_it() -> None:
    strong = fit_strengths([(1, 2, "a_better")], prior_precision=0.1)
    weak = fit_strengths([(1, 2, "a_better")], prior_precision=2.0)
    assert 0 < weak[1] < strong[1] < 10 and strong[2] == pytest.approx(-strong[1])


def test_ties_pull_together_and_both_bad_pushes_both_down() -> None:
    assert scores_from_outcomes([(1, 2, "tie")], (-1.0, 1.0)) == {1: 0.0, 2: 0.0}
    apart = fit_strengths([(1, 2, "a_better"), (1, 2, "a_better")])
    closer = fit_strengths([(1, 2, "a_better"), (1, 2, "a_better"), (1, 2, "tie"), (1, 2, "tie")])
    assert 0 < closer[1] - closer[2] < apart[1] - apart[2]
    bad = scores_from_outcomes([(1, 2, "both_bad")], (-1.0, 1.0))
    assert bad[1] == pytest.approx(bad[2]) and bad[1] < 0
    # a winner of a both-bad pair's sibling comparison still ranks above the loser, both below "acceptable"
    mixed = fit_strengths([(1, 2, "both_bad"), (1, 2, "a_better")])
    assert mixed[2] < mixed[1] < 0.2


def test_scores_fill_the_range_and_bad_input_is_refused() -> None:
    assert strength_to_score(0.0, (0.0, 10.0)) == 5.0
    assert strength_to_score(50.0, (-1.0, 1.0)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown answer"):
        fit_strengths([(1, 2, "a_much_better")])
    with pytest.raises(ValueError, match="itself"):
        fit_strengths([(1, 1, "tie")])
    with pytest.raises(ValueError, match="prior_precision"):
        fit_strengths([(1, 2, "tie")], prior_precision=0.0)
    assert fit_strengths([]) == {}

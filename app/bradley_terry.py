"""Bradley-Terry strengths from pairwise answers, and the scalar PPO reward each sample gets from its strength.

The model (Bradley & Terry 1952): sample i beats sample j with probability sigmoid(theta_i - theta_j). We fit the
maximum a posteriori strengths under a Gaussian prior theta ~ N(0, 1 / prior_precision) by Newton's method (the
log posterior is strictly concave, so Newton converges in a handful of steps from 0). The prior is what makes a
live fit usable: with the maximum-likelihood fit, a sample that won its only comparison has strength +infinity
(Zermelo's condition fails whenever the comparison graph is not strongly connected, which is always the case early
on); the prior shrinks strengths of little-compared samples towards "average".

How the four answers enter the likelihood:
- ``a_better`` / ``b_better``: one win for the better sample.
- ``tie``: half a win for each side (the "ties as half-wins" convention; Davidson's 1970 tie parameter would add a
  third parameter to fit from few ties and changes the ranking little). A tie pulls the two strengths together.
- ``both_bad``: says nothing about A against B, but says both are below the bar. Each sample loses one comparison to
  a virtual "acceptable" player whose strength is fixed at 0, the prior mean. This lowers both absolutely, which a
  purely relative model could not express, and it is the one link that anchors a prompt's strengths on a scale
  shared by all prompts (comparisons only ever link samples of one prompt).

The reward of a sample is its probability of beating that acceptable player, rescaled to the trainer's score range:
``lo + (hi - lo) * sigmoid(theta)``; with the app's range (-1, 1) that is ``tanh(theta / 2)``. Pure functions,
numpy only.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)

ANSWER_WINS: dict[str, tuple[tuple[int, int, float], ...]] = {
    # (winner, loser, weight); 0 = sample A, 1 = sample B, -1 = the virtual acceptable player
    "a_better": ((0, 1, 1.0),),
    "b_better": ((1, 0, 1.0),),
    "tie": ((0, 1, 0.5), (1, 0, 0.5)),
    "both_bad": ((-1, 0, 1.0), (-1, 1, 1.0)),
}
DEFAULT_PRIOR_PRECISION = 0.5
"""1 / variance of the Gaussian prior on a strength. 0.5 (a prior sd of about 1.4): on (-1, 1), one win over another
sample gives the two rewards +0.25 and -0.25, ten wins over it +0.58 and -0.58, one "both bad" -0.33 each."""


def fit_strengths(
    outcomes: Iterable[tuple[K, K, str]],
    *,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> dict[K, float]:
    """MAP Bradley-Terry strength of every sample named in ``outcomes`` ((sample A, sample B, answer) triples).

    Raises ValueError for an unknown answer, a sample compared with itself, or ``prior_precision <= 0``.
    """
    if not prior_precision > 0:
        raise ValueError(f"prior_precision must be > 0, got {prior_precision!r}")
    players: dict[K, int] = {}
    winners: list[int] = []
    losers: list[int] = []
    weights: list[float] = []
    for a, b, answer in outcomes:
        if answer not in ANSWER_WINS:
            raise ValueError(f"unknown answer {answer!r}; expected one of {', '.join(ANSWER_WINS)}")
        if a == b:
            raise ValueError(f"sample {a!r} compared with itself")
        ids = (players.setdefault(a, len(players)), players.setdefault(b, len(players)))
        for w, lo, weight in ANSWER_WINS[answer]:
            winners.append(-1 if w < 0 else ids[w])
            losers.append(ids[lo])
            weights.append(weight)
    win, lose = np.array(winners, dtype=np.int64), np.array(losers, dtype=np.int64)
    theta = _newton(len(players), win, lose, np.array(weights, dtype=float), prior_precision, max_iter, tol)
    return {key: float(theta[i]) for key, i in players.items()}


def _newton(
    n: int,
    winners: np.ndarray,
    losers: np.ndarray,
    weights: np.ndarray,
    prior_precision: float,
    max_iter: int,
    tol: float,
) -> np.ndarray:
    """Maximise sum_k w_k log sigmoid(theta[win_k] - theta[lose_k]) - prior/2 |theta|^2; index -1 is fixed at 0."""
    theta = np.zeros(n + 1)  # theta[n] is the acceptable player (index -1), never updated
    win, lose = np.where(winners < 0, n, winners), np.where(losers < 0, n, losers)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(theta[win] - theta[lose])))  # P(winner beats loser) under theta: (K,)
        r = weights * (1.0 - p)  # d loglik / d (theta_win - theta_lose): (K,)
        grad = np.bincount(win, r, n + 1) - np.bincount(lose, r, n + 1) - prior_precision * theta
        c = weights * p * (1.0 - p)  # curvature of each term: (K,)
        hess = np.zeros((n + 1, n + 1))
        np.add.at(hess, (win, win), -c)
        np.add.at(hess, (lose, lose), -c)
        np.add.at(hess, (win, lose), c)
        np.add.at(hess, (lose, win), c)
        hess[:n, :n] -= prior_precision * np.eye(n)
        step = np.linalg.solve(hess[:n, :n], grad[:n])  # negative definite: a unique ascent step
        theta[:n] -= step
        if float(np.max(np.abs(step), initial=0.0)) < tol:
            break
    return theta[:n]


def strength_to_score(theta: float, score_range: tuple[float, float]) -> float:
    """The probability of beating the acceptable player (strength 0), mapped onto ``score_range``."""
    lo, hi = score_range
    return lo + (hi - lo) / (1.0 + float(np.exp(-theta)))


def scores_from_outcomes(
    outcomes: Iterable[tuple[K, K, str]],
    score_range: tuple[float, float],
    *,
    prior_precision: float = DEFAULT_PRIOR_PRECISION,
) -> dict[K, float]:
    """Each compared sample's reward in ``score_range``: fit, then map (see the module docstring)."""
    strengths: Mapping[K, float] = fit_strengths(outcomes, prior_precision=prior_precision)
    return {key: strength_to_score(theta, score_range) for key, theta in strengths.items()}

"""Fitting the learned reward's head: ridge regression on sentence embeddings, checked on held-out items.

numpy arrays, the heavy products by torch (see `svd`); no threads, no storage. Ridge rather than a small MLP:
with the tens to hundreds of human ratings a sitting produces, a linear head on a good sentence embedding is what
the data can support, it fits in milliseconds in closed form, and its leave-one-out error is exact and free (the
hat matrix of the SVD), so the regularisation strength is chosen on the training items alone and the held-out
items stay untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

Array = npt.NDArray[np.float64]

ALPHAS: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
"""Ridge strengths tried, relative to the mean squared singular value of the centred features (so the grid does
not depend on the embedding's scale); the one with the smallest leave-one-out error on the training items wins."""
HELD_OUT_SHARE = 0.2
MIN_HELD_OUT = 4


@dataclass(frozen=True)
class RidgeFit:
    weights: Array
    """(D,)"""
    bias: float
    alpha: float
    """The chosen strength, absolute."""
    loo_rmse: float
    """Leave-one-out root mean squared error on the training items, at `alpha`."""

    def predict(self, x: Array) -> Array:
        """(N, D) -> (N,)"""
        return np.asarray(x @ self.weights + self.bias, dtype=np.float64)


def fit_ridge(x: Array, y: Array, alphas: Sequence[float] = ALPHAS) -> RidgeFit:
    """Ridge regression with an unpenalised intercept; alpha by exact leave-one-out error.

    x: (N, D), y: (N,). With X = U S V^T (centred), the fit is w = V diag(s / (s^2 + a)) U^T y, and the hat
    matrix H = U diag(s^2 / (s^2 + a)) U^T gives the leave-one-out residuals r_i / (1 - H_ii - 1/N) (the
    1/N is the intercept's share of the hat matrix)."""
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] < 2:
        raise ValueError(f"need (N, D) features and (N,) targets with N >= 2, got {x.shape} and {y.shape}")
    x_mean, y_mean = x.mean(axis=0), float(y.mean())
    xc, yc = x - x_mean, y - y_mean
    u, s, vt = svd(xc)  # u: (N, K), s: (K,), vt: (K, D)
    uty = u.T @ yc  # (K,)
    n = x.shape[0]
    scale = float(np.mean(s**2)) or 1.0
    best: tuple[float, float] | None = None
    for alpha in (a * scale for a in alphas):
        shrink = s**2 / (s**2 + alpha)  # (K,)
        fitted = u @ (shrink * uty)  # (N,)
        leverage = np.einsum("nk,k,nk->n", u, shrink, u) + 1.0 / n  # diag(H) with the intercept
        loo = (yc - fitted) / np.maximum(1.0 - leverage, 1e-6)
        rmse = float(np.sqrt(np.mean(loo**2)))
        if best is None or rmse < best[1]:
            best = (alpha, rmse)
    assert best is not None
    alpha, rmse = best
    weights = vt.T @ (s / (s**2 + alpha) * uty)  # (D,)
    return RidgeFit(weights, y_mean - float(x_mean @ weights), alpha, rmse)


def svd(x: Array) -> tuple[Array, Array, Array]:
    """Thin SVD computed by torch, which keeps to the calling thread's `torch.set_num_threads` (one in the learned
    reward thread): numpy's OpenBLAS starts its own threads for every call, and on two busy cores those spin and
    made a 200-item fit take 0.2-4 s instead of 0.02 s (bench/learned_reward.py)."""
    u, s, vt = torch.linalg.svd(torch.from_numpy(np.ascontiguousarray(x)), full_matrices=False)
    return u.numpy(), s.numpy(), vt.numpy()


def matmul(a: Array, b: Array) -> Array:
    """a @ b by torch, for the same reason as `svd`."""
    product = torch.from_numpy(np.ascontiguousarray(a)) @ torch.from_numpy(np.ascontiguousarray(b))
    return np.asarray(product.numpy(), dtype=np.float64)


def held_out_mask(
    ids: Sequence[int], share: float = HELD_OUT_SHARE, minimum: int = MIN_HELD_OUT
) -> npt.NDArray[np.bool_]:
    """Which items are held out: those with the largest hash of their id (a fixed pseudo-random order, so an
    item's place does not depend on when it was rated), `share` of them and at least `minimum`."""
    n = len(ids)
    k = min(n, max(minimum, round(share * n)))
    order = sorted(range(n), key=lambda i: _mix(ids[i]))
    mask = np.zeros(n, dtype=bool)
    mask[order[n - k :]] = True
    return mask


def _mix(value: int) -> int:
    """A fixed 32-bit integer hash (Knuth's multiplicative), so the split is the same in every process."""
    return (value * 2654435761 + 0x9E3779B9) % 2**32


def spearman(a: Sequence[float] | Array, b: Sequence[float] | Array) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than 3 items or a constant side."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if len(ra) < 3 or ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def pairwise_accuracy(predicted: Sequence[float] | Array, human: Sequence[float] | Array) -> float:
    """Of the pairs the humans ordered (different scores), the share the prediction orders the same way (a tie in
    the prediction counts half); NaN when no pair differs."""
    p, h = np.asarray(predicted, dtype=np.float64), np.asarray(human, dtype=np.float64)
    dp = np.sign(p[:, None] - p[None, :])  # (N, N)
    dh = np.sign(h[:, None] - h[None, :])
    upper = np.triu(np.ones_like(dh, dtype=bool), k=1) & (dh != 0)
    if not upper.any():
        return math.nan
    agree = np.where(dp == dh, 1.0, np.where(dp == 0, 0.5, 0.0))
    return float(agree[upper].mean())


def _ranks(x: Array) -> Array:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties share their average rank
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks

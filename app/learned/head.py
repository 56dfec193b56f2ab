"""The learned reward model as published: a fitted ridge head over sentence embeddings, its agreement with held-out
human scores, and the guard that keeps it from scoring what it knows nothing about.

A head is immutable; a refit publishes a new one with the next version number (`learned@vN` in storage).

The guard (reward hacking): a policy trained on a learned reward drifts toward whatever the head over-rates,
typically text unlike anything people rated. So a sample is not scored (and so never trained on that score) when
- its predicted score lies far outside the range of the human scores the head was fit on (more than
  `RANGE_MARGIN` of that range beyond either end), or
- its embedding is far from every rated one: its nearest fit item is more than `DISTANCE_FACTOR` times further
  away (cosine distance) than the fit items' own 95th-percentile nearest-neighbour distance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.learned.fit import Array, fit_ridge, held_out_mask, matmul, pairwise_accuracy, spearman

RANGE_MARGIN = 0.5
"""How far (as a share of the fit scores' range) a prediction may lie beyond it before it is not trusted."""
DISTANCE_FACTOR = 2.0
"""How many times the typical nearest-neighbour distance of the fit items a sample may lie from all of them."""
MAX_ANCHORS = 2000
"""The guard compares with at most this many fit items (an even subsample): its cost is anchors^2 at a fit."""


@dataclass(frozen=True)
class Agreement:
    """How the head agrees with human scores it was not fit on."""

    spearman: float
    pairwise: float
    """Share of human-ordered pairs the head orders the same way."""
    n: int


@dataclass(frozen=True)
class Verdict:
    """The head's answer for one sample: a score, or why it will not give one (`guarded`)."""

    score: float
    guarded: str | None = None


@dataclass(frozen=True)
class RewardHead:
    version: int
    weights: Array
    """(D,)"""
    bias: float
    fit_n: int
    """Human-rated samples it was fit on."""
    held_out: Agreement
    score_range: tuple[float, float]
    """Lowest and highest human score it was fit on."""
    anchors: Array
    """(M, D) unit-length embeddings of the fit items, at most MAX_ANCHORS of them (the guard's reference)."""
    max_distance: float
    """Cosine distance to the nearest anchor beyond which a sample is guarded."""
    alpha: float
    fit_s: float

    def predict(self, embeddings: Array) -> Array:
        """(N, D) -> (N,) raw predictions (not clipped, not guarded)."""
        return np.asarray(embeddings @ self.weights + self.bias, dtype=np.float64)

    def judge(self, embeddings: Array) -> list[Verdict]:
        """Scores for (N, D) embeddings, each checked by the guard (see the module docstring)."""
        raw = self.predict(embeddings)
        nearest = nearest_distance(embeddings, self.anchors)
        lo, hi = self.score_range
        margin = RANGE_MARGIN * max(hi - lo, 1e-6)
        out = []
        for value, distance in zip(raw.tolist(), nearest.tolist()):
            if not lo - margin <= value <= hi + margin:
                out.append(
                    Verdict(
                        value,
                        f"learned@v{self.version} predicted {value:+.2f}, far outside the fit "
                        f"scores {lo:+.2f}..{hi:+.2f}",
                    )
                )
            elif distance > self.max_distance:
                out.append(
                    Verdict(
                        value,
                        f"learned@v{self.version}: unlike every rated sample (distance "
                        f"{distance:.2f} > {self.max_distance:.2f})",
                    )
                )
            else:
                out.append(Verdict(value))
        return out


def fit_head(version: int, ids: Sequence[int], embeddings: Array, scores: Array) -> RewardHead:
    """Fit on the items that are not held out (`fit.held_out_mask`), measure agreement on the held-out ones."""
    start = time.perf_counter()
    held = held_out_mask(ids)
    train_x, train_y = embeddings[~held], scores[~held]
    ridge = fit_ridge(train_x, train_y)
    predicted = ridge.predict(embeddings[held])
    agreement = Agreement(
        spearman(predicted, scores[held]), pairwise_accuracy(predicted, scores[held]), int(held.sum())
    )
    step = max(1, -(-len(train_x) // MAX_ANCHORS))  # ceil: at most MAX_ANCHORS rows
    anchors = unit(train_x[::step])
    return RewardHead(
        version=version,
        weights=ridge.weights,
        bias=ridge.bias,
        fit_n=len(train_y),
        held_out=agreement,
        score_range=(float(train_y.min()), float(train_y.max())),
        anchors=anchors,
        max_distance=DISTANCE_FACTOR * typical_spacing(anchors),
        alpha=ridge.alpha,
        fit_s=time.perf_counter() - start,
    )


def unit(x: Array) -> Array:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float64)


def nearest_distance(x: Array, anchors: Array) -> Array:
    """(N, D), (M, D) unit rows -> (N,) cosine distance of each row of x to its nearest anchor."""
    sims = matmul(unit(x), anchors.T)  # (N, M)
    return np.asarray(1.0 - sims.max(axis=1), dtype=np.float64)


def typical_spacing(anchors: Array) -> float:
    """The 95th percentile of the anchors' distances to their nearest other anchor (a floor of 0.01)."""
    if len(anchors) < 2:
        return 1.0
    sims = matmul(anchors, anchors.T)  # (M, M)
    np.fill_diagonal(sims, -math.inf)
    return max(0.01, float(np.quantile(1.0 - sims.max(axis=1), 0.95)))

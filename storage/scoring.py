"""The mixed-mode rule that turns a sample's ratings into its training score.

If anyone has rated the sample by hand, its training score is the mean of the human scores (people
outrank reward models). Otherwise it is the mean of the automatic scores, from every reward model that
scored it, when automatic scores count at all (``use_auto_scores``; False is the human-only mode).
Otherwise the sample has no training score yet. The score is computed at claim time and frozen in the
batch (``samples.train_score``); ratings added later are kept and exported but do not change it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from storage.schema import HUMAN_SOURCE


def training_score(ratings: Iterable[tuple[str, float]], *, use_auto_scores: bool) -> float | None:
    """``ratings`` are (source, score) pairs of one sample."""
    human: list[float] = []
    auto: list[float] = []
    for source, score in ratings:
        (human if source == HUMAN_SOURCE else auto).append(score)
    if human:
        return math.fsum(human) / len(human)
    if auto and use_auto_scores:
        return math.fsum(auto) / len(auto)
    return None

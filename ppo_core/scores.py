"""Running score statistics for `use_score_scaling` / `use_score_norm` / `score_clip`.

TRL 0.11.4 crashes when score scaling is on; here the running moments are a plain parallel-variance update
(Chan et al. 1979) over every score seen, kept in float64 on the CPU.
"""

from __future__ import annotations

import torch


class RunningMoments:
    """Running mean and (unbiased) standard deviation of every value passed to `update`."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0  # population variance of the values seen
        self.count = 0

    @property
    def std(self) -> float:
        if self.count < 2:
            return 1.0
        return float((self.var * self.count / (self.count - 1)) ** 0.5)

    def update(self, xs: torch.Tensor) -> tuple[float, float]:
        """Add a batch of values; returns the batch's mean and unbiased std."""
        values = xs.detach().double().flatten().cpu()
        n = values.numel()
        batch_mean = float(values.mean())
        batch_var = float(values.var(unbiased=False))
        if self.count == 0:
            self.mean, self.var, self.count = batch_mean, batch_var, n
        else:
            total = self.count + n
            delta = batch_mean - self.mean
            m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
            self.mean += delta * n / total
            self.var, self.count = m2 / total, total
        batch_std = float(values.std()) if n > 1 else 0.0
        return batch_mean, batch_std


def scale_scores(
    scores: torch.Tensor,
    running: RunningMoments | None,
    use_score_norm: bool,
    score_clip: float | None,
    global_scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scale `scores (B,)` by the running std (and centre by the running mean with `use_score_norm`), then clip.

    `global_scores (P * B,)`: the scores of every process of a data-parallel run, which update the running moments
    (the same on every process); default `scores`."""
    if running is not None:
        running.update(scores if global_scores is None else global_scores)
        eps = torch.finfo(scores.dtype).eps
        scores = (scores - running.mean) / (running.std + eps) if use_score_norm else scores / (running.std + eps)
    if score_clip is not None:
        scores = scores.clamp(-score_clip, score_clip)
    return scores

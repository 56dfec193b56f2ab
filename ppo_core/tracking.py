"""`log_stats` backends: Python logging always, TensorBoard when `log_with="tensorboard"`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("ppo_core")

SUMMARY_KEYS = (
    "env/reward_mean",
    "objective/kl",
    "objective/kl_coef",
    "ppo/loss/total",
    "ppo/policy/clipfrac",
)


class TensorBoardTracker:
    """Scalars and histograms of each step under `<logging_dir>/<project>`."""

    def __init__(
        self, logging_dir: str, project: str, config: dict[str, Any], writer_kwargs: dict[str, Any] | None = None
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=os.path.join(logging_dir, project), **(writer_kwargs or {}))
        self.writer.add_text("config", "\n".join(f"{k}: {v}" for k, v in sorted(config.items())))

    def log(self, stats: dict[str, Any], step: int) -> None:
        for key, value in stats.items():
            if isinstance(value, int | float):
                self.writer.add_scalar(key, value, step)
            elif isinstance(value, np.ndarray) and value.size > 0 and np.isfinite(value).all():
                self.writer.add_histogram(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def reward_stats(rewards: Sequence[torch.Tensor] | torch.Tensor) -> dict[str, Any]:
    """`env/reward_mean`, `env/reward_std`, `env/reward_dist` of the scores passed to `step`."""
    values = torch.stack([torch.as_tensor(r).float().reshape(()) for r in rewards]).cpu()
    return {
        "env/reward_mean": float(values.mean()),
        "env/reward_std": float(values.std()) if len(values) > 1 else 0.0,
        "env/reward_dist": values.numpy(),
    }


def log_summary(stats: dict[str, Any], step: int) -> None:
    """One INFO line per step with the figures people watch."""
    parts = [f"{k}={stats[k]:.4g}" for k in SUMMARY_KEYS if isinstance(stats.get(k), int | float)]
    logger.info("step %d: %s", step, " ".join(parts))

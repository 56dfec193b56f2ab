"""`LengthSampler`: a random generation length per call, as in TRL."""

from __future__ import annotations

import numpy as np


class LengthSampler:
    """Uniform integer in `[min_value, max_value)` (max excluded, like TRL)."""

    def __init__(self, min_value: int, max_value: int) -> None:
        if max_value <= min_value:
            raise ValueError(f"max_value ({max_value}) must be greater than min_value ({min_value})")
        self.values = list(range(min_value, max_value))

    def __call__(self) -> int:
        return int(np.random.choice(self.values))

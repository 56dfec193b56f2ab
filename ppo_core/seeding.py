"""Seeding of every random number generator the trainer touches."""

from __future__ import annotations

from accelerate.utils import set_seed as accelerate_set_seed


def set_seed(seed: int) -> None:
    """Seed `random`, `numpy`, `torch` and every accelerator's generators (CUDA, XPU, NPU, ...) via accelerate.

    The same seed on every process of a data-parallel run (TRL 0.11 does the same): each process draws its own
    minibatch order from it, and generation differs between processes because their prompts do.
    """
    accelerate_set_seed(seed)

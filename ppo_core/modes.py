"""Train/eval modes for the passes of a PPO step, each restoring the model's previous modes afterwards.

Dropout off in the optimisation passes (the default) cannot simply be `model.eval()`: Hugging Face models only
recompute activations for gradient checkpointing in modules that are in training mode
(`GradientCheckpointingLayer`, or the model's own `self.gradient_checkpointing and self.training` test), so
`PPOConfig(gradient_checkpointing=True)` would silently do nothing. `optimisation_mode` puts the model in eval
mode and then marks only the modules that checkpoint as training: their submodules' dropout stays off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from torch import nn


@contextmanager
def module_mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Run a block in train (dropout on) or eval mode, restoring the previous mode afterwards."""
    was_training = model.training
    if was_training != training:
        model.train(training)
    try:
        yield
    finally:
        if model.training != was_training:
            model.train(was_training)


def eval_mode(model: nn.Module) -> AbstractContextManager[None]:
    """Run a block with dropout off (see `module_mode`)."""
    return module_mode(model, False)


@contextmanager
def optimisation_mode(model: nn.Module, dropout: bool) -> Iterator[None]:
    """Mode of the PPO optimisation passes: train mode with `dropout`, else eval mode with gradient checkpointing
    still active where it is enabled. Every module's own flag is restored afterwards."""
    if dropout:
        with module_mode(model, True):
            yield
        return
    before = [(m, m.training) for m in model.modules()]
    model.eval()
    for m in model.modules():
        if getattr(m, "gradient_checkpointing", False) is True:
            m.training = True  # this module only: it checkpoints; its dropout layers stay in eval mode
    try:
        yield
    finally:
        for m, training in before:
            m.training = training

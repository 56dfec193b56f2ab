"""Publishing new policy weights from the trainer thread to the generator thread, whole and versioned."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

from app.lora import trainable_state


@dataclass(frozen=True)
class PublishedPolicy:
    version: int
    state_dict: Mapping[str, torch.Tensor]
    """Read-only by convention: a private copy nobody writes to after publishing."""
    published_at: float
    """`time.monotonic()` when it was published."""


class PolicyPublisher:
    """The latest policy weights and their version, swapped under a lock as one object.

    The trainer publishes a *copy* of its weights (it keeps training its own tensors); readers get the whole
    (version, state_dict) pair from one `latest()` call, so they never see half-updated weights or a version
    number that does not belong to the weights beside it.
    """

    def __init__(self, version: int, state_dict: Mapping[str, torch.Tensor]) -> None:
        self._lock = threading.Lock()
        self._latest = PublishedPolicy(version, MappingProxyType(dict(state_dict)), time.monotonic())

    def publish(self, version: int, state_dict: Mapping[str, torch.Tensor]) -> None:
        entry = PublishedPolicy(version, MappingProxyType(dict(state_dict)), time.monotonic())
        with self._lock:
            if version <= self._latest.version:
                raise ValueError(f"version {version} is not newer than the published {self._latest.version}")
            self._latest = entry

    def latest(self) -> tuple[int, Mapping[str, torch.Tensor]]:
        with self._lock:
            entry = self._latest
        return entry.version, entry.state_dict

    def latest_entry(self) -> PublishedPolicy:
        with self._lock:
            return self._latest

    @property
    def version(self) -> int:
        with self._lock:
            return self._latest.version


def copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer, on the model's device (tied weights stay one copy)."""
    copies: dict[tuple[object, ...], torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype) if tensor.numel() else (name,)
            if key not in copies:
                copies[key] = tensor.detach().clone()
            out[name] = copies[key]
    return out


def publish_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What the generator needs to become this policy: a copy of every weight, or of a LoRA policy only the
    trained tensors (adapter and value head: the generator shares the frozen base, app.lora)."""
    if getattr(model, "is_peft_model", False):
        return trainable_state(model)
    return copy_state(model)


def load_published(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load what `publish_state` made: the whole state dict, or (a LoRA policy) its tensors by name, in place."""
    if not getattr(model, "is_peft_model", False):
        model.load_state_dict(state)
        return
    params = dict(model.named_parameters())
    unknown = [name for name in state if name not in params]
    if unknown:
        raise KeyError(f"published tensors the generator's model does not have: {unknown[:3]}")
    misfits = [name for name, tensor in state.items() if tensor.shape != params[name].shape]
    if misfits:  # checked before the first copy: a model is never left half loaded
        raise ValueError(f"published tensors of another shape than the generator's: {misfits[:3]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)

"""The frozen reference model: an independent copy, or one sharing (and freezing) its first layers."""

from __future__ import annotations

import copy
import re

from torch import nn

# Where the transformer blocks live in the parameter names of common architectures.
LAYER_PATTERNS = (
    r"transformer\.h\.(\d+)\.",  # GPT-2, GPT-J
    r"model\.layers\.(\d+)\.",  # Llama, Mistral, Qwen, SmolLM
    r"model\.decoder\.layers\.(\d+)\.",  # OPT
    r"gpt_neox\.layers\.(\d+)\.",  # GPT-NeoX, Pythia
    r"transformer\.blocks\.(\d+)\.",  # MPT
)


def create_reference_model(
    model: nn.Module, num_shared_layers: int | None = None, pattern: str | None = None
) -> nn.Module:
    """A frozen copy of `model` in eval mode.

    With `num_shared_layers=k`, the embeddings and the first k blocks are the same tensors in both models and are
    frozen in both (memory saving); the rest is an independent frozen copy.
    """
    ref = copy.deepcopy(model)
    if num_shared_layers is not None:
        _share_first_layers(model, ref, num_shared_layers, pattern)
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref.eval()


def _share_first_layers(model: nn.Module, ref: nn.Module, k: int, pattern: str | None) -> None:
    if k < 0:
        raise ValueError(f"num_shared_layers must be >= 0, got {k}")
    names = [name for name, _ in model.named_parameters()]
    regex = re.compile(pattern) if pattern else _detect_pattern(names)
    layers = {int(m.group(1)) for name in names if (m := regex.search(name))}
    if k > len(layers):
        raise ValueError(f"num_shared_layers={k} but the model has {len(layers)} layers")
    shared = _shared_names(names, regex, k)
    originals = dict(model.named_parameters())
    for name in shared:
        originals[name].requires_grad_(False)
        module_name, _, attr = name.rpartition(".")
        setattr(ref.get_submodule(module_name), attr, originals[name])


def _shared_names(names: list[str], regex: re.Pattern[str], k: int) -> list[str]:
    """Every parameter before the first one of block k (embeddings and blocks 0..k-1), in model order."""
    shared = []
    for name in names:
        match = regex.search(name)
        if match and int(match.group(1)) >= k:
            break
        shared.append(name)
    return shared


def _detect_pattern(names: list[str]) -> re.Pattern[str]:
    for candidate in LAYER_PATTERNS:
        regex = re.compile(candidate)
        if any(regex.search(name) for name in names):
            return regex
    raise ValueError("cannot find the transformer blocks of this architecture: pass pattern=")

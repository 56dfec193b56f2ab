"""The default collator and the dataloader, so the docs' loop works with variable-length queries."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

Collator = Callable[[list[Any]], Any]


def collate_lists(samples: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Columns as lists; token-id lists and tensors become 1-D LongTensors (no padding, any lengths).

    TRL 0.11.4's default collation stacks tensors and fails on queries of different lengths; the docs' loop
    wants `batch["input_ids"]` as a list of 1-D tensors and `batch["query"]` as a list of strings.
    """
    if not samples:
        return {}
    return {key: [_as_item(sample[key]) for sample in samples] for key in samples[0]}


def _as_item(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.long() if not value.is_floating_point() else value
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return torch.tensor(value, dtype=torch.long)
    return value


def make_dataloader(dataset: Any, batch_size: int, data_collator: Collator | None, seed: int) -> DataLoader:
    """Shuffled batches of `batch_size`; the incomplete last batch is dropped (a step needs a full batch)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=data_collator or collate_lists,
        generator=generator,
    )

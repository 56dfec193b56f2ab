"""How many samples a training batch may hold: at least the trainer's minimum, at most its maximum, a multiple of
its minibatch. A fixed batch (TRL's `batch_size`) is the case minimum == maximum."""

from __future__ import annotations

from dataclasses import dataclass

from storage.errors import InvalidInput
from storage.validation import check_int


@dataclass(frozen=True)
class BatchBounds:
    """A batch holds `low..high` samples, a multiple of `multiple`."""

    low: int
    high: int
    multiple: int = 1

    def fits(self, n: int) -> bool:
        """Whether a batch of `n` samples (e.g. a pending one formed before a restart) may be trained as it is."""
        return self.low <= n <= self.high and n % self.multiple == 0

    def take(self, available: int) -> int:
        """The size of the batch formed from `available` claimable samples; 0 when they are too few."""
        n = min(available, self.high)
        n -= n % self.multiple
        return n if n >= self.low else 0

    def describe(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}..{self.high}"


def batch_bounds(size: int, max_size: int | None = None, multiple: int = 1) -> BatchBounds:
    """Checked bounds; `InvalidInput` when `max_size < size` or either is not a multiple of `multiple`."""
    size = check_int(size, "size", minimum=1)
    multiple = check_int(multiple, "multiple", minimum=1)
    high = size if max_size is None else check_int(max_size, "max_size", minimum=size)
    if size % multiple or high % multiple:
        raise InvalidInput(f"size ({size}) and max_size ({high}) must be multiples of {multiple}")
    return BatchBounds(size, high, multiple)

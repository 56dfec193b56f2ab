"""What a failed training attempt means for its batch, when to try again, and when to stop trying.

A fault is either the batch's (**data**: it would fail the same way on any machine, so retrying burns nothing but
time) or the trainer's (**infrastructure**: a full disk, out of memory, a database error, anything unknown). Only a
data fault may mark a batch failed; an infrastructure fault puts it back to pending, because the next attempt, or
the one after the admin freed the disk, trains it. Data faults are:

- a `ValueError` raised by the PPO step itself, e.g. ppo_core's validation of the batch's tensors (a token id
  outside the vocabulary, an empty response);
- a `NonFiniteError` (NaN/inf in the step), but only when it repeats on the same batch: the retried step is the
  same step (the whole trainer state, RNG included, is restored), so a second NaN is the data's.

A `ValueError` while recording the step (storage's own checks, a stale claim) is not the batch's fault.

Retries back off exponentially (`retry_backoff_s`, doubling, at most `max_backoff_s`); after
`pause_after_failures` failures in a row the trainer pauses itself with a reason fit for the dashboard
(`app.errors.public_text`: the error's type and, for an `OSError`, its errno text; never a server path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from app.errors import public_text
from ppo_core.optimize import NonFiniteError

FaultKind = Literal["data", "infrastructure"]


def classify(err: BaseException, during_step: bool, nonfinite_before: bool) -> FaultKind:
    """`during_step`: raised by the PPO step (not while recording it); `nonfinite_before`: this batch already
    failed with a NonFiniteError."""
    if not during_step or not isinstance(err, ValueError):
        return "infrastructure"
    if isinstance(err, NonFiniteError):
        return "data" if nonfinite_before else "infrastructure"
    return "data"


def backoff_delay(failures: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after the `failures`-th failure in a row: base, 2 x base, 4 x base, ..., at most cap."""
    if failures <= 0:
        return 0.0
    return min(cap_s, base_s * 2.0 ** min(failures - 1, 60))


def pause_reason(failures: int, err: BaseException) -> str:
    """For the dashboard: `5 steps failed in a row (OSError: No space left on device); see the server log`."""
    return f"{failures} steps failed in a row ({public_text(err)}); see the server log"


@dataclass
class FailureTracker:
    """Consecutive failures and batches that met a NaN; owned by the trainer thread."""

    pause_after: int
    base_s: float
    cap_s: float
    consecutive: int = 0
    nonfinite_batches: set[int] = field(default_factory=set)

    def failed(self, batch_id: int, err: BaseException, during_step: bool) -> FaultKind:
        """Count one failed attempt on `batch_id`; returns what it means for the batch."""
        self.consecutive += 1
        kind = classify(err, during_step, batch_id in self.nonfinite_batches)
        if isinstance(err, NonFiniteError) and during_step:
            self.nonfinite_batches.add(batch_id)
        if kind == "data":
            self.nonfinite_batches.discard(batch_id)
        return kind

    def succeeded(self, batch_id: int) -> None:
        self.consecutive = 0
        self.nonfinite_batches.discard(batch_id)

    def reset(self) -> None:
        self.consecutive = 0

    @property
    def delay_s(self) -> float:
        return backoff_delay(self.consecutive, self.base_s, self.cap_s)

    @property
    def should_pause(self) -> bool:
        return self.consecutive >= self.pause_after

"""The rating mode in force (`single` or `pairwise`): set by `--mode`, switched at run time by an admin.

Readers (the service, the generator, the trainer's "do automatic scores count" question) call `current()` or
`pairwise`; `set` swaps the value whole under a lock. Nothing else changes with the mode: ratings and comparisons
already stored stay, and both kinds keep training (see docs/pairwise.md).
"""

from __future__ import annotations

import threading
import typing
from collections.abc import Callable

from app.errors import UserError
from app.settings import RatingModeName

MODES: tuple[str, ...] = typing.get_args(RatingModeName)


class RatingMode:
    def __init__(self, initial: RatingModeName = "single") -> None:
        if initial not in MODES:
            raise ValueError(f"rating mode must be one of {', '.join(MODES)}, got {initial!r}")
        self._lock = threading.Lock()
        self._mode: RatingModeName = initial

    def current(self) -> RatingModeName:
        with self._lock:
            return self._mode

    @property
    def pairwise(self) -> bool:
        return self.current() == "pairwise"

    def set(self, mode: object) -> RatingModeName:
        """Switch to ``mode`` (text from a browser: checked against the known modes); returns the previous one."""
        if not isinstance(mode, str) or mode not in MODES:
            raise UserError(f"the rating mode must be one of {', '.join(MODES)}")
        with self._lock:
            previous, self._mode = self._mode, typing.cast(RatingModeName, mode)
        return previous


def trains_on_auto_scores(reward_is_auto: Callable[[], bool], mode: RatingMode) -> Callable[[], bool]:
    """The trainer's "do automatic scores count" question: yes when the reward source is automatic, and in pairwise
    mode, whose Bradley-Terry rewards are automatic scores. One rule for the all-in-one app and `rlhf-live train`."""
    return lambda: reward_is_auto() or mode.pairwise

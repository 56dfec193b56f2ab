"""The reward source the app scores with: built once at start-up, switched at run time only among the sources the
operator configured, and built for a switch in the reward thread, never in a browser handler.

`module:function` imports a module and a classifier folder loads a model, so which specs can be built is the
operator's choice (`--reward` and `--reward-choices`), never the browser's: `RewardControl.request` accepts only
those, and records the wish; the reward thread builds it (`build_source`) on its next tick and swaps it in.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from app.errors import UserError
from ppo_core.rewards import Reward, make_reward
from storage.validation import MAX_SOURCE_CHARS

log = logging.getLogger(__name__)

HUMAN = "human"
LEARNED = "learned"
"""The reward model learned from the raters (app/learned/) scores every sample no person rated."""
HUMAN_LEARNED = "human+learned"
"""People first: the learned model scores only what nobody rated within `--learned-wait-s`."""
LEARNED_SPECS = (LEARNED, HUMAN_LEARNED)


def source_name(reward: Reward) -> str:
    """The reward's name as a storage source (within storage's length limit, stable for the same reward)."""
    name = reward.name.strip()
    if len(name) <= MAX_SOURCE_CHARS:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_SOURCE_CHARS - 9]}#{digest}"


def build_reward(spec: str) -> Reward | None:
    """None for `human`; else a Reward from ppo_core (ValueError with a clear message for a bad spec).

    The message may name a path or an import error: it is for the operator's terminal and the server log, never
    for a browser."""
    spec = spec.strip()
    if spec == HUMAN:
        return None
    try:
        return make_reward(spec)
    except ValueError:
        raise
    except Exception as err:  # e.g. a classifier folder that transformers cannot load
        raise ValueError(f"cannot build reward {spec!r}: {type(err).__name__}: {err}") from err


@dataclass(frozen=True)
class RewardSource:
    spec: str
    """What the operator configured (`human`, `vader`, ...)."""
    reward: Reward | None
    source: str
    """The source name stored with its scores; `human` in human-only mode; `learned` for the learned modes (each
    fit stores its scores as `learned@vN`)."""

    @property
    def learned(self) -> bool:
        """The learned reward model scores (app/learned/worker.py), not the reward thread."""
        return self.spec in LEARNED_SPECS

    @property
    def auto(self) -> bool:
        """Automatic scores count for training (every mode but `human`)."""
        return self.reward is not None or self.learned


def build_source(spec: str) -> RewardSource:
    """Build the reward of `spec` (slow for a classifier). The composition root calls it for `--reward` at
    start-up, where a ValueError becomes a one-line StartupError; the reward thread calls it for a switch."""
    if spec.strip() in LEARNED_SPECS:  # nothing to build here: the learned reward thread does the scoring
        return RewardSource(spec.strip(), None, LEARNED)
    reward = build_reward(spec)
    return RewardSource(spec.strip(), reward, HUMAN if reward is None else source_name(reward))


class RewardControl:
    """The current reward source, swapped whole under a lock, and the switch an admin asked for.

    Readers (the trainer, the dashboard) call `current()`; an admin's `request(spec)` records the wish and wakes
    the subscribed reward thread, which builds the source (`take_request`, `build_source`) and swaps it in with
    `complete`, or keeps the current one with `fail`. The last request wins.
    """

    def __init__(self, initial: RewardSource | str, choices: Sequence[str] = ()) -> None:
        current = initial if isinstance(initial, RewardSource) else build_source(initial)
        self._lock = threading.Lock()
        self._current = current
        self._choices = tuple(dict.fromkeys([*(c.strip() for c in choices), current.spec]))
        self._requested: str | None = None
        self._switch_error: str | None = None
        self._listeners: list[threading.Event] = []

    # ------------------------------------------------------------------------------------------- readers
    def current(self) -> RewardSource:
        with self._lock:
            return self._current

    def use_auto_scores(self) -> bool:
        return self.current().auto

    @property
    def choices(self) -> tuple[str, ...]:
        """The only specs `request` accepts: the configured choices and the start-up `--reward`."""
        return self._choices

    @property
    def requested(self) -> str | None:
        """The spec an admin asked for that the reward thread has not swapped in yet (None: no switch pending)."""
        with self._lock:
            return self._requested

    @property
    def switching(self) -> bool:
        return self.requested is not None

    @property
    def switch_error(self) -> str | None:
        """Why the last switch failed, safe to show (no paths or exception text); None after a good switch."""
        with self._lock:
            return self._switch_error

    # ------------------------------------------------------------------------------------------ the admin
    def request(self, spec: str) -> None:
        """Ask for `spec`, one of `choices` (else UserError, nothing recorded); it is built in the reward thread.

        Asking for the current source cancels a pending switch."""
        clean = spec.strip() if isinstance(spec, str) else ""
        if clean not in self._choices:
            raise UserError(f"the reward source must be one of: {', '.join(self._choices)}")
        with self._lock:
            self._requested = None if clean == self._current.spec else clean
            listeners = list(self._listeners)
        for event in listeners:
            event.set()
        log.info("reward source %s requested", clean)

    # ------------------------------------------------------------------------------------ the reward thread
    def subscribe(self, wake: threading.Event) -> None:
        """`wake` is set at every request (the reward worker's wake event)."""
        with self._lock:
            self._listeners.append(wake)

    def take_request(self) -> str | None:
        """The spec to build now, if a switch is pending (it stays pending until `complete` or `fail`)."""
        return self.requested

    def complete(self, built: RewardSource) -> bool:
        """Swap in `built` if it is still what was asked for last; False (nothing changed) when a newer request
        or a cancel came while it was being built."""
        with self._lock:
            if self._requested != built.spec:
                return False
            self._current, self._requested, self._switch_error = built, None, None
        log.info("reward source is now %s", built.source)
        return True

    def fail(self, spec: str) -> str:
        """A build of `spec` failed: keep the current source, drop the request; returns the safe message."""
        with self._lock:
            message = f"could not switch the reward source to {spec}; still using {self._current.spec}"
            if self._requested == spec:
                self._requested = None
            self._switch_error = message
        return message

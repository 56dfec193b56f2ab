"""Calls with a time limit, for reward code the app does not control (`module:function`, a classifier).

Python cannot kill a thread, so a call runs in a daemon thread of its own and is *abandoned* when it runs past
the limit: the caller goes on, the thread keeps running until the call returns (or the process ends), and its
result is thrown away. Abandoned threads still running are counted, so the caller can stop making calls before
they pile up (`saturated`).

Why threads and not a subprocess, which could be killed: a reward is a live Python object built in this process
(a transformers pipeline with its weights, a function from an imported module). A subprocess would have to build
it again (the classifier's memory twice, seconds of start-up per restart) and ship every batch of texts across a
pipe, and `module:function` rewards would need to be importable and picklable there. A hang is the rare case;
the cap on abandoned threads bounds what it can cost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.05  # how often a wait looks at the stop event
TIMEOUT_REASON = "no answer within "


class CallTimedOut(Exception):
    """The call ran past the time limit and was abandoned (its thread may still be running)."""


class CallInterrupted(Exception):
    """The stop event was set while waiting; the call was abandoned, and says nothing about its inputs."""


class _Box(Generic[T]):
    """What the call's thread hands back: a value or an exception, and a flag set when it is done."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None


class TimedCalls:
    """Run calls in daemon threads, at most `timeout_s` each; `saturated` once `max_hung` abandoned calls are
    still running."""

    def __init__(self, timeout_s: float, max_hung: int, name: str = "timed-call") -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if max_hung < 1:
            raise ValueError(f"max_hung must be >= 1, got {max_hung!r}")
        self.timeout_s = float(timeout_s)
        self.max_hung = max_hung
        self.name = name
        self._abandoned: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def hung(self) -> int:
        """Abandoned calls whose threads are still running."""
        with self._lock:
            self._abandoned = [t for t in self._abandoned if t.is_alive()]
            return len(self._abandoned)

    @property
    def saturated(self) -> bool:
        return self.hung >= self.max_hung

    def call(self, fn: Callable[[], T], stop: threading.Event | None = None) -> T:
        """`fn()`'s value, or its exception re-raised here; CallTimedOut past the limit, CallInterrupted when
        `stop` is set first."""
        box: _Box[T] = _Box()
        thread = threading.Thread(target=_run, args=(fn, box), name=self.name, daemon=True)
        thread.start()
        deadline = time.monotonic() + self.timeout_s
        while not box.done.wait(max(0.0, min(_POLL_S, deadline - time.monotonic()))):
            if stop is not None and stop.is_set():
                self._abandon(thread)
                raise CallInterrupted("stopped while waiting for the call")
            if time.monotonic() >= deadline:
                self._abandon(thread)
                raise CallTimedOut(f"{TIMEOUT_REASON}{self.timeout_s:g} s")
        if box.error is not None:
            raise box.error
        return box.value  # type: ignore[return-value]  # set when done and no error

    def _abandon(self, thread: threading.Thread) -> None:
        with self._lock:
            self._abandoned.append(thread)


def _run(fn: Callable[[], T], box: _Box[T]) -> None:
    try:
        box.value = fn()
    except BaseException as err:  # handed to the caller, who re-raises it in its own thread; a SystemExit or
        # KeyboardInterrupt raised by reward code must not stop the caller's thread, so it is handed over wrapped
        box.error = err if isinstance(err, Exception) else RuntimeError(f"the call raised {type(err).__name__}")
    finally:
        box.done.set()

"""A background thread that loops until its stop event is set, recording (never swallowing) its errors."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from app.errors import public_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorRecord:
    worker: str
    message: str
    """The whole error, for the server log."""
    public: str
    """What a browser may see (`app.errors.public_text`): no paths, reprs or URLs."""
    at: datetime

    def __str__(self) -> str:
        return f"{self.worker}: {self.public} ({self.at:%H:%M:%S} UTC)"


class ErrorLog:
    """The most recent errors of all workers, for the dashboard (thread-safe)."""

    def __init__(self, keep: int = 20) -> None:
        self._lock = threading.Lock()
        self._records: list[ErrorRecord] = []
        self._keep = keep

    def record(self, worker: str, err: BaseException) -> ErrorRecord:
        log.error("%s failed: %s: %s", worker, type(err).__name__, err, exc_info=err)
        entry = ErrorRecord(worker, f"{type(err).__name__}: {err}", public_text(err), datetime.now(UTC))
        with self._lock:
            self._records = [*self._records, entry][-self._keep :]
        return entry

    def last(self) -> ErrorRecord | None:
        with self._lock:
            return self._records[-1] if self._records else None

    def all(self) -> list[ErrorRecord]:
        with self._lock:
            return list(self._records)


class Worker:
    """Subclasses implement `tick()` (one unit of work; True when it did something) and may override `setup()`
    and `teardown()`, which run in the thread. An exception in `tick()` is recorded and the loop goes on after a
    back-off; one in `setup()`/`teardown()` is recorded and ends the thread (`alive` turns False)."""

    name = "worker"
    error_backoff_s = 2.0
    nice = 10
    """Workers run at a lower CPU priority than the threads serving raters (Linux: per thread, inherited by the
    threads torch starts from it), so a score click is not queued behind generation or a PPO step."""

    def __init__(self, errors: ErrorLog, poll_seconds: float) -> None:
        self.errors = errors
        self.poll_seconds = poll_seconds
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        """Set by others (e.g. a new rating) to cut the idle wait short."""
        self.fatal: ErrorRecord | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------------- in the thread
    def setup(self) -> None:
        """Runs first, in the worker's thread (e.g. thread-local torch settings)."""

    def tick(self) -> bool:
        raise NotImplementedError

    def teardown(self) -> None:
        """Runs last, in the worker's thread, also after a fatal error."""

    def _run(self) -> None:
        try:
            _lower_priority(self.nice)
            self.setup()
            while not self.stop_event.is_set():
                if not self._safe_tick():
                    self.wake.wait(self.poll_seconds)
                    self.wake.clear()
        except BaseException as err:
            self.fatal = self.errors.record(self.name, err)
        finally:
            try:
                self.teardown()
            except BaseException as err:
                self.fatal = self.errors.record(self.name, err)

    def _safe_tick(self) -> bool:
        try:
            return self.tick()
        except Exception as err:
            self.errors.record(self.name, err)
            self.stop_event.wait(self.error_backoff_s)
            return True

    # -------------------------------------------------------------------------------------- from outside
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop (it finishes its current unit of work first)."""
        self.stop_event.set()
        self.wake.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when it has ended (or never started)."""
        if self._thread is None:
            return True
        start = time.monotonic()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s did not stop within %.0f s", self.name, time.monotonic() - start)
            return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _lower_priority(nice: int) -> None:
    """Renice the calling thread (Linux threads are scheduled as tasks); a no-op where that is not possible."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as err:
        log.debug("could not lower the priority of this thread: %s", err)

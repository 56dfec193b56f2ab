"""This process's owner id and heartbeat: what its claims carry, so other processes know whether it lives.

Every process (`rlhf-live`, `rlhf-live serve`, `rlhf-live train`) registers an owner row when its service starts
and refreshes its heartbeat every `--heartbeat-s` from a thread of its own (not the trainer's: a long PPO step does
not stop it). A process silent for `--heartbeat-expiry-s` is dead to the others: start-up recovery releases its
training claims (storage.owners). A process with a trainer takes the database's one trainer slot; a restart after
a crash on another machine waits up to the expiry for the dead trainer's slot to free itself (on the same machine
and PID namespace, an owner whose PID no longer runs is dead at once), a second live trainer is refused.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from sqlalchemy.orm import Session

from app.errors import StartupError
from app.settings import AppSettings
from app.worker import ErrorLog, Worker
from storage.engine import Database
from storage.owners import RoleTaken, beat, live_owners, mark_stopped, register_owner

log = logging.getLogger(__name__)


def this_machine() -> str:
    """The host name and PID namespace: two processes with the same answer see each other's PIDs."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "?"
    return f"{socket.gethostname()} {namespace}"[:300]


def pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it runs
        return True
    return True


def new_owner_id(role: str) -> str:
    """`train@gpu-box:4242:1a2b3c4d`: readable in the batch table, unique per start."""
    return f"{role}@{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat(Worker):
    """Registers the owner on `start()` (in the caller's thread, before any other worker runs), beats in its
    thread, and marks the owner stopped when it stops."""

    name = "heartbeat"
    nice = 0  # a starved heartbeat would declare a live process dead

    def __init__(self, db: Database, settings: AppSettings, errors: ErrorLog, role: str, *, trainer: bool) -> None:
        super().__init__(errors, settings.heartbeat_s)
        self.db = db
        self.role = role
        self.trainer = trainer
        self.owner = new_owner_id(role)
        self.expiry_s = settings.heartbeat_expiry_s
        self.registered = False

    def register(self) -> None:
        """Register the owner; with a trainer, wait up to the expiry (plus a beat) for a dead trainer's slot."""
        deadline = time.monotonic() + self.expiry_s + 2 * self.poll_seconds
        machine = this_machine()
        while True:
            try:
                with self.db.session_factory.begin() as s:
                    self._reap_dead_neighbours(s, machine)
                    register_owner(
                        s,
                        self.owner,
                        self.role,
                        trainer=self.trainer,
                        expiry_s=self.expiry_s,
                        machine=machine,
                        pid=os.getpid(),
                    )
                break
            except RoleTaken as err:
                if time.monotonic() > deadline:
                    raise StartupError(f"{err}; stop it first (or wait {self.expiry_s:g} s after it died)") from err
                log.warning("%s; waiting for its heartbeat to expire", err)
                time.sleep(min(1.0, self.poll_seconds))
        self.registered = True
        log.info("registered as %s (heartbeat every %g s, expiry %g s)", self.owner, self.poll_seconds, self.expiry_s)

    def _reap_dead_neighbours(self, s: Session, machine: str) -> None:
        """Owners on this machine whose process is gone (a kill -9, a crash) are dead now, not after the expiry:
        a restart on the same machine goes on at once. Only with the same PID namespace, where PIDs mean the same."""
        for other in live_owners(s, self.expiry_s):
            if other.machine == machine and other.pid != os.getpid() and not pid_running(other.pid):
                mark_stopped(s, other.owner)
                log.warning("owner %s (pid %d, this machine) is gone; its claims are free", other.owner, other.pid)

    def start(self) -> None:
        if not self.registered:
            self.register()
        super().start()

    def tick(self) -> bool:
        with self.db.session_factory.begin() as s:
            alive = beat(s, self.owner)
        if not alive:
            log.error("owner %s was marked stopped by someone else; its claims may have been released", self.owner)
        return False

    def teardown(self) -> None:
        with self.db.session_factory.begin() as s:
            mark_stopped(s, self.owner)

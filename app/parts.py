"""The parts `FeedbackService` is built from, as the service sees them (typing only: no torch here).

`app.bootstrap.build_service` wires the real ones (threads that own models); tests hand the service fakes with
the same shape, so access rules, leases and fault handling are tested without loading a model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.access import Access
from app.rating_mode import RatingMode
from app.reward_worker import RewardControl
from app.staleness import StalenessWindow
from app.startup import PromptSet
from app.views import Comparison, LearnedRewardView
from app.worker import ErrorLog, ErrorRecord
from storage.engine import Database


class WorkerPart(Protocol):
    """A background thread: started once, stopped on an event, joined."""

    wake: threading.Event
    fatal: ErrorRecord | None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...
    @property
    def alive(self) -> bool: ...


class GeneratorStatusView(Protocol):
    @property
    def version(self) -> int: ...
    @property
    def ready(self) -> int: ...
    @property
    def target(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def serving(self) -> int: ...
    @property
    def in_flight(self) -> int: ...


class GeneratorPart(WorkerPart, Protocol):
    @property
    def status(self) -> GeneratorStatusView: ...
    def compare(self, prompt: str) -> Comparison: ...


class TrainerStatusView(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def last_step_s(self) -> float | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def paused_reason(self) -> str | None: ...


class TrainerPart(WorkerPart, Protocol):
    paused: threading.Event

    @property
    def status(self) -> TrainerStatusView: ...
    def request_checkpoint(self) -> Path: ...


class RewardStatusView(Protocol):
    @property
    def stopped(self) -> str | None: ...


class RewardWorkerPart(WorkerPart, Protocol):
    @property
    def status(self) -> RewardStatusView: ...


class LearnedRewardPart(WorkerPart, Protocol):
    """The learned reward thread (app/learned/worker.py)."""

    @property
    def status(self) -> LearnedRewardView: ...


class SwitchAnnouncer(Protocol):
    """Tells the other processes of a split deployment about an admin's switch (app.shared_switches)."""

    def announce(self, name: str, value: str, changed_by: str) -> None: ...


class PublisherPart(Protocol):
    @property
    def version(self) -> int: ...


@dataclass
class ServiceParts:
    """Everything the service needs, built by the composition root (or by a test)."""

    db: Database
    prompts: PromptSet
    access: Access
    errors: ErrorLog
    rewards: RewardControl
    publisher: PublisherPart
    generator: GeneratorPart
    trainer: TrainerPart
    reward_worker: RewardWorkerPart
    window: StalenessWindow
    extra_workers: tuple[WorkerPart, ...] = ()
    """Started before and stopped after the three workers (app.ownership's heartbeat, app.shared_weights' follower)."""
    mode: RatingMode | None = None
    """The rating mode shared with the generator and trainer; None = a fresh one from `settings.mode`."""
    learned: LearnedRewardPart | None = None
    """The learned reward thread, when a learned reward source is configured (`AppSettings.learned_enabled`)."""
    switches: SwitchAnnouncer | None = None
    """A front-end of a split deployment: where its admins' switches go so the other processes follow."""

"""Fake parts for `FeedbackService`: the real storage (SQLite in tmp_path), access rules and reward control, with
workers that load no model. For tests of access rules, leases and error handling that need no torch model.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.access import Access
from app.parts import ServiceParts
from app.reward_source import RewardControl
from app.service import FeedbackService
from app.settings import AppSettings
from app.staleness import StalenessWindow
from app.startup import import_prompts, open_store
from app.views import Comparison
from app.worker import ErrorLog, ErrorRecord
from storage.prompts import prompts_for_generation
from storage.records import NewSample
from storage.samples import add_samples


class FakeWorker:
    """A worker that never runs a thread: start/stop/join only flip flags."""

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.fatal: ErrorRecord | None = None
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def join(self, timeout: float | None = None) -> bool:
        return True

    @property
    def alive(self) -> bool:
        return self.started and not self.stopped


@dataclass(frozen=True)
class FakeGeneratorStatus:
    version: int = 0
    ready: int = 0
    target: int = 4
    state: str = "idle"
    serving: int = 0
    in_flight: int = 0


class FakeGenerator(FakeWorker):
    def __init__(self) -> None:
        super().__init__()
        self.status = FakeGeneratorStatus()
        self.compared: list[str] = []

    def compare(self, prompt: str) -> Comparison:
        self.compared.append(prompt)
        return Comparison(prompt, 0, "first answer", self.status.version, "current answer")


@dataclass(frozen=True)
class FakeTrainerStatus:
    state: str = "waiting"
    last_step_s: float | None = None
    last_error: str | None = None
    paused_reason: str | None = None


class FakeTrainer(FakeWorker):
    def __init__(self, checkpoint_dir: Path) -> None:
        super().__init__()
        self.paused = threading.Event()
        self.status = FakeTrainerStatus()
        self.checkpoint_dir = checkpoint_dir
        self.checkpoints = 0

    def request_checkpoint(self) -> Path:
        self.checkpoints += 1
        return self.checkpoint_dir / f"v{self.checkpoints}"


@dataclass(frozen=True)
class FakeRewardStatus:
    stopped: str | None = None


class FakeRewardWorker(FakeWorker):
    def __init__(self) -> None:
        super().__init__()
        self.status = FakeRewardStatus()


@dataclass
class FakePublisher:
    version: int = 0


def add_fake_samples(service: FeedbackService, n: int, version: int = 0) -> list[int]:
    """Store `n` generated-looking samples (what the fake generator does not make)."""
    with service.db.session_factory.begin() as s:
        prompt = prompts_for_generation(s, 1)[0]
        made = [NewSample(prompt.id, f"answer {i}", [1, 2, 3], [4, 5], version, [-1.0, -1.0]) for i in range(n)]
        return add_samples(s, made)


def fake_service(settings: AppSettings, **overrides: Any) -> FeedbackService:
    """A service over real storage and access rules, with fake workers (see the module docstring)."""
    settings = replace(settings, **overrides)
    db = open_store(settings)
    parts = ServiceParts(
        db=db,
        prompts=import_prompts(db, settings),
        access=Access([u for u, _ in settings.auth], settings.admins, settings.admin_token),
        errors=ErrorLog(),
        rewards=RewardControl(settings.reward, settings.reward_choices),
        publisher=FakePublisher(),
        generator=FakeGenerator(),
        trainer=FakeTrainer(settings.checkpoint_dir),
        reward_worker=FakeRewardWorker(),
        window=StalenessWindow(settings.max_staleness),
    )
    return FeedbackService(settings, parts)

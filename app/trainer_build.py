"""Building the trainer thread, for both processes that train: the all-in-one app (app.bootstrap) and
`rlhf-live train` (app.roles). They load the same models and build the same `TrainerWorker`; only the publisher
(in-process, or one that also writes the weights folder) and the rewards it trains on differ."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from app.checkpoints import ResumePoint, find_resume_point
from app.models import Models, Runtime, choose_runtime, load_models
from app.policy import PolicyPublisher, publish_state
from app.settings import AppSettings
from app.staleness import StalenessWindow
from app.startup import resume_version
from app.trainer_worker import TrainerWorker
from app.worker import ErrorLog
from storage.engine import Database


@dataclass(frozen=True)
class LoadedTraining:
    """What a trainer starts from: the checkpoint it resumes (None for a new run), where it runs, the version it
    resumes as (app.startup.resume_version: past any version a crash lost) and the loaded models."""

    resume: ResumePoint | None
    runtime: Runtime
    version: int
    models: Models

    @property
    def checkpoint_version(self) -> int | None:
        """The version of the checkpoint resumed, None for a new run."""
        return self.resume.state.version if self.resume else None

    def window(self, settings: AppSettings) -> StalenessWindow:
        """The staleness window, told which version was loaded and which one it resumes as."""
        loaded = self.checkpoint_version or 0
        return StalenessWindow(settings.max_staleness, checkpoint_version=loaded, resumed_as=self.version)

    def published_state(self) -> dict[str, torch.Tensor]:
        """What the publisher starts with: the trainer policy's weights (of a LoRA policy: adapter and value head)."""
        trainer = self.models.trainer
        return publish_state(trainer.accelerator.unwrap_model(trainer.model))


def load_training(db: Database, settings: AppSettings) -> LoadedTraining:
    """Find the checkpoint to resume and load the models (ModelLoadError or ValueError: one line for the CLI)."""
    resume = find_resume_point(db, settings.model)
    runtime = choose_runtime(settings)
    version = resume_version(db, resume)
    return LoadedTraining(resume, runtime, version, load_models(settings, runtime, resume, version))


def build_trainer_worker(
    db: Database,
    settings: AppSettings,
    loaded: LoadedTraining,
    publisher: PolicyPublisher,
    window: StalenessWindow,
    errors: ErrorLog,
    use_auto_scores: Callable[[], bool],
    owner: str,
    make_worker: Callable[..., TrainerWorker] = TrainerWorker,
) -> TrainerWorker:
    """The trainer thread (not started) over the loaded models; its claims carry `owner` (app.ownership).
    `make_worker`: its class (rank 0 of several processes: app.distributed_trainer)."""
    return make_worker(
        db,
        loaded.models.trainer,
        publisher,
        settings,
        loaded.runtime,
        errors,
        use_auto_scores,
        loaded.checkpoint_version,
        window,
        owner=owner,
    )

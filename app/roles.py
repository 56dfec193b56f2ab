"""The app as separate processes sharing one database and one weights folder (docs/deployment.md).

- `rlhf-live serve`: the rating page, a generator and a reward worker. No trainer: it follows the versions that
  `rlhf-live train` publishes (app.shared_weights; with --lora the adapter only, app.front_end_models), and its
  page's training controls say where training runs.
  Any number of them may share a database: rater leases and every claim are compare-and-set rows (storage).
- `rlhf-live train`: the trainer alone (claims batches, steps, checkpoints, publishes versions); one per database
  (its heartbeat row holds the trainer slot, app.ownership).
- `rlhf-live` with no role: everything in one process, as app.bootstrap wires it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from app.access import Access
from app.errors import StartupError, UserError
from app.front_end_models import load_front_end_models
from app.generator import GeneratorWorker
from app.models import ModelLoadError, choose_runtime
from app.ownership import Heartbeat
from app.parts import ServiceParts
from app.policy import PolicyPublisher
from app.rating_mode import RatingMode, trains_on_auto_scores
from app.reward_source import RewardControl, build_source
from app.reward_worker import RewardWorker
from app.service import FeedbackService
from app.settings import AppSettings
from app.shared_switches import SharedSwitches
from app.shared_weights import SharedPublisher, WeightsFollower
from app.staleness import StalenessWindow
from app.startup import PromptSet, first_line, import_prompts, open_store
from app.trainer_build import build_trainer_worker, load_training
from app.trainer_worker import TrainerWorker
from app.weights_kind import WeightsKind
from app.worker import ErrorLog, ErrorRecord
from storage.engine import Database
from storage.owners import live_owners

log = logging.getLogger(__name__)

ROLES = ("serve", "train")
TRAINING_ELSEWHERE = "training runs in the `rlhf-live train` process; pause, resume and checkpoint it there"


# ------------------------------------------------------------------------------------------------- serve
class _RemotePause(threading.Event):
    """The page's pause switch in a front-end: training is another process's, so setting it is refused."""

    def set(self) -> None:
        raise UserError(TRAINING_ELSEWHERE)


@dataclass(frozen=True)
class RemoteTrainerStatus:
    state: str
    last_step_s: float | None = None
    last_error: str | None = None
    paused_reason: str | None = None


class RemoteTrainer:
    """The trainer part of a front-end: no thread; its state is whether a live trainer holds the slot."""

    def __init__(self, db: Database, expiry_s: float) -> None:
        self.db, self.expiry_s = db, expiry_s
        self.wake = threading.Event()
        self.paused: threading.Event = _RemotePause()
        self.fatal: ErrorRecord | None = None

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool:
        return True

    @property
    def alive(self) -> bool:
        return True

    @property
    def status(self) -> RemoteTrainerStatus:
        with self.db.read_session_factory.begin() as s:
            trainer = any(o.trainer for o in live_owners(s, self.expiry_s))
        return RemoteTrainerStatus("waiting" if trainer else "stopped")

    def request_checkpoint(self) -> Path:
        raise UserError(TRAINING_ELSEWHERE)


def import_prompts_shared(db: Database, settings: AppSettings) -> PromptSet:
    """`import_prompts`, once more when another process inserted the same rows at the same moment."""
    try:
        return import_prompts(db, settings)
    except IntegrityError:
        return import_prompts(db, settings)


def build_front_end(settings: AppSettings) -> FeedbackService:
    """`rlhf-live serve`: the page's service, with a generator and a reward worker, following published versions."""
    errors = ErrorLog()
    db = open_store(settings)
    try:
        prompts = import_prompts_shared(db, settings)
        rewards = RewardControl(settings.reward, settings.reward_choices)
        runtime = choose_runtime(settings)
        models = load_front_end_models(settings, runtime)
    except (ValueError, ModelLoadError) as err:
        db.close()
        raise StartupError(first_line(err)) from err
    except BaseException:
        db.close()
        raise
    publisher = PolicyPublisher(0, models.state)
    window = StalenessWindow(settings.max_staleness)
    generator = GeneratorWorker(
        db, models.policy, models.reference, models.tokenizer, publisher, settings, runtime, errors, window
    )
    mode = RatingMode(settings.mode)
    generator.twins = lambda: mode.pairwise  # pairwise mode: two responses per prompt, so pairs can form
    switches = SharedSwitches(db, errors, settings.poll_seconds, mode, rewards, settings.reward)
    reward_worker = RewardWorker(db, rewards, errors, settings.poll_seconds, timeout_s=settings.reward_timeout_s)
    access = Access([user for user, _ in settings.auth], settings.admins, settings.admin_token)
    follower = WeightsFollower(
        db, publisher, settings.published_dir, errors, settings.poll_seconds, WeightsKind.of(settings)
    )
    try:  # the newest version before the page opens (the generator, built at version 0, loads it first thing);
        follower.tick()  # one of another kind is refused, recorded for the dashboard, and version 0 served
        switches.tick()  # the deployment's rating mode and reward source, over --mode and --reward
    except Exception as err:  # unreadable (a wrong --weights-dir, a damaged file): say so now, not on the page
        db.close()
        raise StartupError(f"cannot load the newest published version: {first_line(err)}") from err
    extra = (Heartbeat(db, settings, errors, "serve", trainer=False), follower, switches)
    trainer = RemoteTrainer(db, settings.heartbeat_expiry_s)
    parts = ServiceParts(
        db, prompts, access, errors, rewards, publisher, generator, trainer, reward_worker, window, extra
    )
    parts.mode, parts.switches = mode, switches
    log.info("front-end ready: model %s at version %d on %s", settings.model, publisher.version, runtime.device)
    return FeedbackService(settings, parts)


# ------------------------------------------------------------------------------------------------- train
@dataclass
class TrainerProcess:
    """`rlhf-live train`: the heartbeat (the trainer slot), the publisher (to the weights folder), the trainer."""

    db: Database
    heartbeat: Heartbeat
    publisher: SharedPublisher
    trainer: TrainerWorker
    errors: ErrorLog
    switches: SharedSwitches
    """The rating mode and reward source the front-ends' admins chose (they decide which scores count)."""

    def start(self) -> None:
        self.heartbeat.start()  # registers first: a second live trainer is refused before anything is written
        self.publisher.share_current()
        self.switches.start()
        self.trainer.start()

    def stop(self) -> None:
        """Finish the current step and save a checkpoint, then stop beating and close the database."""
        self.trainer.stop()
        self.trainer.join()
        self.switches.stop()
        self.switches.join()
        self.heartbeat.stop()
        self.heartbeat.join()
        self.db.close()


def build_trainer_process(
    settings: AppSettings, make_worker: Callable[..., TrainerWorker] = TrainerWorker
) -> TrainerProcess:
    """`make_worker`: the trainer thread's class (rank 0 of several processes: app.distributed_trainer)."""
    errors = ErrorLog()
    db = open_store(settings)
    try:
        build_source(settings.reward)  # a bad --reward stops start-up with one line, as on the front-ends
        loaded = load_training(db, settings)
    except (ValueError, ModelLoadError) as err:
        db.close()
        raise StartupError(first_line(err)) from err
    except BaseException:
        db.close()
        raise
    heartbeat = Heartbeat(db, settings, errors, "train", trainer=True)
    version, state = loaded.version, loaded.published_state()
    folder, keep = settings.published_dir, settings.keep_checkpoints
    kind = WeightsKind.of(settings)  # recorded in each file: a front-end of another kind refuses it whole
    publisher = SharedPublisher(version, state, db, folder, heartbeat.owner, keep, errors, kind=kind)
    window = loaded.window(settings)
    switches = SharedSwitches(db, errors, settings.poll_seconds, RatingMode(settings.mode), None, settings.reward)
    switches.tick()  # the deployment's switches, over this process's --mode and --reward
    auto_scores = trains_on_auto_scores(switches.reward_is_auto, switches.mode)
    trainer = build_trainer_worker(
        db, settings, loaded, publisher, window, errors, auto_scores, heartbeat.owner, make_worker
    )
    log.info("trainer ready: model %s at version %d on %s", settings.model, version, loaded.runtime.device)
    return TrainerProcess(db, heartbeat, publisher, trainer, errors, switches)

"""The composition root: open storage, import the prompts, load the models, build the workers, wire the service.

Start-up steps that can fail on bad options raise a one-line `StartupError` (the CLI exits with status 2). Tests
that need no model build `FeedbackService` from fakes instead (tests/app/fakes.py).
"""

from __future__ import annotations

import logging

from app.access import Access
from app.errors import StartupError
from app.generator import GeneratorWorker
from app.learned.embedder import load_embedder
from app.learned.worker import LearnedRewardWorker
from app.models import ModelLoadError
from app.ownership import Heartbeat
from app.parts import ServiceParts
from app.policy import PolicyPublisher
from app.rating_mode import RatingMode, trains_on_auto_scores
from app.reward_source import RewardControl
from app.reward_worker import RewardWorker
from app.service import FeedbackService
from app.settings import AppSettings
from app.startup import first_line, import_prompts, open_store
from app.trainer_build import build_trainer_worker, load_training
from app.worker import ErrorLog

log = logging.getLogger(__name__)


def build_service(settings: AppSettings) -> FeedbackService:
    """Everything the app runs on, wired; nothing started yet (`service.start()`)."""
    errors = ErrorLog()
    db = open_store(settings)
    try:
        prompts = import_prompts(db, settings)
        rewards = RewardControl(settings.reward, settings.reward_choices)
        loaded = load_training(db, settings)
        embedder = (
            load_embedder(settings.learned_embedder, settings.data_dir / "models") if settings.learned_enabled else None
        )
    except (ValueError, ModelLoadError) as err:
        db.close()
        raise StartupError(first_line(err)) from err
    except BaseException:
        db.close()
        raise
    models, version, runtime = loaded.models, loaded.version, loaded.runtime
    window = loaded.window(settings)
    heartbeat = Heartbeat(db, settings, errors, "all", trainer=True)  # claims carry its owner id (app.ownership)
    publisher = PolicyPublisher(version, loaded.published_state())
    mode = RatingMode(settings.mode)
    generator = GeneratorWorker(
        db, models.generator_model, models.reference, models.tokenizer, publisher, settings, runtime, errors, window
    )
    generator.twins = lambda: mode.pairwise  # pairwise mode: two responses per prompt, so pairs can form

    auto_scores = trains_on_auto_scores(rewards.use_auto_scores, mode)
    trainer = build_trainer_worker(db, settings, loaded, publisher, window, errors, auto_scores, heartbeat.owner)
    reward_worker = RewardWorker(db, rewards, errors, settings.poll_seconds, timeout_s=settings.reward_timeout_s)
    access = Access([user for user, _ in settings.auth], settings.admins, settings.admin_token)
    learned = LearnedRewardWorker(db, rewards, embedder, settings, errors) if embedder is not None else None
    parts = ServiceParts(
        db, prompts, access, errors, rewards, publisher, generator, trainer, reward_worker, window, learned=learned
    )
    parts.extra_workers = (heartbeat,)
    parts.mode = mode
    log.info("service ready: model %s at version %d on %s", settings.model, version, runtime.device)
    return FeedbackService(settings, parts)

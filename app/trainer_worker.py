"""The trainer thread: claims each scored batch exactly once, runs a PPO step, publishes the new weights.

A batch is every scored sample waiting when a step starts, at least `--batch-size` and at most `--max-batch-size`
(docs/live-learning.md): what raters score during a step is trained in the next one, and the step size follows
the raters' pace instead of leaving their ratings to age out of the staleness window.

It owns the `PPOTrainer` (training model, optimizer, KL controller): nothing else touches them. Staleness policy
(docs/app.md): a claim first marks open samples older than `version - max_staleness` stale (never trained; their
ratings stay in storage and exports); samples inside the window are trained with the decoupled-PPO importance
correction, using the behaviour log-probs stored with them.

Faults (docs/app.md, "Failure handling"): the whole trainer state is captured before each step
(ppo_core.trainer_state); a step that raises, or one whose recording fails afterwards, is undone exactly (weights,
Adam moments, KL coefficient, step counter, scheduler, score moments, RNG). Only a fault of the batch's data fails
the batch; any other goes back to pending and is retried with exponential back-off, and after
`pause_after_failures` failures in a row the trainer pauses itself with a reason for the dashboard
(app.step_faults). A step that checkpoints writes and fsyncs its folder first and records the step and the
checkpoint in one transaction, so a crash never leaves storage ahead of the disk by more than app.recovery repairs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from app.checkpoints import TrainerState, prune_checkpoints, record, remove_folder, save_checkpoint
from app.errors import public_text
from app.models import Runtime
from app.policy import PolicyPublisher, publish_state
from app.recovery import recover_training
from app.settings import AppSettings
from app.staleness import StalenessWindow
from app.step_faults import FailureTracker, pause_reason
from app.worker import ErrorLog, Worker
from ppo_core import PPOTrainer
from ppo_core.stats import scalar_stats
from ppo_core.trainer_state import TrainerSnapshot
from storage.batches import claim_next_batch, fail_batch, finish_batch, return_batch
from storage.engine import Database
from storage.errors import BatchStateError, StaleClaim
from storage.history import record_checkpoint
from storage.records import ClaimedBatch, StepIn
from storage.samples import oldest_waiting_rating
from storage.schema import utcnow

log = logging.getLogger(__name__)

CHECKPOINT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class TrainerStatus:
    state: str
    """"starting" | "waiting" | "training" | "paused" | "stopped"."""
    version: int
    steps: int
    """Steps taken since this process started."""
    last_step_s: float | None
    last_publish_s: float | None
    last_error: str | None
    """Error of the most recent attempt, as `app.errors.public_text` shows it; None once a step succeeds."""
    checkpoint_version: int | None
    batch_id: int | None
    """The batch being trained."""
    paused_reason: str | None = None
    """Why the trainer paused itself (e.g. "5 steps failed in a row (OSError: no space left on device); see the
    server log"); no server paths or values. None when running, or when an admin paused it."""
    consecutive_failures: int = 0
    """Failed attempts since the last step that succeeded (or the last resume)."""


@dataclass(frozen=True)
class BatchTensors:
    queries: list[torch.Tensor]  # B x (Lq,)
    responses: list[torch.Tensor]  # B x (Lr,)
    scores: list[torch.Tensor]  # B x ()
    behaviour_logprobs: list[torch.Tensor]  # B x (Lr,)


def batch_tensors(batch: ClaimedBatch) -> BatchTensors:
    samples = batch.samples
    return BatchTensors(
        queries=[torch.tensor(x.query_ids, dtype=torch.long) for x in samples],
        responses=[torch.tensor(x.response_ids, dtype=torch.long) for x in samples],
        scores=[torch.tensor(x.score, dtype=torch.float32) for x in samples],
        behaviour_logprobs=[torch.tensor(x.behaviour_logprobs, dtype=torch.float32) for x in samples],
    )


def split_stats(stats: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """TRL stats -> (finite scalar stats, durations); non-finite values (e.g. var_explained of constant returns)
    are dropped rather than stored."""
    values: dict[str, float] = {}
    durations: dict[str, float] = {}
    for key, value in scalar_stats(stats).items():
        if not math.isfinite(value):
            continue
        (durations if key.startswith("time/") else values)[key] = value
    return values, durations


def json_config(config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[key] = value
    return out


class TrainerWorker(Worker):
    name = "trainer"

    def __init__(
        self,
        db: Database,
        trainer: PPOTrainer,
        publisher: PolicyPublisher,
        settings: AppSettings,
        runtime: Runtime,
        errors: ErrorLog,
        use_auto_scores: Callable[[], bool],
        checkpoint_version: int | None,
        window: StalenessWindow | None = None,
        owner: str | None = None,
    ) -> None:
        super().__init__(errors, settings.poll_seconds)
        self.db = db
        self.trainer = trainer  # owned by this thread from start() on
        self.publisher = publisher
        self.settings = settings
        self.runtime = runtime
        self.use_auto_scores = use_auto_scores
        self.window = window or StalenessWindow(settings.max_staleness)
        self.paused = threading.Event()
        self.claimer = owner or f"trainer@{socket.gethostname()}:{os.getpid()}"
        """The owner id its claims carry (app.ownership): the process's heartbeat says whether it lives."""
        self.config_record = {**json_config(trainer.config.to_dict()), "max_staleness": settings.max_staleness}
        self.status = TrainerStatus("starting", publisher.version, 0, None, None, None, checkpoint_version, None)
        self.faults = FailureTracker(settings.pause_after_failures, settings.retry_backoff_s, settings.max_backoff_s)
        self.loaded_version = checkpoint_version
        self._recovered = False
        self._retry_at = 0.0
        self._held: ClaimedBatch | None = None
        """A batch still claimed by us that could not be handed back (the database failed too): retried first."""
        self._resume = threading.Event()
        self._snapshot = TrainerSnapshot(trainer)  # one spill file, overwritten before every step
        self._requests: queue.Queue[Future[Path]] = queue.Queue()

    @property
    def model(self) -> Any:
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    # ----------------------------------------------------------------------------------------- in the thread
    def setup(self) -> None:
        if self.runtime.device.type == "cpu":
            torch.set_num_threads(self.runtime.train_threads)  # per thread with OpenMP; see docs/app.md
        self.recover()

    def recover(self) -> None:
        """Start-up recovery (app.recovery), once, before the first claim; the composition root may call it first."""
        if not self._recovered and self.status.steps == 0:
            expiry = self.settings.heartbeat_expiry_s
            recover_training(self.db, self.settings.checkpoint_dir, self.loaded_version, self.claimer, expiry)
        self._recovered = True

    def teardown(self) -> None:
        while True:  # answer pending save requests before the final checkpoint
            try:
                future = self._requests.get_nowait()
            except queue.Empty:
                break
            if future.set_running_or_notify_cancel():
                future.set_exception(ValueError("the trainer is stopping; its shutdown checkpoint is being saved"))
        self._snapshot.close()
        if self.status.version > (self.status.checkpoint_version or 0):
            self.checkpoint()
        self.status = replace(self.status, state="stopped", batch_id=None)

    def tick(self) -> bool:
        self.serve_requests()
        self._take_resume()
        if self.paused.is_set():
            self.status = replace(self.status, state="paused")
            return False
        if time.monotonic() < self._retry_at:
            self.status = replace(self.status, state="waiting")
            return False
        batch = self._held or self._claim()
        self._held = None
        if batch is None:
            self.status = replace(self.status, state="waiting")
            return False
        self.train(batch)
        return True

    @property
    def batch_multiple(self) -> int:
        """A claimed batch's size is a multiple of this: the minibatch (app.distributed_trainer: times the ranks)."""
        return self.settings.mini_batch_size or 1

    def _claim(self) -> ClaimedBatch | None:
        """A batch of --batch-size..--max-batch-size; or, when a human rating has waited --flush-after-s, any
        whole number of minibatches (so the last ratings of a sitting are trained too)."""
        with self.db.session_factory.begin() as s:
            batch = self._claim_at_least(s, self.settings.batch_size)
            if batch is None and self._rating_waited_too_long(s):
                batch = self._claim_at_least(s, self.batch_multiple)
            return batch

    def _claim_at_least(self, s: Session, size: int) -> ClaimedBatch | None:
        return claim_next_batch(
            s,
            size,
            self.claimer,
            min_policy_version=self.window.floor(self.status.version),
            use_auto_scores=self.use_auto_scores(),
            max_size=self.settings.effective_max_batch_size,
            multiple=self.batch_multiple,
        )

    def _rating_waited_too_long(self, s: Session) -> bool:
        oldest = oldest_waiting_rating(s)
        return oldest is not None and (utcnow() - oldest).total_seconds() >= self.settings.flush_after_s

    def train(self, batch: ClaimedBatch) -> bool:
        """One PPO step on a claimed batch; True when it was trained, recorded and published. On any failure the
        whole trainer state is put back as it was before the step."""
        self.status = replace(self.status, state="training", batch_id=batch.batch_id)
        start = time.perf_counter()
        snapshot = self._snapshot.capture()
        try:
            stats = self.step(batch)
        except Exception as err:
            snapshot.restore()
            self._after_failure(batch, err, during_step=True)
            return False
        step_s = time.perf_counter() - start
        try:
            record, checkpointed = self._commit(batch, stats, step_s)
        except Exception as err:
            snapshot.restore()
            self._after_failure(batch, err, during_step=False)
            return False
        self._after_success(batch, record, step_s, checkpointed)
        return True

    def step(self, batch: ClaimedBatch) -> dict[str, Any]:
        t = batch_tensors(batch)
        n = len(batch.samples)
        self.trainer.set_batch_size(n, self.settings.mini_batch_size or n)
        return self.trainer.step(t.queries, t.responses, t.scores, behaviour_logprobs=t.behaviour_logprobs)

    def _commit(self, batch: ClaimedBatch, stats: dict[str, Any], step_s: float) -> tuple[StepIn, bool]:
        """Record the step; when it is due for a checkpoint, the folder is written and fsynced first and recorded
        in the same transaction as the step (a crash in between leaves an unrecorded folder: app.recovery)."""
        record = self._step_record(batch, stats, step_s)
        version = record.policy_version
        due = version - (self.status.checkpoint_version or 0) >= self.settings.checkpoint_every
        folder = self._save(version) if due else None
        try:
            with self.db.session_factory.begin() as s:
                finish_batch(s, batch, record)
                if folder is not None:
                    record_checkpoint(s, version, str(folder.resolve()))
        except BaseException:
            if folder is not None:
                remove_folder(folder)
            raise
        return record, folder is not None

    def _after_success(self, batch: ClaimedBatch, record: StepIn, step_s: float, checkpointed: bool) -> None:
        published = time.perf_counter()
        self.publisher.publish(record.policy_version, publish_state(self.model))
        publish_s = time.perf_counter() - published
        self.faults.succeeded(batch.batch_id)
        self._retry_at = 0.0
        st = self.status
        self.status = replace(
            st,
            state="waiting",
            version=record.policy_version,
            steps=st.steps + 1,
            last_step_s=step_s,
            last_publish_s=publish_s,
            last_error=None,
            batch_id=None,
            checkpoint_version=record.policy_version if checkpointed else st.checkpoint_version,
            consecutive_failures=0,
        )
        log.info("step on batch %d -> version %d in %.2f s", batch.batch_id, record.policy_version, step_s)
        if checkpointed:
            self._prune()

    def _step_record(self, batch: ClaimedBatch, stats: dict[str, Any], step_s: float) -> StepIn:
        values, durations = split_stats(stats)
        ages = [self.status.version - x.policy_version for x in batch.samples]
        values["app/staleness_mean"] = sum(ages) / len(ages)
        values["app/staleness_max"] = float(max(ages))
        values["app/batch_size"] = float(len(batch.samples))
        durations["step_s"] = step_s
        return StepIn(self.status.version + 1, values, self.config_record, durations)

    def _after_failure(self, batch: ClaimedBatch, err: Exception, during_step: bool) -> None:
        """The state is already restored. A data fault fails the batch; any other hands it back for a retry after
        the back-off; enough failures in a row pause the trainer."""
        kind = self.faults.failed(batch.batch_id, err, during_step)
        message = f"{type(err).__name__}: {err}"
        self.errors.record(self.name, err)
        try:
            with self.db.session_factory.begin() as s:
                if kind == "data":
                    fail_batch(s, batch, message, retry=False)
                else:
                    return_batch(s, batch, message)
        except (StaleClaim, BatchStateError) as lost_claim:  # no longer ours: whoever holds it trains it
            self.errors.record(self.name, lost_claim)
        except Exception as db_err:  # still claimed by us: train it again ourselves after the back-off
            self.errors.record(self.name, db_err)
            self._held = batch
        failures = self.faults.consecutive
        self._retry_at = time.monotonic() + self.faults.delay_s
        reason = pause_reason(failures, err) if self.faults.should_pause else None
        self.status = replace(
            self.status,
            state="paused" if reason else "waiting",
            last_error=public_text(err),
            batch_id=None,
            consecutive_failures=failures,
            paused_reason=reason or self.status.paused_reason,
        )
        if reason is not None:
            self.paused.set()
            log.error("training paused: %s", reason)
        log.warning("%s fault on batch %d (%s); next try in %.1f s", kind, batch.batch_id, message, self.faults.delay_s)

    def _take_resume(self) -> None:
        """An admin resumed (`resume()`, or cleared `paused` directly): forget the failures and their reason."""
        cleared = not self.paused.is_set() and self.status.paused_reason is not None
        if self._resume.is_set() or cleared:
            self._resume.clear()
            self.faults.reset()
            self._retry_at = 0.0
            self.status = replace(self.status, paused_reason=None, consecutive_failures=0)

    def _save(self, version: int) -> Path:
        state = TrainerState(version, float(self.trainer.kl_ctl.value), self.trainer.current_step, self.settings.model)
        return save_checkpoint(self.settings.checkpoint_dir, self.trainer, state)

    def _prune(self) -> None:
        try:
            prune_checkpoints(self.db, self.settings.checkpoint_dir, self.settings.keep_checkpoints)
        except Exception as err:  # the new checkpoint is safe; old ones stay until the next prune
            self.errors.record(self.name, err)

    def checkpoint(self) -> Path:
        """Save and record the current version (its step is already recorded): shutdown and admin requests."""
        version = self.status.version
        existed = (self.settings.checkpoint_dir / f"v{version}").exists()
        folder = self._save(version)
        try:
            record(self.db, version, folder)
        except BaseException:
            if not existed:  # a folder saved before (and recorded) stays
                remove_folder(folder)
            raise
        self.status = replace(self.status, checkpoint_version=version)
        self._prune()
        return folder

    def serve_requests(self) -> None:
        while True:
            try:
                future = self._requests.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self.checkpoint())
            except Exception as err:
                self.errors.record(self.name, err)
                future.set_exception(err)

    # -------------------------------------------------------------------------------------- from outside
    def resume(self) -> None:
        """Resume training (an admin): clears a pause, the failure count and the pause reason; retries at once."""
        self._resume.set()
        self.paused.clear()
        self.wake.set()

    def request_checkpoint(self, timeout: float = CHECKPOINT_TIMEOUT_S) -> Path:
        """Ask the trainer thread (the optimizer's owner) to save a checkpoint between steps, and wait."""
        if not self.alive:
            raise ValueError("the trainer is not running, so it cannot save a checkpoint")
        future: Future[Path] = Future()
        self._requests.put(future)
        self.wake.set()
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise ValueError("the trainer is busy with a long step; try again in a moment") from None

"""The trainer thread: claims each full scored batch exactly once, runs a PPO step, publishes the new weights.

It owns the `PPOTrainer` (training model, optimizer, KL controller): nothing else touches them. Staleness policy
(docs/app.md): a claim first marks open samples older than `version - max_staleness` stale (never trained; their
ratings stay in storage and exports); samples inside the window are trained with the decoupled-PPO importance
correction, using the behaviour log-probs stored with them. A failed step puts the batch back (storage's retry
rule) and leaves the weights at the last published version.
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

from app.checkpoints import TrainerState, record, save_checkpoint
from app.models import Runtime
from app.policy import PolicyPublisher, copy_state
from app.settings import AppSettings
from app.worker import ErrorLog, Worker
from ppo_core import PPOTrainer
from ppo_core.stats import scalar_stats
from storage.batches import claim_next_batch, fail_batch, finish_batch
from storage.engine import Database
from storage.records import ClaimedBatch, StepIn

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
    """Error of the most recent attempt; None once a step succeeds."""
    checkpoint_version: int | None
    batch_id: int | None
    """The batch being trained."""


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
    ) -> None:
        super().__init__(errors, settings.poll_seconds)
        self.db = db
        self.trainer = trainer  # owned by this thread from start() on
        self.publisher = publisher
        self.settings = settings
        self.runtime = runtime
        self.use_auto_scores = use_auto_scores
        self.paused = threading.Event()
        self.claimer = f"trainer@{socket.gethostname()}:{os.getpid()}"
        self.config_record = {**json_config(trainer.config.to_dict()), "max_staleness": settings.max_staleness}
        self.status = TrainerStatus("starting", publisher.version, 0, None, None, None, checkpoint_version, None)
        self._requests: queue.Queue[Future[Path]] = queue.Queue()

    @property
    def model(self) -> Any:
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    # ----------------------------------------------------------------------------------------- in the thread
    def setup(self) -> None:
        if self.runtime.device.type == "cpu":
            torch.set_num_threads(self.runtime.train_threads)  # per thread with OpenMP; see docs/app.md

    def teardown(self) -> None:
        while True:  # answer pending save requests before the final checkpoint
            try:
                future = self._requests.get_nowait()
            except queue.Empty:
                break
            if future.set_running_or_notify_cancel():
                future.set_exception(ValueError("the trainer is stopping; its shutdown checkpoint is being saved"))
        if self.status.version > (self.status.checkpoint_version or 0):
            self.checkpoint()
        self.status = replace(self.status, state="stopped", batch_id=None)

    def tick(self) -> bool:
        self.serve_requests()
        if self.paused.is_set():
            self.status = replace(self.status, state="paused")
            return False
        version = self.status.version
        with self.db.session_factory.begin() as s:
            batch = claim_next_batch(
                s,
                self.settings.batch_size,
                self.claimer,
                min_policy_version=max(0, version - self.settings.max_staleness),
                use_auto_scores=self.use_auto_scores(),
            )
        if batch is None:
            self.status = replace(self.status, state="waiting")
            return False
        self.train(batch)
        return True

    def train(self, batch: ClaimedBatch) -> bool:
        """One PPO step on a claimed batch; True when it was trained and published."""
        self.status = replace(self.status, state="training", batch_id=batch.batch_id)
        start = time.perf_counter()
        stepped = False
        try:
            stats = self.step(batch)
            stepped = True
            step_s = time.perf_counter() - start
            record = self._step_record(batch, stats, step_s)
            with self.db.session_factory.begin() as s:
                finish_batch(s, batch, record)
        except Exception as err:
            # ppo_core raises ValueError (NonFiniteError included) only with the model and optimizer unchanged.
            self._after_failure(batch, err, weights_changed=stepped or not isinstance(err, ValueError))
            return False
        published = time.perf_counter()
        self.publisher.publish(record.policy_version, copy_state(self.model))
        publish_s = time.perf_counter() - published
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
        )
        log.info("step on batch %d -> version %d in %.2f s", batch.batch_id, record.policy_version, step_s)
        if record.policy_version - (st.checkpoint_version or 0) >= self.settings.checkpoint_every:
            self.checkpoint()
        return True

    def step(self, batch: ClaimedBatch) -> dict[str, Any]:
        t = batch_tensors(batch)
        return self.trainer.step(t.queries, t.responses, t.scores, behaviour_logprobs=t.behaviour_logprobs)

    def _step_record(self, batch: ClaimedBatch, stats: dict[str, Any], step_s: float) -> StepIn:
        values, durations = split_stats(stats)
        ages = [self.status.version - x.policy_version for x in batch.samples]
        values["app/staleness_mean"] = sum(ages) / len(ages)
        values["app/staleness_max"] = float(max(ages))
        durations["step_s"] = step_s
        return StepIn(self.status.version + 1, values, self.config_record, durations)

    def _after_failure(self, batch: ClaimedBatch, err: Exception, weights_changed: bool) -> None:
        """The batch goes back to storage for a retry; the weights stay at the last good version."""
        if weights_changed:
            self.restore_published()
        message = f"{type(err).__name__}: {err}"
        self.errors.record(self.name, err)
        try:
            with self.db.session_factory.begin() as s:
                fail_batch(s, batch, message)
        except Exception as db_err:
            self.errors.record(self.name, db_err)
        self.status = replace(self.status, state="waiting", last_error=message, batch_id=None)

    def restore_published(self) -> None:
        """Weights (policy and value head) back to the last published version. The optimizer's moments may have
        moved with the failed step, so they are reset (Adam starts its averages afresh)."""
        version, state = self.publisher.latest()
        self.model.load_state_dict(state)
        self.trainer.optimizer.state.clear()
        log.warning("weights restored to version %d after a failed step; optimizer moments reset", version)

    def checkpoint(self) -> Path:
        version = self.status.version
        state = TrainerState(version, float(self.trainer.kl_ctl.value), self.trainer.current_step, self.settings.model)
        folder = save_checkpoint(
            self.settings.checkpoint_dir, self.model, self.trainer.tokenizer, self.trainer.optimizer, state
        )
        record(self.db, version, folder)
        self.status = replace(self.status, checkpoint_version=version)
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

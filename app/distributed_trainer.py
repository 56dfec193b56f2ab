"""`rlhf-live train` on several processes, one per GPU: `torchrun --nproc_per_node N -m app train ...` or
`accelerate launch --num_processes N -m app train ...` (docs/deployment.md, "Several GPUs").

ppo_core trains data-parallel (docs/ppo_core.md, "Several processes"): each process steps on its own part of the
batch and whitening, score moments, loss normalisation and statistics are global, so N processes holding 1/N of a
batch train the model as one process holding all of it. Here:

- **Rank 0 alone touches the database and the weights folder.** It is the ordinary trainer process (app.roles:
  heartbeat, trainer slot, claims, recovery, step records, publishing, checkpoints) with a trainer thread that
  claims batches whose size is a multiple of `ranks x --mini-batch-size`, so each rank gets an equal share of whole
  minibatches, and sends every rank its shard (app.rank_channel). `--batch-size` and `--max-batch-size` count the
  whole batch; `--mini-batch-size` is per process (per GPU).
- **The other ranks follow** (`follow`): they load the same model, step on their shard when told, snapshot their
  whole trainer state before each step and restore it when rank 0 says the step is undone (it failed on some rank,
  or recording it failed), so the weights stay the same on every rank. They never write anything.
- **Stop and failures are decided on rank 0** and travel in the next message: a SIGTERM/SIGINT on any rank stops
  all of them after the current step (rank 0 saves its checkpoint, then tells the others to exit). At start and
  at stop every rank reports a sha256 of its weights; rank 0 refuses to train (start) or exits with status 1
  (stop) when they differ.
- **Devices:** with CUDA, rank r uses `cuda:LOCAL_RANK` and NCCL; without, the CPU and gloo.

Limits: one machine (the ranks > 0 read the resume checkpoint from `--data-dir`); a step that raises on one rank
before a collective the others are in (say, out of memory on one GPU) can leave the others waiting until torchrun
ends them all: ppo_core takes every refusal (NaN/inf, the ratio threshold) from global figures, and rank 0 checks
every shard's data before sending it, but an infrastructure fault on one rank is not survivable. LoRA is refused
with several ranks for now (`rlhf-live train --lora` runs as one process).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import torch
from accelerate import PartialState

from app.errors import StartupError
from app.models import ModelLoadError, Runtime, choose_runtime, load_models
from app.rank_channel import Control, RankChannel, Report, Shard, split_batch, weights_digest
from app.settings import AppSettings
from app.trainer_worker import TrainerWorker
from ppo_core import PPOTrainer
from ppo_core.step_inputs import validate_step_inputs
from ppo_core.trainer_state import TrainerSnapshot, load_trainer_state
from storage.records import ClaimedBatch

if TYPE_CHECKING:
    from app.roles import TrainerProcess

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    """What torchrun / `accelerate launch` put in each process's environment."""

    rank: int
    world_size: int
    local_rank: int


def launch_from_env(env: Mapping[str, str] | None = None) -> Launch | None:
    """The launch this process is part of, or None when it runs alone (no WORLD_SIZE, or 1)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE") or 1)
    if world <= 1:
        return None
    rank = int(env["RANK"])
    return Launch(rank, world, int(env.get("LOCAL_RANK") or rank))


def check_batch_sizes(settings: AppSettings, world_size: int) -> None:
    """Each rank trains an equal share of whole minibatches: both batch bounds are multiples of ranks x minibatch.
    LoRA is refused: a LoRA policy under DDP has not been run (one process: `rlhf-live train --lora`)."""
    if settings.lora:
        raise StartupError("--lora runs in one trainer process; several ranks (torchrun) are not supported with it yet")
    mini = settings.mini_batch_size or 1
    multiple = world_size * mini
    bounds = (("--batch-size", settings.batch_size), ("--max-batch-size", settings.effective_max_batch_size))
    for option, value in bounds:
        if value % multiple:
            raise StartupError(
                f"{option} ({value}) must be a multiple of {world_size} processes x --mini-batch-size ({mini}) "
                f"= {multiple}: each process trains an equal share of whole minibatches"
            )


def start_ranks(settings: AppSettings, launch: Launch) -> Runtime:
    """This rank's device (CUDA: `cuda:LOCAL_RANK`) and the process group (NCCL on CUDA, gloo on the CPU)."""
    try:
        runtime = choose_runtime(settings)
    except ModelLoadError as err:
        raise StartupError(str(err)) from err
    if runtime.device.type == "cuda":
        if launch.local_rank >= torch.cuda.device_count():
            raise StartupError(
                f"rank {launch.rank} needs GPU {launch.local_rank} but {torch.cuda.device_count()} are visible: "
                "start at most one process per GPU (or --device cpu)"
            )
        torch.cuda.set_device(launch.local_rank)
        runtime = replace(runtime, device=torch.device("cuda", launch.local_rank))
    state = PartialState(cpu=runtime.device.type == "cpu")
    if state.num_processes != launch.world_size:
        raise StartupError(f"accelerate sees {state.num_processes} processes, the launcher started {launch.world_size}")
    log.info("rank %d of %d (pid %d) on %s", launch.rank, launch.world_size, os.getpid(), runtime.device)
    return runtime


def run_step(trainer: PPOTrainer, shard: Shard, mini_batch_size: int | None) -> dict[str, Any]:
    """One data-parallel PPO step on this rank's shard (every rank calls it together)."""
    queries, responses, scores, behaviour = shard.tensors()
    n = len(shard)
    trainer.set_batch_size(n, mini_batch_size or n)
    return trainer.step(queries, responses, scores, behaviour_logprobs=behaviour)


def _state(trainer: PPOTrainer) -> dict[str, torch.Tensor]:
    return cast(dict[str, torch.Tensor], trainer.accelerator.unwrap_model(trainer.model).state_dict())


class RankFailed(RuntimeError):
    """The step failed on another rank (an infrastructure fault: the batch goes back to pending)."""


class RanksDiverged(RuntimeError):
    """The ranks' weights differ, or a rank could not load or restore its state."""


# ------------------------------------------------------------------------------------------------- rank 0
class DistributedTrainerWorker(TrainerWorker):
    """Rank 0's trainer thread: `TrainerWorker` whose step is shared with the other ranks (module docstring)."""

    def __init__(self, *args: Any, channel: RankChannel, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.channel = channel
        self.rank_fault: str | None = None
        """Why a rank can no longer follow (its state is unknown): stops all ranks, exit status 1."""
        self._stepped = False
        self._closed = False

    @property
    def batch_multiple(self) -> int:
        return self.channel.world_size * super().batch_multiple

    def setup(self) -> None:
        if self.runtime.device.type == "cuda":  # the current CUDA device is per thread; NCCL's messages use it
            torch.cuda.set_device(self.trainer.accelerator.device)
        folder = None if self.loaded_version is None else self.settings.checkpoint_dir / f"v{self.loaded_version}"
        reports = self.channel.broadcast(Control("hello", resume_folder=None if folder is None else str(folder)))
        self._check_reports(reports, "hello")
        self._check_same_weights(reports, "start")
        super().setup()

    def tick(self) -> bool:
        did = super().tick()
        if not did and not self.stop_event.is_set():
            self._check_reports(self.channel.broadcast(Control("idle")), "idle")
        return did

    def train(self, batch: ClaimedBatch) -> bool:
        self._stepped = False
        kept = True  # an exception out of TrainerWorker.train comes after the step stood (nothing was restored)
        try:
            kept = super().train(batch)
            return kept
        finally:
            if self._stepped:
                self._check_reports(self.channel.broadcast(Control("keep" if kept else "undo")), "verdict")

    def step(self, batch: ClaimedBatch) -> dict[str, Any]:
        shards = split_batch(batch.samples, self.channel.world_size)
        mini = self.settings.mini_batch_size
        self._check_shards(shards)  # a data fault fails here, before any rank steps
        self.channel.send([Control("step", shard, mini) for shard in shards])
        self._stepped = True
        error: Exception | None = None
        stats: dict[str, Any] = {}
        try:
            stats = run_step(self.trainer, shards[0], mini)
        except Exception as err:
            error = err
        reports = self.channel.collect()  # after our own step, even a failed one: the others are waiting here
        self._note_stop(reports)
        if error is not None:
            raise error
        failed = [f"rank {rank}: {r.error}" for rank, r in enumerate(reports) if not r.ok]
        if failed:
            raise RankFailed("; ".join(failed))
        return stats

    def _check_shards(self, shards: Sequence[Shard]) -> None:
        vocab = int(self.model.pretrained_model.get_input_embeddings().num_embeddings)
        for shard in shards:
            queries, responses, scores, behaviour = shard.tensors()
            validate_step_inputs(queries, responses, scores, None, behaviour, len(shard), torch.device("cpu"), vocab)

    def teardown(self) -> None:
        try:
            super().teardown()  # the shutdown checkpoint, rank 0's alone
        finally:
            self.close_ranks()

    def close_ranks(self) -> None:
        """Tell the other ranks to exit (once) and compare their final weights with ours."""
        if self._closed:
            return
        self._closed = True
        reports = self.channel.broadcast(Control("stop"))
        self._check_same_weights(reports, "stop")
        if self.rank_fault is not None:
            raise RanksDiverged(self.rank_fault)

    # ------------------------------------------------------------------------------------------ reports
    def _note_stop(self, reports: Sequence[Report]) -> None:
        asked = [rank for rank, r in enumerate(reports) if r.stop]
        if asked and not self.stop_event.is_set():
            log.info("rank %s asked to stop: stopping every rank after this step", asked)
            self.stop()

    def _check_reports(self, reports: Sequence[Report], what: str) -> None:
        """Any failure outside a step leaves a rank in an unknown state: stop every rank (exit status 1)."""
        self._note_stop(reports)
        failed = [f"rank {rank}: {r.error}" for rank, r in enumerate(reports) if not r.ok]
        if not failed:
            return
        self.rank_fault = f"{what} failed on {'; '.join(failed)}"
        self.errors.record(self.name, RanksDiverged(self.rank_fault))
        self.stop()
        if what == "hello":
            raise RanksDiverged(self.rank_fault)

    def _check_same_weights(self, reports: Sequence[Report], when: str) -> None:
        own = weights_digest(_state(self.trainer))
        others = {rank: r.digest for rank, r in enumerate(reports) if rank > 0}
        differ = {rank: digest for rank, digest in others.items() if digest != own}
        if differ:
            detail = ", ".join(f"rank {rank} {str(d)[:12]}" for rank, d in differ.items())
            raise RanksDiverged(f"the ranks' weights differ at {when}: rank 0 {own[:12]}, {detail}")
        log.info("weights identical on all %d ranks at %s (sha256 %s)", len(reports), when, own)


def build_rank_zero(settings: AppSettings, channel: RankChannel) -> TrainerProcess:
    from app.roles import build_trainer_process

    return build_trainer_process(settings, make_worker=partial(DistributedTrainerWorker, channel=channel))


# ------------------------------------------------------------------------------------------- ranks > 0
class Follower:
    """A rank > 0: does what rank 0's controls say, in the main thread, until "stop"."""

    def __init__(self, trainer: PPOTrainer, channel: RankChannel, stop: threading.Event) -> None:
        self.trainer, self.channel, self.stop = trainer, channel, stop

    def run(self) -> None:
        with TrainerSnapshot(self.trainer) as snapshot:
            while True:
                control = self.channel.receive()
                if control.kind == "stop":
                    self.channel.reply(Report(digest=self._digest()))
                    return
                try:
                    report = self.handle(control, snapshot)
                except Exception as err:
                    log.exception("rank %d: %s failed", self.channel.rank, control.kind)
                    report = Report(ok=False, error=f"{type(err).__name__}: {err}"[:500])
                self.channel.reply(replace(report, stop=self.stop.is_set()))

    def handle(self, control: Control, snapshot: TrainerSnapshot) -> Report:
        if control.kind == "hello":
            if control.resume_folder is not None:  # the weights came from rank 0 when DDP wrapped the model
                load_trainer_state(self.trainer, control.resume_folder)
            return Report(digest=self._digest())
        if control.kind == "step":
            assert control.shard is not None
            snapshot.capture()
            run_step(self.trainer, control.shard, control.mini_batch_size)
        elif control.kind == "undo":
            snapshot.restore()
        return Report()

    def _digest(self) -> str:
        digest = weights_digest(_state(self.trainer))
        log.info("rank %d weights sha256 %s", self.channel.rank, digest)
        return digest


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def follow(settings: AppSettings, runtime: Runtime, channel: RankChannel) -> int:
    """A rank > 0: load the model (no database, no resume lookup: rank 0 says what to load), then follow."""
    stop = stop_on_signals()
    try:
        models = load_models(settings, runtime, None, 0)
    except (ValueError, ModelLoadError) as err:
        raise StartupError(str(err).splitlines()[0]) from err
    trainer = models.trainer
    del models  # the generator's copy: a trainer process has no generator
    if runtime.device.type == "cpu":
        torch.set_num_threads(runtime.train_threads)
    Follower(trainer, channel, stop).run()
    log.info("rank %d stopped", channel.rank)
    return 0


# ------------------------------------------------------------------------------------------------- entry
def train_ranks(settings: AppSettings, launch: Launch, run: Callable[[TrainerProcess], int]) -> int:
    """`rlhf-live train` under torchrun / accelerate launch; `run` runs rank 0's process until a signal."""
    check_batch_sizes(settings, launch.world_size)
    runtime = start_ranks(settings, launch)
    channel = RankChannel(launch.rank, launch.world_size)
    try:
        if launch.rank > 0:
            return follow(settings, runtime, channel)
        process = build_rank_zero(settings, channel)
        worker = cast(DistributedTrainerWorker, process.trainer)
        try:
            return run(process)
        finally:
            worker.close_ranks()  # done already unless rank 0 never started its thread
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

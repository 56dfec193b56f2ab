"""`rlhf-live train` as several data-parallel processes (app.distributed_trainer).

The slow test runs two real processes (torchrun, gloo on the CPU, tiny model, SQLite): the database is filled
with rated samples first; the two ranks train them, then torchrun gets a SIGTERM (what Ctrl-C or systemd sends).
Checked afterwards: every batch trained exactly once, as whole shards (a multiple of 2 ranks x minibatch), one
recorded step and one announced, readable version per batch, nothing left claimed, the shutdown checkpoint saved,
and both ranks ending with the weights of the newest published version.

The others drive each side of the protocol in one process: rank 0's trainer thread against a scripted second rank
(a failure there undoes the step everywhere and hands the batch back), and a follower's answers to rank 0.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from app.distributed_trainer import (
    DistributedTrainerWorker,
    Follower,
    Launch,
    RanksDiverged,
    build_rank_zero,
    check_batch_sizes,
    launch_from_env,
)
from app.errors import StartupError
from app.models import choose_runtime, load_models
from app.rank_channel import Control, RankChannel, Report, Shard, weights_digest
from app.settings import AppSettings
from app.shared_weights import read_version
from app.weights_kind import WeightsKind
from ppo_core import PPOTrainer
from ppo_core.trainer_state import TrainerSnapshot
from storage.batches import list_batches
from storage.engine import Database, open_database
from storage.history import list_checkpoints, training_history
from storage.prompts import add_prompts, prompts_for_generation
from storage.published import list_published
from storage.raters import get_or_create_rater
from storage.ratings import record_rating
from storage.records import NewSample
from storage.samples import add_samples

ROOT = Path(__file__).resolve().parents[2]
RATED = 22
"""Rated samples: 20 train in batches of 4..8 that are multiples of 2 ranks x minibatch 2 (8, 8, 4; with the
minibatch alone as the multiple the last would be 6); 2 stay (too few for a batch)."""
WORLD = 2
MINI = 2
MULTIPLE = WORLD * MINI
START_DIGEST = re.compile(r"weights identical on all 2 ranks at start \(sha256 ([0-9a-f]{64})\)")
STOP_DIGEST = re.compile(r"weights identical on all 2 ranks at stop \(sha256 ([0-9a-f]{64})\)")
RANK1_PID = re.compile(r"rank 1 of 2 \(pid (\d+)\)")
RANK1_DIGEST = re.compile(r"rank 1 weights sha256 ([0-9a-f]{64})")

FULL = WeightsKind(lora=False)  # the kind of file a full (not LoRA) trainer publishes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(db: Database, n: int) -> list[int]:
    """`n` samples of different lengths (so the ranks pad differently), each rated by a person."""
    with db.session_factory.begin() as s:
        add_prompts(s, ["a prompt"], source="test")
        (prompt,) = prompts_for_generation(s, 1)
        samples = []
        for i in range(n):
            response = [5 + (i * 7 + j) % 40 for j in range(1 + i % 4)]
            samples.append(NewSample(prompt.id, f"answer {i}", [1, 2, 3 + i % 5], response, 0, [-1.5] * len(response)))
        ids = add_samples(s, samples)
        rater = get_or_create_rater(s, "alice")
        for i, sample_id in enumerate(ids):
            record_rating(s, sample_id, rater.id, (i % 5) / 2 - 1.0)
    return ids


def trained_samples(db: Database) -> int:
    with db.read_session_factory.begin() as s:
        return sum(b.size for b in list_batches(s, status="trained"))


def launch(tiny_model: Path, prompt_file: Path, data_dir: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, ACCELERATE_USE_CPU="1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    options = {
        "model": tiny_model,
        "dataset": prompt_file,
        "data-dir": data_dir,
        "device": "cpu",
        "batch-size": 4,
        "max-batch-size": 8,
        "mini-batch-size": MINI,
        "ppo-epochs": 2,
        "threads": 1,
        "poll-seconds": 0.2,
        "checkpoint-every": 1000,
        "heartbeat-s": 0.5,
    }
    command = [  # docs/deployment.md, "Several GPUs", with the tiny options and a free port
        str(Path(sys.executable).with_name("torchrun")),
        "--nnodes=1",
        "--nproc_per_node",
        str(WORLD),
        "--master_addr",
        "127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "app",
        "train",
        *(x for k, v in options.items() for x in (f"--{k}", str(v))),
    ]
    out = open(log_path, "wb")  # noqa: SIM115 - the child writes it until it exits
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def run_until_trained(
    tiny_model: Path, prompt_file: Path, data_dir: Path, db: Database, trained: int, stopped: str = "torchrun"
) -> tuple[int, str]:
    """Launch, wait until `trained` samples are trained, SIGTERM torchrun or rank 1; (torchrun's status, log)."""
    log_path = data_dir.parent / f"train-{time.monotonic_ns()}.log"
    proc = launch(tiny_model, prompt_file, data_dir, log_path)
    try:
        deadline = time.monotonic() + 90
        while trained_samples(db) < trained:
            assert proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")[-4000:]
            time.sleep(0.2)
        time.sleep(1.0)  # idle rounds between the ranks, then the stop
        if stopped == "torchrun":
            proc.send_signal(signal.SIGTERM)
        else:
            pid = RANK1_PID.search(log_path.read_text(errors="replace"))
            assert pid is not None
            os.kill(int(pid.group(1)), signal.SIGTERM)
        returncode = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return returncode, log_path.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("stopped", ["torchrun", "rank 1"])
def test_two_ranks_train_every_batch_once_and_end_with_the_published_weights(
    tiny_model, prompt_file, tmp_path, stopped
):
    """SIGTERM to torchrun (it passes it to every rank), or to rank 1 alone (rank 0 hears of it in rank 1's next
    report and stops everyone: torchrun exits 0)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = open_database(data_dir / "feedback.db")
    sample_ids = fill(db, RATED)
    returncode, text = run_until_trained(tiny_model, prompt_file, data_dir, db, RATED - RATED % MULTIPLE, stopped)
    with db.read_session_factory.begin() as s:
        batches = list_batches(s, limit=1000)
        steps = training_history(s)
        published = list_published(s)
        checkpoints = list_checkpoints(s)
    db.close()

    # every batch trained once, as whole shards; nothing left claimed or pending
    assert {b.status for b in batches} == {"trained"}, batches
    assert all(b.size % MULTIPLE == 0 and 4 <= b.size <= 8 for b in batches), [b.size for b in batches]
    assert sum(b.size for b in batches) == RATED - RATED % MULTIPLE
    assert sorted(x.batch_id for x in steps) == sorted(b.id for b in batches)
    versions = sorted(x.policy_version for x in steps)
    assert versions == list(range(1, len(batches) + 1))
    assert len(sample_ids) == RATED

    # each version announced; the newest one readable and saved at shutdown as a checkpoint
    newest = max(published, key=lambda p: p.version)
    assert newest.version == versions[-1]
    state = read_version(Path(newest.path), newest.sha256, FULL)
    assert versions[-1] in {c.version for c in checkpoints}, "no shutdown checkpoint"

    # both ranks stopped with the newest published weights
    start, stop = START_DIGEST.search(text), STOP_DIGEST.search(text)
    rank1 = RANK1_DIGEST.findall(text)
    assert start is not None and stop is not None and len(rank1) == 2, text[-4000:]
    assert stop.group(1) == rank1[-1] == weights_digest(state)
    assert start.group(1) == rank1[0] != stop.group(1)  # the steps really moved the weights
    assert "rank 1 stopped" in text
    if stopped == "rank 1":
        assert "rank [1] asked to stop" in text
        assert returncode == 0, text[-4000:]


@pytest.mark.slow
def test_the_ranks_resume_together_from_the_shutdown_checkpoint(tiny_model, prompt_file, tmp_path):
    """The second run starts every rank from the first run's last version: its weights (rank 1 gets them from rank 0
    when DDP wraps the model) and its optimizer state (each rank loads it: otherwise the ranks' Adam steps differ
    and their weights part by the stop)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = open_database(data_dir / "feedback.db")
    try:
        fill(db, 8)
        _, first = run_until_trained(tiny_model, prompt_file, data_dir, db, 8)
        fill(db, 8)
        _, second = run_until_trained(tiny_model, prompt_file, data_dir, db, 16)
        with db.read_session_factory.begin() as s:
            versions = sorted(x.policy_version for x in training_history(s))
            newest = max(list_published(s), key=lambda p: p.version)
    finally:
        db.close()
    assert versions == [1, 2]
    stopped_at = STOP_DIGEST.search(first)
    resumed_at, stopped_again = START_DIGEST.search(second), STOP_DIGEST.search(second)
    assert stopped_at is not None and resumed_at is not None and stopped_again is not None, second[-4000:]
    assert resumed_at.group(1) == stopped_at.group(1)
    assert stopped_again.group(1) == weights_digest(read_version(Path(newest.path), newest.sha256, FULL))
    assert "resuming version 1" in second


# ------------------------------------------------------------------------------------------- one process
class ScriptedRank(RankChannel):
    """Rank 0's channel to a second rank that lives only in this test: it records what rank 1 would receive and
    answers with a report: its weights' digest when asked, a failed step when told to fail."""

    def __init__(self) -> None:
        super().__init__(0, 2)
        self.received: list[Control] = []
        self.digest: Callable[[], str] = lambda: ""
        self.fail_steps = 0
        self.asks_to_stop = False

    def _scatter(self, controls: list[Control] | None) -> Control:
        assert controls is not None and len(controls) == 2
        self.received.append(controls[1])
        return controls[0]

    def _gather(self, report: Report) -> list[Report]:
        kind = self.received[-1].kind
        other = Report(stop=self.asks_to_stop, digest=self.digest() if kind in ("hello", "stop") else None)
        if kind == "step" and self.fail_steps:
            self.fail_steps -= 1
            other = replace(other, ok=False, error="OutOfMemoryError: CUDA out of memory")
        return [report, other]

    def kinds(self) -> list[str]:
        return [c.kind for c in self.received]


def rank_zero(settings: AppSettings) -> tuple[DistributedTrainerWorker, ScriptedRank]:
    channel = ScriptedRank()
    process = build_rank_zero(settings, channel)
    worker = process.trainer
    assert isinstance(worker, DistributedTrainerWorker)
    channel.digest = lambda: weights_digest(worker.model.state_dict())  # a rank in step with rank 0
    process.heartbeat.register()
    return worker, channel


def batch_states(db: Database) -> list[tuple[str, int]]:
    with db.read_session_factory.begin() as s:
        return sorted((b.status, b.size) for b in list_batches(s))


def test_a_step_that_fails_on_another_rank_is_undone_everywhere_and_its_batch_retried(make_settings):
    settings = make_settings(batch_size=4, max_batch_size=8, mini_batch_size=2, retry_backoff_s=0.01)
    worker, rank1 = rank_zero(settings)
    try:
        fill(worker.db, 8)
        worker.setup()
        assert rank1.kinds() == ["hello"]
        before = weights_digest(worker.model.state_dict())

        rank1.fail_steps = 1
        assert worker.tick()
        assert rank1.kinds() == ["hello", "step", "undo"]
        step = rank1.received[1]
        assert step.shard is not None and len(step.shard) == 4 and step.mini_batch_size == 2  # the second half
        assert weights_digest(worker.model.state_dict()) == before  # rank 0 undid its own step too
        assert batch_states(worker.db) == [("pending", 8)]  # not the batch's fault: trained next time
        assert worker.status.version == 0 and "RankFailed" in str(worker.status.last_error)

        time.sleep(0.05)  # the retry back-off
        assert worker.tick()
        assert rank1.kinds()[3:] == ["step", "keep"]
        assert batch_states(worker.db) == [("trained", 8)]
        assert worker.status.version == 1 and worker.publisher.version == 1
        assert weights_digest(worker.model.state_dict()) != before

        rank1.asks_to_stop = True  # a SIGTERM on rank 1 reaches rank 0 with the next report
        assert not worker.tick()
        assert rank1.kinds()[-1] == "idle" and worker.stop_event.is_set()
        worker.teardown()
        assert rank1.kinds()[-1] == "stop"
        assert worker.status.checkpoint_version == 1
    finally:
        worker.db.close()


def test_rank_zero_refuses_to_train_when_another_rank_holds_other_weights(make_settings):
    worker, rank1 = rank_zero(make_settings(batch_size=4, mini_batch_size=2))
    rank1.digest = lambda: "0" * 64
    try:
        with pytest.raises(RanksDiverged, match="differ at start"):
            worker.setup()
    finally:
        worker.db.close()


def follower_trainer(settings: AppSettings) -> PPOTrainer:
    return load_models(settings, choose_runtime(settings), None, 0).trainer


def test_a_follower_undoes_a_step_exactly_and_retakes_the_same_step(make_settings):
    settings = make_settings(batch_size=4, mini_batch_size=2)
    trainer = follower_trainer(settings)
    follower = Follower(trainer, RankChannel(1, 2), threading.Event())
    shard = Shard([[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10]], [1.0, -0.5], [[-1.5, -1.5], [-1.0, -2.0, -1.0]])

    def digest() -> str:
        return weights_digest(trainer.accelerator.unwrap_model(trainer.model).state_dict())

    with TrainerSnapshot(trainer) as snapshot:
        start = follower.handle(Control("hello"), snapshot).digest
        assert start == digest()
        assert follower.handle(Control("step", shard, 1), snapshot).ok
        stepped = digest()
        assert stepped != start
        follower.handle(Control("undo"), snapshot)
        assert digest() == start
        follower.handle(Control("step", shard, 1), snapshot)
        assert digest() == stepped  # the same step again: optimizer, RNG and all were restored
        follower.handle(Control("keep"), snapshot)
        assert digest() == stepped


def test_batch_bounds_must_split_into_whole_minibatches_per_rank(make_settings):
    check_batch_sizes(make_settings(batch_size=8, max_batch_size=16, mini_batch_size=2), 4)
    with pytest.raises(StartupError, match=r"--batch-size \(6\) must be a multiple of 4 processes"):
        check_batch_sizes(make_settings(batch_size=6, max_batch_size=12, mini_batch_size=1), 4)
    with pytest.raises(StartupError, match=r"--max-batch-size \(12\) must be a multiple of 4 processes x"):
        check_batch_sizes(make_settings(batch_size=8, max_batch_size=12, mini_batch_size=2), 4)
    with pytest.raises(StartupError, match=r"--lora runs in one trainer process"):
        check_batch_sizes(make_settings(batch_size=8, max_batch_size=16, mini_batch_size=2, lora=True), 4)


def test_the_launch_is_read_from_the_launcher_environment():
    assert launch_from_env({}) is None
    assert launch_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert launch_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Launch(3, 4, 1)

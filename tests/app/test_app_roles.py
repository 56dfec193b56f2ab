"""One `rlhf-live train` and two `rlhf-live serve` processes on one database (SQLite, then PostgreSQL), with
simulated raters on both front-ends; one front-end and the trainer are killed with SIGKILL and restarted.

Checked afterwards: no sample was held by two raters at once, no acknowledged rating is missing, every batch was
trained once (a step a crash lost is retrained under a new version, as in the all-in-one app), and every front-end
that was up served each published version within that step's time + 2 s of its publication. Tiny model; the
processes are real `python -m app <role>` subprocesses on 127.0.0.1 (bench/app_process.py).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bench.app_process import (
    PYTHON,
    AppProcess,
    RaterLog,
    SimulatedRater,
    human_ratings,
    missing_ratings,
    sample_keys,
    tiny_model,
    write_prompts,
)
from bench.load import double_holds

pytestmark = pytest.mark.slow

BUDGET_S = 2.0
"""The issue's bound: a front-end serves a new version within the step's time + 2 s of its publication."""
LOADED_RE = re.compile(
    r"^(\S+ \S+) INFO app\.(?:shared_weights|roles): "
    r"(?:loaded|front-end starts with) published version (\d+)"
)


@dataclass(frozen=True)
class RoleConfig:
    """`python -m app <role>` with the tiny settings; quick heartbeats and leases so a kill is recovered fast."""

    role: str
    model: Path
    dataset: Path
    data_dir: Path
    db: str

    def argv(self, port: int) -> list[str]:
        options: dict[str, object] = {
            "model": self.model,
            "dataset": self.dataset,
            "data-dir": self.data_dir,
            "db": self.db,
            "weights-dir": self.data_dir / "weights",
            "host": "127.0.0.1",
            "port": port,
            "batch-size": 4,
            "max-new-tokens": 8,
            "ppo-epochs": 1,
            "checkpoint-every": 2,
            "threads": 1,
            "poll-seconds": 0.2,
            "heartbeat-s": 0.5,
            "heartbeat-expiry-s": 3,
            "lease-seconds": 20,
        }
        return [str(PYTHON), "-m", "app", self.role, *(x for k, v in options.items() for x in (f"--{k}", str(v)))]


class RoleProcess(AppProcess):
    """An AppProcess whose ready line depends on its role (the trainer serves no page)."""

    def __init__(self, config: RoleConfig, log_path: Path) -> None:
        self.ready_line = "Training at version" if config.role == "train" else "Running on "
        self.up_at: datetime | None = None
        self.down_at: datetime | None = None
        super().__init__(config, log_path)  # type: ignore[arg-type]

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            if line.startswith(self.ready_line) and not self.ready.is_set():
                self.ready_s = time.monotonic() - self.started
                self.up_at = datetime.now(UTC)
                self.ready.set()

    def kill(self) -> None:
        self.down_at = datetime.now(UTC)
        super().kill()

    def stop(self, timeout: float = 120.0) -> int:
        self.down_at = datetime.now(UTC)
        return super().stop(timeout)

    def loaded(self) -> list[tuple[datetime, int]]:
        """(when, version) of each version this front-end loaded, from its log."""
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if m := LOADED_RE.match(line):
                local = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone()
                out.append((local.astimezone(UTC), int(m.group(2))))
        return out


class Raters:
    """Rating-only simulated raters, one thread each, until `stop` (a rater whose front-end died stops)."""

    def __init__(self) -> None:
        self.logs: list[RaterLog] = []
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def add(self, url: str, name: str, seed: int) -> None:
        thread = threading.Thread(target=self._run, args=(url, name, seed), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _run(self, url: str, name: str, seed: int) -> None:
        rng = random.Random(seed)
        rater = SimulatedRater(url, name)
        failures = 0
        while not self.stop.is_set() and failures < 3:
            time.sleep(rng.uniform(0.05, 0.2))
            shown = rater.call("/next") if rater.current is None else rater.call("/rate", round(rng.uniform(-1, 1), 2))
            failures = failures + 1 if shown is None else 0
            if shown is not None and shown.key is None:
                time.sleep(0.3)
        self.logs.append(rater.finish())

    def join(self) -> list[RaterLog]:
        self.stop.set()
        for thread in self._threads:
            thread.join(60)
        return self.logs


class _Rows:
    """bench.app_process's readers take a DB-API-like `execute(sql)`; this serves them from SQLAlchemy."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str) -> Any:
        return self.conn.exec_driver_sql(sql)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny model and the prompts file, made once for the module (a model takes ~10 s to write here)."""
    root = tmp_path_factory.mktemp("roles")
    return tiny_model(root / "tiny"), write_prompts(root / "prompts.jsonl")


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    cluster = request.getfixturevalue("postgres_cluster")
    url = cluster.fresh_url("roles")
    yield url
    cluster.drop(url)


def test_one_trainer_and_two_front_ends_share_a_database(
    tmp_path: Path, shared_db: str, tiny: tuple[Path, Path]
) -> None:
    started = time.monotonic()
    model, prompts = tiny
    data = tmp_path / "data"

    def launch(role: str, name: str) -> RoleProcess:
        return RoleProcess(RoleConfig(role, model, prompts, data, shared_db), tmp_path / f"{name}.log")

    procs = {"train": launch("train", "train"), "a": launch("serve", "a"), "b": launch("serve", "b")}
    phases: list[tuple[str, float]] = []
    raters = Raters()
    engine = sa.create_engine(shared_db)
    try:
        for proc in procs.values():
            proc.wait_ready(180)
        for i, name in enumerate(("a", "b")):
            for j in range(2):
                raters.add(procs[name].url, f"{name}{j}", seed=10 * i + j)
        phases.append(("ready", time.monotonic() - started))
        _wait(lambda: _count(engine, "SELECT COUNT(*) FROM training_steps") >= 2, 60, "two steps", procs)
        # SIGKILL of a front-end (its raters stop; a new front-end and rater take their place) and of the trainer,
        # whatever it was doing; both restarted at once
        procs["a"].kill()
        procs["train"].kill()
        steps = _count(engine, "SELECT COUNT(*) FROM training_steps")
        procs["a2"], procs["train2"] = launch("serve", "a2"), launch("train", "train2")
        procs["a2"].wait_ready(120)
        procs["train2"].wait_ready(120)
        phases.append(("restarted", time.monotonic() - started))
        raters.add(procs["a2"].url, "a2-0", seed=99)
        _wait(lambda: _count(engine, "SELECT COUNT(*) FROM training_steps") >= steps + 2, 60, "steps after", procs)
        logs = raters.join()
        phases.append(("rated", time.monotonic() - started))
        _wait(lambda: _drained(engine), 60, "every claimable batch trained", procs)
        newest = _count(engine, "SELECT MAX(version) FROM published_versions")
        front_ends = [procs[n] for n in ("b", "a2")]
        _wait(lambda: all(_newest_loaded(p) >= newest for p in front_ends), 10, f"v{newest} everywhere", procs)
        for name in ("a2", "b", "train2"):
            assert procs[name].stop() == 0, procs[name].log_tail()
        _check(engine, logs, procs)
    finally:
        raters.stop.set()
        for proc in procs.values():
            if proc.proc.poll() is None:
                proc.kill()
        engine.dispose()
    phases.append(("done", time.monotonic() - started))
    print(f"roles test on {shared_db.split(':')[0]}: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases))


def _check(engine: sa.Engine, logs: list[RaterLog], procs: dict[str, RoleProcess]) -> None:
    with engine.connect() as conn:
        rows = _Rows(conn)
        keys = sample_keys(rows)  # type: ignore[arg-type]
        stored = human_ratings(rows)  # type: ignore[arg-type]
        rater_ids = {name: int(i) for i, name in conn.exec_driver_sql("SELECT id, name FROM raters")}
        twice = conn.exec_driver_sql("SELECT batch_id FROM training_steps GROUP BY batch_id HAVING COUNT(*) > 1")
        assert twice.fetchall() == [], "a batch with two steps"
        busy = "SELECT COUNT(*) FROM training_batches WHERE status IN ('pending', 'claimed', 'failed')"
        assert conn.exec_driver_sql(busy).scalar() == 0
        lost = conn.exec_driver_sql(
            "SELECT l.batch_id FROM lost_steps l JOIN training_batches b ON b.id = l.batch_id "
            "WHERE b.status <> 'trained'"
        ).fetchall()
        assert lost == [], "a step a crash lost was not trained again"
        published = conn.exec_driver_sql(
            "SELECT p.version, p.published_at, t.durations FROM published_versions p "
            "LEFT JOIN training_steps t ON t.policy_version = p.version ORDER BY p.version"
        ).fetchall()
    acknowledged = sum(len(log.acknowledged) for log in logs)
    assert acknowledged >= 8, "the raters rated"
    assert missing_ratings(logs, stored) == []
    doubled, _ambiguous = double_holds(logs, [], keys, rater_ids)
    assert doubled == set(), "samples shown to two raters at once"
    assert len(published) >= 3
    late = []
    for version, at, durations in published:
        step_s = float((durations if isinstance(durations, dict) else _json(durations) or {}).get("step_s", 0.0))
        due = _aware(at) + timedelta(seconds=step_s + BUDGET_S)
        for name in ("a", "b", "a2"):
            proc = procs[name]
            if proc.up_at is None or _aware(at) < proc.up_at or (proc.down_at is not None and due > proc.down_at):
                continue  # not up for the whole window
            served = max((v for when, v in proc.loaded() if when <= due), default=0)
            if served < version:
                late.append(f"{name}: v{version} published {at:%H:%M:%S.%f}, serving v{served} at {due:%H:%M:%S.%f}")
    assert late == []


def _json(value: object) -> dict[str, Any] | None:
    import json

    return json.loads(value) if isinstance(value, str) else None


def _aware(value: datetime | str) -> datetime:
    """A stored naive-UTC time (SQLite's driver gives it as text) -> aware UTC."""
    value = datetime.fromisoformat(value) if isinstance(value, str) else value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(sql).scalar() or 0)


def _drained(engine: sa.Engine) -> bool:
    """No batch pending or claimed, and fewer than a batch of rated open samples."""
    busy = _count(engine, "SELECT COUNT(*) FROM training_batches WHERE status IN ('pending', 'claimed')")
    open_rated = _count(engine, "SELECT COUNT(*) FROM samples WHERE batch_id IS NULL AND NOT stale AND human_n > 0")
    return busy == 0 and open_rated < 4


def _newest_loaded(proc: RoleProcess) -> int:
    return max((v for _when, v in proc.loaded()), default=0)


def _wait(check: Callable[[], bool], timeout: float, what: str, procs: dict[str, RoleProcess]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {n}\n{p.log_tail(1500)}" for n, p in procs.items())
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.3)

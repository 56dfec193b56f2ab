"""kill -9 the real app at random moments, restart it, and check that nothing a rater or the trainer did is lost.

    .venv/bin/python bench/crash.py                    # 10 kills at random moments
    .venv/bin/python bench/crash.py --kills 3 --seed 7 --moments step,checkpoint,rating   # the CI test's run

Each round starts `python -m app` on a tiny random GPT-2 (one data folder for the whole run; batch 4, 8 new
tokens, one PPO epoch, `--checkpoint-every 2`: a checkpoint after every other step), lets
`--raters` simulated raters rate (85%) and skip through gradio_client, and kills the app's process group with
SIGKILL at a moment drawn from: `delay` (a random 1-5 s after the raters start), `rating` (a rate request in flight),
`step` (a training batch claimed: a PPO step running), `checkpoint` (a `.tmp-` checkpoint folder being written).
After the last kill the app is started once more, drains (trains every batch it can form), and is stopped with
SIGTERM. The last stdout line is `RESULT {json}`.

Checks, after every restart and at the end:

- start-up: "Running on" within `--ready-timeout`; a restart that fails is `unrecoverable`. `restart_s` is
  from the process start to that line.
- `lost_ratings`: every rating the server acknowledged ("Rating saved") is in the ratings table with its score
  (per rater, as a multiset of (prompt, response, version, score): the page shows no sample ids).
- crash recovery of training. After a kill the weights that survive are those of the newest checkpoint storage
  records whose files match its manifest (`loaded`, computed here from the database and the folders). After the
  restart (within 30 s), every step above it must have moved to lost_steps (its batch goes back to pending and is
  trained again); one still counted as trained is `lost_to_training` (its samples' scores never reach the
  weights). A step at or below `loaded` must never move to lost_steps (checked at the end): that would be
  `trained_twice` (its batch trained again on top of weights that already hold it).
- at the end, after the drain: no batch has two rows in training_steps and no version names two steps
  (`trained_twice`); every human-rated sample that is not stale is open, in a pending batch, or in a trained batch
  with a step (each one that is not adds 1 to `lost_to_training`); `failed_batches` counts batches failed for
  good. `stale_rated` (rated samples too old to train, by design) is reported, not counted as lost.
- `errors`: rater calls that failed or were refused before the kill (calls the kill interrupted do not count).

`lost` = lost_ratings + lost_to_training; `lost`, `trained_twice`, `unrecoverable` and `errors` should all be 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.app_process import (
    AppConfig,
    AppProcess,
    RaterLog,
    SampleKey,
    SimulatedRater,
    StartupFailed,
    count,
    emit_result,
    human_ratings,
    missing_ratings,
    percentile,
    read_db,
    tiny_model,
    write_prompts,
)

LOG = logging.getLogger("bench.crash")
MOMENTS = ("delay", "rating", "step", "checkpoint")


@dataclass(frozen=True)
class CrashSettings:
    kills: int = 10
    raters: int = 3
    seed: int = 0
    checkpoint_every: int = 2
    """Every other step is checkpointed: a kill after an odd step loses that step's weights, so recovery must
    retire and retrain it; a kill after an even one loses nothing."""
    ready_timeout: float = 180.0
    recovery_timeout: float = 30.0
    moment_timeout: float = 20.0
    """Kill anyway when the drawn moment has not come within this many seconds."""
    drain_timeout: float = 120.0
    moments: tuple[str, ...] = ()
    """Kill at these moments in turn; empty: drawn at random from MOMENTS."""


@dataclass
class Books:
    """What the whole run saw, across restarts."""

    acknowledged: dict[str, list[tuple[SampleKey, float]]] = field(default_factory=dict)
    restart_s: list[float] = field(default_factory=list)
    moments: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lost_ratings: set[str] = field(default_factory=set)
    lost_to_training: list[str] = field(default_factory=list)
    trained_twice: list[str] = field(default_factory=list)
    kept: dict[tuple[int, int], int] = field(default_factory=dict)
    """(batch, version) of every step a restart had to keep -> the checkpoint version that holds it."""
    unrecoverable: int = 0

    def add(self, log: RaterLog, killed_at: float | None) -> None:
        self.acknowledged.setdefault(log.name, []).extend(log.acknowledged)
        for c in log.calls:
            if c.outcome != "ok" and (killed_at is None or c.start + c.ms / 1000 < killed_at):
                self.errors.append(f"{c.rater} {c.endpoint}: {c.outcome}")

    def logs(self) -> list[RaterLog]:
        return [RaterLog(name, acknowledged=list(acks)) for name, acks in self.acknowledged.items()]


# ---------------------------------------------------------------------------------------------- the checkpoints
def checkpoint_intact(folder: Path) -> bool:
    """The files match manifest.json (size and sha256), as app/checkpoints.py writes and verifies them; a folder
    without a manifest counts when its state and optimizer files are there (the app's rule for old folders)."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return (folder / "trainer_state.json").is_file() and any(folder.glob("optimizer.*"))
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        for name, expected in files.items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != int(expected["size"]):
                return False
            if hashlib.sha256(path.read_bytes()).hexdigest() != expected["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class AfterKill:
    """The database and checkpoints as a kill left them."""

    steps: dict[int, int]
    """batch id -> version of its step."""
    loaded: int
    """The version the restart must resume from: the newest recorded, intact checkpoint (0: none)."""


def after_kill(db_path: Path) -> AfterKill:
    with read_db(db_path) as conn:
        steps = {int(b): int(v) for b, v in conn.execute("SELECT batch_id, policy_version FROM training_steps")}
        recorded = conn.execute("SELECT version, folder FROM checkpoints ORDER BY version DESC").fetchall()
    loaded = next((int(v) for v, folder in recorded if checkpoint_intact(Path(folder))), 0)
    return AfterKill(steps, loaded)


def check_recovery(before: AfterKill, db_path: Path, timeout: float, books: Books) -> None:
    """Wait until the restarted app has retired every step above `before.loaded`; book those it did not. The steps
    at or below it must never be retired (checked at the end, when recovery has certainly run: `final_checks`)."""
    gone = {b: v for b, v in before.steps.items() if v > before.loaded}
    books.kept.update({(b, v): before.loaded for b, v in before.steps.items() if v <= before.loaded})
    deadline = time.monotonic() + timeout
    while True:
        with read_db(db_path) as conn:
            steps = {int(b): int(v) for b, v in conn.execute("SELECT batch_id, policy_version FROM training_steps")}
            lost = {(int(b), int(v)) for b, v in conn.execute("SELECT batch_id, policy_version FROM lost_steps")}
        not_retired = [b for b, v in gone.items() if steps.get(b) == v or (b, v) not in lost]
        if not not_retired or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    LOG.info("resume from v%d: %d of %d steps above it retired", before.loaded, len(gone) - len(not_retired), len(gone))
    for b in not_retired:
        books.lost_to_training.append(f"batch {b}: step v{gone[b]} above checkpoint v{before.loaded} not retired")


# ------------------------------------------------------------------------------------------------- one round
class Raters:
    """`n` raters rating (85%) and skipping until stopped; `rate_sent` is set whenever a rate request goes out."""

    def __init__(self, url: str, n: int, rng: random.Random) -> None:
        self.stop = threading.Event()
        self.rate_sent = threading.Event()
        self.logs: list[RaterLog] = []
        self._lock = threading.Lock()
        seeds = [rng.randrange(1 << 30) for _ in range(n)]
        self._threads = [
            threading.Thread(target=self._run, args=(url, f"rater{i}", seeds[i]), daemon=True) for i in range(n)
        ]
        for t in self._threads:
            t.start()

    def _run(self, url: str, name: str, seed: int) -> None:
        rng = random.Random(seed)
        try:
            rater = SimulatedRater(url, name)
        except Exception as err:  # the kill came during sign-in
            LOG.info("%s could not sign in: %s", name, type(err).__name__)
            return
        for _ in range(2000):
            if self.stop.is_set():
                break
            if rater.current is None:
                time.sleep(rng.uniform(0.2, 0.4))
                shown = rater.call("/next")
            else:
                time.sleep(rng.uniform(0.05, 0.3))
                if rng.random() < 0.15:
                    shown = rater.call("/skip")
                else:
                    self.rate_sent.set()
                    shown = rater.call("/rate", round(rng.uniform(-1.0, 1.0), 2))
            if shown is None:  # the server is gone (or failed): this tab is done
                break
        with self._lock:
            self.logs.append(rater.finish())

    def join(self, timeout: float = 60.0) -> list[RaterLog]:
        self.stop.set()
        for t in self._threads:
            t.join(timeout)
        return list(self.logs)


def wait_for_moment(moment: str, app: AppProcess, raters: Raters, rng: random.Random, timeout: float) -> bool:
    """Block until the moment to kill has come; False when it did not come within `timeout`. Claims and temporary
    checkpoint folders a previous run left behind (recovery may not have removed them yet) do not count."""
    if moment == "delay":
        time.sleep(rng.uniform(1.0, 5.0))
        return True
    old_claims, old_folders = _claims(app.config.db_path), _temp_folders(app.config.checkpoint_dir)
    checks: dict[str, Callable[[], bool]] = {
        "rating": raters.rate_sent.is_set,
        "step": lambda: bool(_claims(app.config.db_path) - old_claims),
        "checkpoint": lambda: bool(_temp_folders(app.config.checkpoint_dir) - old_folders),
    }
    raters.rate_sent.clear()
    deadline = time.monotonic() + timeout
    while not checks[moment]():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    if moment == "rating":
        time.sleep(rng.uniform(0.0, 0.1))  # somewhere inside the request: sent, stored, or answered
    return True


def _claims(db_path: Path) -> set[str]:
    """The claim tokens of the batches claimed now (a fresh token per claim)."""
    try:
        with read_db(db_path, timeout=1.0) as conn:
            rows = conn.execute("SELECT id, claim_token FROM training_batches WHERE status = 'claimed'")
            return {f"{i}:{token}" for i, token in rows}
    except sqlite3.Error:
        return set()


def _temp_folders(folder: Path) -> set[str]:
    try:
        return {p.name for p in folder.iterdir() if p.name.startswith(".tmp-")}
    except OSError:
        return set()


def start(config: AppConfig, log_path: Path, s: CrashSettings, books: Books) -> AppProcess | None:
    app = AppProcess(config, log_path)
    try:
        books.restart_s.append(app.wait_ready(s.ready_timeout))
    except StartupFailed as err:
        LOG.error("start-up failed: %s", err)
        books.unrecoverable += 1
        app.kill()
        return None
    return app


def check_ratings(db_path: Path, books: Books) -> None:
    with read_db(db_path) as conn:
        books.lost_ratings.update(missing_ratings(books.logs(), human_ratings(conn)))


def crash_round(config: AppConfig, log_path: Path, s: CrashSettings, rng: random.Random, books: Books) -> bool:
    """Start, check recovery and ratings, rate, kill -9 at a drawn moment; False when the app did not start."""
    before = after_kill(config.db_path) if config.db_path.exists() else AfterKill({}, 0)
    app = start(config, log_path, s, books)
    if app is None:
        return False
    check_recovery(before, config.db_path, s.recovery_timeout, books)
    check_ratings(config.db_path, books)
    raters = Raters(app.url, s.raters, rng)
    moment = s.moments[len(books.moments) % len(s.moments)] if s.moments else rng.choice(MOMENTS)
    came = wait_for_moment(moment, app, raters, rng, s.moment_timeout)
    killed_at = time.monotonic()
    app.kill()
    books.moments.append(moment if came else f"{moment} (not seen: killed at the time limit)")
    for log in raters.join():
        books.add(log, killed_at)
    LOG.info("kill %d at %s", len(books.moments), books.moments[-1])
    return True


# ------------------------------------------------------------------------------------------------- the end
def drain(db_path: Path, batch_size: int, timeout: float) -> bool:
    """Wait until no batch is pending or claimed and fewer than a batch of rated samples can be claimed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with read_db(db_path) as conn:
            busy = count(conn, "SELECT COUNT(*) FROM training_batches WHERE status IN ('pending', 'claimed')")
            claimable = count(
                conn,
                "SELECT COUNT(*) FROM samples WHERE batch_id IS NULL AND NOT stale AND human_n > 0 "
                "AND (lease_expires_at IS NULL OR lease_expires_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))",
            )
        if busy == 0 and claimable < batch_size:
            return True
        time.sleep(0.5)
    return False


def final_checks(db_path: Path, books: Books) -> dict[str, int]:
    with read_db(db_path) as conn:
        twice = conn.execute("SELECT batch_id FROM training_steps GROUP BY batch_id HAVING COUNT(*) > 1").fetchall()
        reused = conn.execute(
            "SELECT policy_version FROM training_steps GROUP BY policy_version HAVING COUNT(*) > 1"
        ).fetchall()
        lost = {(int(b), int(v)) for b, v in conn.execute("SELECT batch_id, policy_version FROM lost_steps")}
        untrained = conn.execute(
            "SELECT s.id, b.status FROM samples s LEFT JOIN training_batches b ON b.id = s.batch_id "
            "LEFT JOIN training_steps t ON t.batch_id = s.batch_id "
            "WHERE s.human_n > 0 AND NOT s.stale AND s.batch_id IS NOT NULL "
            "AND NOT (b.status = 'pending' OR (b.status = 'trained' AND t.id IS NOT NULL))"
        ).fetchall()
        figures = {
            "failed_batches": count(conn, "SELECT COUNT(*) FROM training_batches WHERE status = 'failed'"),
            "steps": count(conn, "SELECT COUNT(*) FROM training_steps"),
            "lost_steps": count(conn, "SELECT COUNT(*) FROM lost_steps"),
            "ratings": count(conn, "SELECT COUNT(*) FROM ratings WHERE source = 'human'"),
            "stale_rated": count(conn, "SELECT COUNT(*) FROM samples WHERE stale AND human_n > 0"),
            "open_rated": count(conn, "SELECT COUNT(*) FROM samples WHERE batch_id IS NULL AND human_n > 0"),
        }
    books.trained_twice += [f"batch {b} has two or more steps" for (b,) in twice]
    books.trained_twice += [f"version {v} names two steps" for (v,) in reused]
    books.trained_twice += [
        f"batch {b}: its step v{v} is in checkpoint v{c} but was retired and trained again"
        for (b, v), c in books.kept.items()
        if (b, v) in lost
    ]
    books.lost_to_training += [f"rated sample {i} in a {status} batch without a step" for i, status in untrained]
    return figures


def run_crash(s: CrashSettings, root: Path) -> dict[str, Any]:
    """The whole bench in `root` (model, data, app log); returns the RESULT dict."""
    model = tiny_model(root / "model")
    config = AppConfig(model, write_prompts(root / "prompts.jsonl"), root / "data", checkpoint_every=s.checkpoint_every)
    log_path, rng, books = root / "app.log", random.Random(s.seed), Books()
    for _ in range(s.kills):
        if not crash_round(config, log_path, s, rng, books):
            break
    drained, exit_code, figures = False, None, {}
    before = after_kill(config.db_path) if config.db_path.exists() else AfterKill({}, 0)
    app = start(config, log_path, s, books)
    if app is not None:
        check_recovery(before, config.db_path, s.recovery_timeout, books)
        drained = drain(config.db_path, config.batch_size, s.drain_timeout)
        exit_code = app.stop()
        check_ratings(config.db_path, books)
        figures = final_checks(config.db_path, books)
    for item in [*sorted(books.lost_ratings), *books.lost_to_training, *books.trained_twice, *books.errors][:30]:
        LOG.error("found: %s", item)
    return summary(s, books, figures, drained, exit_code, log_path)


def summary(
    s: CrashSettings, books: Books, figures: dict[str, int], drained: bool, exit_code: int | None, log_path: Path
) -> dict[str, Any]:
    found = {"lost_ratings": sorted(books.lost_ratings), "lost_to_training": books.lost_to_training}
    found.update(trained_twice=books.trained_twice, errors=books.errors)
    return {
        "kills": len(books.moments),
        "kills_asked": s.kills,
        "moments": books.moments,
        "acknowledged": sum(len(a) for a in books.acknowledged.values()),
        "lost": len(books.lost_ratings) + len(books.lost_to_training),
        **{name: len(items) for name, items in found.items()},
        "unrecoverable": books.unrecoverable,
        "restart_s_p50": percentile(books.restart_s, 50),
        "restart_s_max": max(books.restart_s, default=None),
        "drained": drained,
        "final_exit_code": exit_code,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "details": {"app_log": str(log_path), **{name: items[:20] for name, items in found.items()}},
        **figures,
    }


def parse_args(argv: list[str] | None) -> tuple[CrashSettings, Path | None]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--raters", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=2)
    p.add_argument("--moments", default="", help=f"kill at these in turn (comma list of {','.join(MOMENTS)})")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds for a (re)start to print 'Running on'")
    p.add_argument("--keep", type=Path, default=None, help="keep the model, data and app log in this folder")
    a = p.parse_args(argv)
    moments = tuple(m for m in a.moments.split(",") if m)
    if unknown := set(moments) - set(MOMENTS):
        p.error(f"--moments: unknown {sorted(unknown)}; choose from {', '.join(MOMENTS)}")
    settings = CrashSettings(
        kills=a.kills,
        raters=a.raters,
        seed=a.seed,
        checkpoint_every=a.checkpoint_every,
        ready_timeout=a.ready_timeout,
        moments=moments,
    )
    return settings, a.keep


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings, keep = parse_args(argv)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        result = run_crash(settings, keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp:
            result = run_crash(settings, Path(tmp))
    emit_result(result)
    return 1 if result["lost"] or result["trained_twice"] or result["unrecoverable"] or result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Feedback-store latency with a big database: next sample for a rater, record a rating, claim a batch.

    .venv/bin/python bench/storage.py                    # 1,000,000 ratings (build ~1-3 min on 2 cores)
    .venv/bin/python bench/storage.py --rows 100000 --plan

Builds a SQLite file under bench/out/ with ``--rows`` ratings using bulk Core inserts: rows/2 samples, each
rated by one of 50 people and by a reward model ("vader"); all but a backlog of scored samples sit in trained
batches of 8 with their training steps, and a generator buffer of 64 unrated samples waits at the newest
policy version. Then it times the real repository functions, each call in its own transaction as the app
makes it (commit, i.e. fsync, included): the rating loop (next_sample_for_rater then record_rating, with a
generator topping the buffer up between calls, untimed) and the trainer loop (claim_next_batch, then
finish_batch). ``--plan`` logs the query plans of the hot queries (SQLite's EXPLAIN QUERY PLAN, PostgreSQL's
EXPLAIN). The log goes to stderr; the last stdout line is ``RESULT {json}``.

``--url postgresql+psycopg://user@/dbname?host=/socket/dir`` runs it on PostgreSQL instead: the feedback-store
tables in that database are dropped and rebuilt (give it a database of its own), the id sequences are moved past
the bulk-inserted rows, and the tables are ANALYZEd before timing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text  # noqa: E402

import storage  # noqa: E402
from storage import Database, NewSample, StepIn  # noqa: E402
from storage.schema import Base, Prompt, Rater, Rating, Sample, TrainingBatch, TrainingStep  # noqa: E402

LOG = logging.getLogger("bench.storage")
OUT_DIR = ROOT / "bench" / "out"
HUMANS = 50
BUFFER = 64
CHUNK = 50_000


def build(target: Path | str, rows: int, batch_size: int, durable: bool = True) -> tuple[Database, int]:
    """A fresh database holding ``rows`` ratings (bulk inserts through SQLAlchemy Core, chunked), and the
    newest policy version in it. ``target``: a SQLite file (deleted first) or a server URL (tables dropped)."""
    if isinstance(target, Path):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
    else:
        _drop_tables(target)
    db = storage.open_database(target, durable=durable)
    n_samples = rows // 2
    backlog = min(20_000, n_samples // 10)
    trained = (n_samples - backlog) // batch_size * batch_size
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    _insert(db, Rater, ({"id": i + 1, "name": f"rater{i}", "role": "rater", "created_at": t0} for i in range(HUMANS)))
    _insert(db, Rater, iter([{"id": HUMANS + 1, "name": "reward:vader", "role": "model", "created_at": t0}]))
    n_prompts = max(1, n_samples // 10)
    _insert(db, Prompt, (_prompt(i, n_samples // n_prompts, t0) for i in range(n_prompts)))
    _insert(db, TrainingBatch, (_batch(k, batch_size, t0) for k in range(trained // batch_size)))
    _insert(db, TrainingStep, (_step(k, batch_size, t0) for k in range(trained // batch_size)))
    _insert(db, Sample, (_sample(i, n_prompts, trained, batch_size, t0) for i in range(n_samples)))
    _insert(db, Rating, _ratings(n_samples, t0))
    if db.engine.dialect.name == "postgresql":
        _after_bulk_load_on_postgresql(db)
    newest = (n_samples - 1) // 512 + 1
    with db.session_factory.begin() as s:
        storage.add_samples(s, [_new_sample(1 + i % n_prompts, newest) for i in range(BUFFER)])
    return db, newest


def _drop_tables(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


def _after_bulk_load_on_postgresql(db: Database) -> None:
    """Explicit ids do not move PostgreSQL's sequences (the next add_samples would collide), and a freshly
    loaded table has no planner statistics until it is analysed."""
    with db.engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            if "id" in table.c and table.c.id.autoincrement is not False and table.c.id.primary_key:
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) FROM {table.name}")
                )
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def _insert(db: Database, model: type[Any], rows: Iterator[dict[str, Any]]) -> None:
    table = model.__table__
    chunk: list[dict[str, Any]] = []
    started, n = time.perf_counter(), 0
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            _flush(db, table, chunk)
            n += len(chunk)
            chunk = []
    if chunk:
        _flush(db, table, chunk)
        n += len(chunk)
    LOG.info("inserted %9d %-16s in %5.1f s", n, table.name, time.perf_counter() - started)


def _flush(db: Database, table: Any, chunk: list[dict[str, Any]]) -> None:
    with db.engine.begin() as conn:
        conn.execute(table.insert(), chunk)


def _prompt(i: int, per_prompt: int, t0: datetime) -> dict[str, Any]:
    return {
        "id": i + 1,
        "text": f"Prompt {i}: write something nice.",
        "source": "bench",
        "row": i,
        "sample_count": per_prompt,
        "created_at": t0,
    }


def _batch(k: int, size: int, t0: datetime) -> dict[str, Any]:
    at = t0 + timedelta(seconds=k)
    return {
        "id": k + 1,
        "status": "trained",
        "size": size,
        "claimed_by": "trainer",
        "claimed_at": at,
        "claim_token": None,
        "attempts": 1,
        "max_attempts": 3,
        "error": None,
        "score_mean": 0.1,
        "created_at": at,
        "finished_at": at,
    }


def _step(k: int, size: int, t0: datetime) -> dict[str, Any]:
    stats = {"objective/kl": 0.01, "ppo/loss/policy": -0.02, "ppo/loss/value": 0.3, "ppo/mean_scores": 0.1}
    return {
        "id": k + 1,
        "batch_id": k + 1,
        "policy_version": k * size // 512 + 1,
        "stats": stats,
        "config": {"batch_size": size},
        "durations": {"total": 1.0},
        "created_at": t0 + timedelta(seconds=k),
    }


def _sample(i: int, n_prompts: int, trained: int, size: int, t0: datetime) -> dict[str, Any]:
    in_batch = i < trained
    return {
        "id": i + 1,
        "prompt_id": 1 + i % n_prompts,
        "response_text": f"Response number {i}, quite nice.",
        "query_ids": list(range(100, 108)),
        "response_ids": list(range(200 + i % 7, 216 + i % 7)),
        "behaviour_logprobs": [-1.25] * 16,
        "policy_version": i // 512,
        "generation_settings": {"temperature": 1.0},
        "created_at": t0 + timedelta(milliseconds=i),
        "human_n": 1,
        "auto_n": 1,
        "stale": False,
        "lease_rater_id": None,
        "lease_expires_at": None,
        "batch_id": i // size + 1 if in_batch else None,
        "train_score": 0.1 if in_batch else None,
    }


def _ratings(n_samples: int, t0: datetime) -> Iterator[dict[str, Any]]:
    for i in range(n_samples):
        at = t0 + timedelta(milliseconds=i)
        human = 1 + i % HUMANS
        yield {
            "sample_id": i + 1,
            "rater_id": human,
            "source": "human",
            "score": (i % 21) / 10 - 1,
            "created_at": at,
            "updated_at": at,
        }
        yield {
            "sample_id": i + 1,
            "rater_id": HUMANS + 1,
            "source": "vader",
            "score": (i % 11) / 10 - 0.5,
            "created_at": at,
            "updated_at": at,
        }


def _new_sample(prompt_id: int, version: int) -> NewSample:
    return NewSample(
        prompt_id,
        "A fresh response.",
        list(range(100, 108)),
        list(range(200, 216)),
        version,
        [-1.25] * 16,
        {"temperature": 1.0},
    )


def timed(db: Database, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Milliseconds for one call in its own transaction, commit included."""
    started = time.perf_counter()
    with db.session_factory.begin() as s:
        result = fn(s, *args, **kwargs)
    return (time.perf_counter() - started) * 1000, result


def rating_loop(db: Database, repeats: int, version: int) -> tuple[list[float], list[float]]:
    next_ms: list[float] = []
    rate_ms: list[float] = []
    for i in range(repeats):
        _top_up_buffer(db, version)
        rater_id = 1 + i % HUMANS
        ms, sample = timed(db, storage.next_sample_for_rater, rater_id)
        next_ms.append(ms)
        assert sample is not None, "the buffer ran dry"
        ms, _ = timed(db, storage.record_rating, sample.id, rater_id, ((i % 21) / 10) - 1)
        rate_ms.append(ms)
    return next_ms, rate_ms


def _top_up_buffer(db: Database, version: int) -> None:
    """What the generator thread does (untimed): keep about BUFFER unrated samples waiting."""
    with db.session_factory.begin() as s:
        missing = BUFFER - storage.count_unrated_unleased(s)
        if missing > BUFFER // 2:
            prompts = storage.prompts_for_generation(s, missing)
            storage.add_samples(s, [_new_sample(p.id, version) for p in prompts])


def trainer_loop(db: Database, repeats: int, batch_size: int) -> tuple[list[float], list[float]]:
    claim_ms: list[float] = []
    finish_ms: list[float] = []
    for i in range(repeats):
        ms, batch = timed(db, storage.claim_next_batch, batch_size, "bench-trainer")
        claim_ms.append(ms)
        assert batch is not None and batch.size == batch_size
        ms, _ = timed(db, storage.finish_batch, batch, StepIn(10_000 + i, {"objective/kl": 0.01}))
        finish_ms.append(ms)
    return claim_ms, finish_ms


def explain(db: Database, batch_size: int) -> None:
    """Log EXPLAIN QUERY PLAN of every statement the hot calls run, captured as SQLAlchemy sent them."""
    captured: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if not executemany and statement.lstrip().split()[0].upper() in ("SELECT", "UPDATE", "INSERT", "DELETE"):
            captured.append((statement, params))

    calls: list[tuple[str, Callable[[Any], Any]]] = [
        ("next_sample_for_rater", lambda s: storage.next_sample_for_rater(s, 1)),
        ("record_rating", lambda s: storage.record_rating(s, storage.next_sample_for_rater(s, 2).id, 2, 0.5)),
        ("claim_next_batch", lambda s: storage.claim_next_batch(s, batch_size, "plan")),
    ]
    for name, call in calls:
        captured.clear()
        event.listen(db.engine, "before_cursor_execute", grab)
        with db.session_factory.begin() as s:
            call(s)
        event.remove(db.engine, "before_cursor_execute", grab)
        explain_sql = "EXPLAIN QUERY PLAN" if db.engine.dialect.name == "sqlite" else "EXPLAIN"
        with db.engine.connect() as conn:
            for statement, params in captured:
                plan = conn.exec_driver_sql(f"{explain_sql} {statement}", params).all()
                LOG.info("[%s] %s\n    %s", name, " ".join(statement.split()), "\n    ".join(r[-1] for r in plan))


def fsync_ms(folder: Path, repeats: int = 50) -> list[float]:
    """The disk's fsync latency next to the database: a durable commit waits for one (synchronous=FULL)."""
    probe = folder / "fsync-probe.tmp"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o644)
    times = []
    try:
        for _ in range(repeats):
            os.write(fd, b"x" * 4096)
            started = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        probe.unlink()
    return times


def _size_mb(db: Database, path: Path) -> float:
    if db.engine.dialect.name == "sqlite":
        return round(path.stat().st_size / 2**20, 1)
    with db.engine.connect() as conn:
        return round(float(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()) / 2**20, 1)


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return round(statistics.median(ordered), 3), round(ordered[int(0.95 * (len(ordered) - 1))], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="ratings in the database")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per operation")
    parser.add_argument("--db", type=Path, default=None, help="database file (rebuilt)")
    parser.add_argument(
        "--url", default=None, help="a server database instead of a file, e.g. postgresql+psycopg://... (rebuilt)"
    )
    parser.add_argument("--plan", action="store_true", help="log EXPLAIN QUERY PLAN of the hot queries")
    parser.add_argument(
        "--not-durable", action="store_true", help="synchronous=NORMAL: no fsync per commit (shows the disk's share)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = args.db or OUT_DIR / f"storage-{args.rows}.db"
    started = time.perf_counter()
    db, newest = build(args.url or path, args.rows, args.batch_size, durable=not args.not_durable)
    build_s = time.perf_counter() - started
    with db.session_factory.begin() as s:
        counts = storage.counts(s)
    LOG.info("built %s in %.1f s: %s", args.url or path, build_s, counts)
    if args.plan:
        explain(db, args.batch_size)
    next_ms, rate_ms = rating_loop(db, args.repeats, newest)
    claim_ms, finish_ms = trainer_loop(db, args.repeats, args.batch_size)
    counts_ms = [timed(db, storage.counts)[0] for _ in range(5)]
    disk_ms = fsync_ms(path.parent)
    size_mb = _size_mb(db, path)
    db.close()
    payload: dict[str, Any] = {"rows": counts.ratings, "samples": counts.samples, "build_s": round(build_s, 1)}
    payload["backend"] = db.engine.dialect.name
    payload["durable"] = not args.not_durable
    for name, values in (
        ("next_sample", next_ms),
        ("record_rating", rate_ms),
        ("claim_batch", claim_ms),
        ("finish_batch", finish_ms),
        ("counts", counts_ms),
        ("disk_fsync", disk_ms),
    ):
        p50, p95 = summary(values)
        payload[f"{name}_ms_p50"], payload[f"{name}_ms_p95"] = p50, p95
        LOG.info("%-14s p50 %8.3f ms   p95 %8.3f ms", name, p50, p95)
    payload["file_mb"] = size_mb
    print("RESULT " + json.dumps(payload), flush=True)


if __name__ == "__main__":
    main()

"""A separate process for the concurrency and crash tests: rates and/or claims, reporting each commit.

    python storage_worker.py DB --raters a,b --claimer NAME --claimers 2 --batch-size 4 --stop-file PATH
    python storage_worker.py DB --crash-rater NAME --claim-first 4

DB is a SQLite file path or any SQLAlchemy URL (the tests pass ``postgresql+psycopg://...`` too).
Every line on stdout is printed *after* its transaction committed (``RATED sample rater score``,
``CLAIMED batch sample,sample,...``, ``TRAINED batch``), so the parent knows what must be in the database.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import storage
from storage import Database, StepIn

_print_lock = threading.Lock()


def report(line: str) -> None:
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def score_for(sample_id: int, rater_name: str) -> float:
    return round(((sample_id * 7 + len(rater_name) * 3) % 21) / 10 - 1, 1)


def rate_until_empty(db: Database, name: str, out: Callable[[str], None] = report) -> int:
    with db.session_factory.begin() as s:
        rater_id = storage.get_or_create_rater(s, name).id
    for n in range(10_000):  # bounded, so a broken queue fails the test instead of hanging it
        with db.session_factory.begin() as s:
            sample = storage.next_sample_for_rater(s, rater_id)
        if sample is None:
            return n
        score = score_for(sample.id, name)
        with db.session_factory.begin() as s:
            storage.record_rating(s, sample.id, rater_id, score)
        out(f"RATED {sample.id} {name} {score}")
    raise RuntimeError(f"{name} was offered more than 10,000 samples")


def claim_loop(
    db: Database, claimer: str, size: int, stop: threading.Event, out: Callable[[str], None] = report
) -> None:
    """Claim and finish batches until told to stop and nothing is left to claim."""
    while True:
        with db.session_factory.begin() as s:
            batch = storage.claim_next_batch(s, size, claimer)
        if batch is None:
            if stop.is_set():
                return
            time.sleep(0.005)
            continue
        out(f"CLAIMED {batch.batch_id} {','.join(str(x.sample_id) for x in batch.samples)}")
        with db.session_factory.begin() as s:
            storage.finish_batch(s, batch, StepIn(batch.batch_id, {"mean_score": sum(batch.scores) / size}))
        out(f"TRAINED {batch.batch_id}")


def reporting_errors(target: Callable[..., object], out: Callable[[str], None] = report) -> Callable[..., None]:
    """``target`` run so that an exception becomes an ``ERROR`` line for the parent instead of a silent thread death."""

    def run(*args: object) -> None:
        try:
            target(*args)
        except BaseException as exc:
            out(f"ERROR {threading.current_thread().name} {type(exc).__name__}: {exc}".replace("\n", " "))
            raise

    return run


def run_team(
    db: Database, raters: list[str], claimer: str | None, claimers: int, size: int, stop_file: Path | None
) -> None:
    """Rater threads and claimer threads sharing this process's engine, a session per operation each."""
    stop = threading.Event()
    threads = [threading.Thread(target=reporting_errors(rate_until_empty), args=(db, name)) for name in raters]
    if claimer:
        threads += [
            threading.Thread(target=reporting_errors(claim_loop), args=(db, f"{claimer}-{i}", size, stop))
            for i in range(claimers)
        ]
    for t in threads:
        t.start()
    for t in threads[: len(raters)]:
        t.join()
    report("RATERS_DONE")
    while stop_file is not None and not stop_file.exists():
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()


def crash_rater(db: Database, name: str, claim_first: int) -> None:
    """Claim a batch and never finish it, then rate in a loop, pausing inside each write transaction."""
    with db.session_factory.begin() as s:
        batch = storage.claim_next_batch(s, claim_first, "doomed-trainer")
        rater_id = storage.get_or_create_rater(s, name).id
    assert batch is not None
    report(f"CLAIMED {batch.batch_id} {','.join(str(x.sample_id) for x in batch.samples)}")
    while True:
        with db.session_factory.begin() as s:
            sample = storage.next_sample_for_rater(s, rater_id)
            if sample is None:
                return
            score = score_for(sample.id, name)
            storage.record_rating(s, sample.id, rater_id, score)
            report(f"WRITING {sample.id}")  # written, not committed: the parent kills us on one of these
            time.sleep(0.05)
        report(f"RATED {sample.id} {name} {score}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", help="a SQLite file path or a SQLAlchemy URL")
    parser.add_argument("--raters", default="")
    parser.add_argument("--claimer")
    parser.add_argument("--claimers", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--stop-file", type=Path)
    parser.add_argument("--crash-rater")
    parser.add_argument("--claim-first", type=int, default=4)
    args = parser.parse_args()
    db = storage.open_database(args.db)
    report("READY")
    if args.crash_rater:
        crash_rater(db, args.crash_rater, args.claim_first)
    else:
        raters = [r for r in args.raters.split(",") if r]
        run_team(db, raters, args.claimer, args.claimers, args.batch_size, args.stop_file)
    report("DONE")
    db.close()


if __name__ == "__main__":
    main()

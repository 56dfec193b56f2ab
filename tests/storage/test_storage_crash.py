"""Crash: a process killed with SIGKILL while writing ratings, holding a claimed batch it never finished (SQLite and
PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from storage_helpers import rater, seed

import storage
from storage import Database
from storage.schema import Rater, Rating, Sample

WORKER = Path(__file__).with_name("storage_worker.py")
pytestmark = pytest.mark.slow
_PG_OPEN_TRANSACTIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND state IN ('idle in transaction', 'idle in transaction (aborted)')"
)


def test_sigkill_mid_write_loses_no_committed_rating_and_the_claim_is_recovered(db_url: str) -> None:
    with storage.open_database(db_url) as db:
        _, sample_ids = seed(db, prompts=10, samples_per_prompt=40)
        alice = rater(db, "alice")
        with db.session_factory.begin() as s:
            for sid in sample_ids[:4]:  # a full batch for the doomed trainer to claim
                storage.record_rating(s, sid, alice, 0.5)

    lines = _run_and_kill(db_url, after_ratings=20)
    claimed_batch = int(next(line for line in lines if line.startswith("CLAIMED")).split()[1])
    reported = {(int(sid), float(score)) for _, sid, _, score in (ln.split() for ln in lines if ln.startswith("RATED"))}
    in_flight = int(lines[-1].split()[1]) if lines[-1].startswith("WRITING") else None
    assert len(reported) >= 20 and in_flight is not None and "DONE" not in lines

    with storage.open_database(db_url) as db:  # opens cleanly after the crash
        _check_integrity(db)
        with db.session_factory.begin() as s:
            stored = set(
                s.execute(
                    select(Rating.sample_id, Rating.score)
                    .join(Rater, Rater.id == Rating.rater_id)
                    .where(Rater.name == "crashy")
                ).tuples()
            )
        assert reported <= stored, "a rating reported as committed is missing"
        # The rating being written when the kill came is all there (it managed to commit) or not at all.
        assert {sid for sid, _ in stored - reported} <= {in_flight}
        _check_counters(db)

        with db.session_factory.begin() as s:  # start-up recovery of the dead trainer's claim
            assert storage.get_batch(s, claimed_batch).status == "claimed"
            assert storage.release_all_claims(s) == [claimed_batch]
            assert storage.get_batch(s, claimed_batch).status == "pending"
        with db.session_factory.begin() as s:
            batch = storage.claim_next_batch(s, 4, "new-trainer")
            assert batch is not None and (batch.batch_id, batch.attempt) == (claimed_batch, 2)
            assert sorted(x.sample_id for x in batch.samples) == sorted(sample_ids[:4])


def _run_and_kill(db_url: str, after_ratings: int) -> list[str]:
    cmd = [sys.executable, str(WORKER), db_url, "--crash-rater", "crashy", "--claim-first", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("WRITING") and sum(ln.startswith("RATED") for ln in lines) >= after_ratings:
                os.kill(proc.pid, signal.SIGKILL)  # inside an open write transaction (it pauses 50 ms there)
                break
        lines += [line.strip() for line in proc.stdout]  # what it printed before dying
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return lines


def _check_integrity(db: Database) -> None:
    with db.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
        else:  # the server rolls the killed client's transaction back as soon as it sees the socket close
            deadline = time.monotonic() + 10
            while conn.exec_driver_sql(_PG_OPEN_TRANSACTIONS).scalar() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert conn.exec_driver_sql(_PG_OPEN_TRANSACTIONS).scalar() == 0


def _check_counters(db: Database) -> None:
    """Each rating and its sample counter were written in one transaction: none half-applied."""
    with db.session_factory.begin() as s:
        per_sample = dict(s.execute(select(Rating.sample_id, func.count()).group_by(Rating.sample_id)).tuples().all())
        counters = dict(s.execute(select(Sample.id, Sample.human_n)).tuples().all())
    assert all(counters[sid] == per_sample.get(sid, 0) for sid in counters)

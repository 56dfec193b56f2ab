"""Concurrency: rater threads here, and two processes each with rater threads and two claimer threads, all at
once; afterwards every scored sample is in exactly one trained batch and every rating reported committed is
stored, once. On SQLite (one writer at a time) and on PostgreSQL (READ COMMITTED, row locks, many writers)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from storage_helpers import new_sample
from storage_worker import rate_until_empty, reporting_errors

import storage
from storage import Database, StepIn
from storage.schema import Rater, Rating, Sample, TrainingBatch

WORKER = Path(__file__).with_name("storage_worker.py")
pytestmark = pytest.mark.slow


class Reader(threading.Thread):
    """Collects a subprocess's stdout lines as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc, self.lines = proc, []  # type: ignore[var-annotated]
        self.ready, self.raters_done = threading.Event(), threading.Event()

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("READY"):
                self.ready.set()
            if line.startswith("RATERS_DONE"):
                self.raters_done.set()


def _spawn(db_url: str, raters: str, claimer: str, stop_file: Path) -> Reader:
    cmd = [sys.executable, str(WORKER), db_url, "--raters", raters, "--claimer", claimer]
    cmd += ["--claimers", "2", "--batch-size", "4", "--stop-file", str(stop_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    reader = Reader(proc)
    reader.start()
    return reader


def _seed(db: Database, n_samples: int) -> None:
    with db.session_factory.begin() as s:
        storage.add_prompts(s, [f"prompt {i}" for i in range(10)], source="conc")
        prompt_ids = [p.id for p in storage.prompts_for_generation(s, 10)]
        storage.add_samples(s, [new_sample(prompt_ids[i % 10], i % 3) for i in range(n_samples)])


def _rate_locally(db: Database, raters: list[str], lines: list[str]) -> list[threading.Thread]:
    rate = reporting_errors(rate_until_empty, lines.append)
    threads = [threading.Thread(target=rate, args=(db, name, lines.append)) for name in raters]
    for t in threads:
        t.start()
    return threads


def test_threads_and_two_processes_rate_and_claim_exactly_once(db: Database, tmp_path: Path) -> None:
    _seed(db, 120)
    stop_file = tmp_path / "stop"
    readers = [_spawn(db.url, "pA1,pA2", "proc-a", stop_file), _spawn(db.url, "pB1,pB2", "proc-b", stop_file)]
    for r in readers:  # start together, so the processes really race the threads
        assert r.ready.wait(60)
    local_lines: list[str] = []
    for t in _rate_locally(db, ["t1", "t2", "t3"], local_lines):
        t.join(120)
        assert not t.is_alive(), "a local rater is still rating"
    for r in readers:
        assert r.raters_done.wait(60)
    stop_file.touch()  # the claimers drain what is left in full batches, then stop
    for r in readers:
        assert r.proc.wait(60) == 0
        r.join(5)
    lines = local_lines + [line for r in readers for line in r.lines]
    assert [line for line in lines if line.startswith("ERROR")] == []
    _drain_leftovers(db, lines)
    _check(db, lines)


def _drain_leftovers(db: Database, lines: list[str]) -> None:
    """Scored samples short of a full batch of 4: train them one by one, as a final trainer would."""
    while True:
        with db.session_factory.begin() as s:
            batch = storage.claim_next_batch(s, 1, "drain")
            if batch is None:
                return
            storage.finish_batch(s, batch, StepIn(0, {}))
        lines.append(f"CLAIMED {batch.batch_id} {batch.samples[0].sample_id}")
        lines.append(f"TRAINED {batch.batch_id}")


def _check(db: Database, lines: list[str]) -> None:
    rated = {tuple(line.split()[1:]) for line in lines if line.startswith("RATED")}
    claimed = [line.split() for line in lines if line.startswith("CLAIMED")]
    trained = {line.split()[1] for line in lines if line.startswith("TRAINED")}
    in_claims = Counter(int(sid) for _, _, sids in claimed for sid in sids.split(","))
    assert len(rated) > 120 and len(claimed) > 10  # the test really raced
    assert max(in_claims.values()) == 1, "a sample was handed to two trainers"
    assert {batch_id for _, batch_id, _ in claimed} == trained
    with db.session_factory.begin() as s:
        stored = {
            (str(sid), name, str(score))
            for sid, name, score in s.execute(
                select(Rating.sample_id, Rater.name, Rating.score).join(Rater, Rater.id == Rating.rater_id)
            )
        }
        assert stored == rated, "a reported rating is missing, or an unreported one appeared"
        scored = s.execute(
            select(Sample.id, Sample.human_n, TrainingBatch.status, Sample.train_score)
            .outerjoin(TrainingBatch, TrainingBatch.id == Sample.batch_id)
            .where(Sample.human_n > 0)
        ).all()
        unclaimed = {sid for sid, *_ in scored} - set(in_claims)
        assert not unclaimed, _rows(s, unclaimed)
        assert {sid for sid, *_ in scored} == set(in_claims)
        assert all(status == "trained" and score is not None for _, _, status, score in scored)
        per_sample = dict(s.execute(select(Rating.sample_id, func.count()).group_by(Rating.sample_id)).tuples().all())
        assert all(per_sample[sid] == n for sid, n, _, _ in scored)  # counters match the rows
        counts = storage.counts(s)
    assert (counts.scored_not_trained, counts.in_claimed_batches, counts.failed) == (0, 0, 0)
    assert counts.trained == len(in_claims) and counts.ratings == len(rated)


def _rows(s: Session, sample_ids: set[int]) -> str:
    """What a failure needs to say about samples left behind: their claim, lease and counters."""
    cols = (Sample.id, Sample.batch_id, Sample.stale, Sample.human_n, Sample.lease_rater_id, Sample.lease_expires_at)
    rows = s.execute(select(*cols).where(Sample.id.in_(sample_ids))).all()
    ratings = s.execute(select(Rating.sample_id, Rating.rater_id, Rating.score).where(Rating.sample_id.in_(sample_ids)))
    return f"scored but never claimed: {[tuple(r) for r in rows]}; their ratings: {[tuple(r) for r in ratings]}"

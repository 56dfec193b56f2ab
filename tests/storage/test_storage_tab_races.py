"""One rater's two browser tabs sending the same action at the same moment: the second waits for the first and
then does what it would have done after it, on SQLite (one writer at a time) and on PostgreSQL (READ COMMITTED:
the second's statements run while the first's transaction is still open)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from storage_helpers import in_tx, rater, seed

import storage
from storage import Database
from storage.schema import RatingHistory, Sample, Skip

pytestmark = pytest.mark.slow


def _first_tab_holds_its_transaction(db: Database, action: Callable[[Any], object]) -> tuple[threading.Thread, list]:
    """Run ``action(session)`` in a thread and keep its transaction open (locks held) for 0.3 s after it."""
    done: list[object] = []
    acted = threading.Event()

    def first_tab() -> None:
        with db.session_factory.begin() as s:
            done.append(action(s))
            acted.set()
            time.sleep(0.3)  # the second tab's request arrives meanwhile

    thread = threading.Thread(target=first_tab)
    thread.start()
    assert acted.wait(10)
    return thread, done


def test_two_tabs_skipping_the_same_sample_at_once_both_succeed(db: Database) -> None:
    _, (sid, _) = seed(db, prompts=1, samples_per_prompt=2)
    alice = rater(db, "alice")
    thread, _ = _first_tab_holds_its_transaction(db, lambda s: storage.skip_sample(s, alice, sid))
    try:
        in_tx(db)(storage.skip_sample, alice, sid)  # idempotent, as documented: no error for the second tab
    finally:
        thread.join()
    with db.session_factory.begin() as s:  # next_sample_for_rater leases: a write
        assert s.scalar(select(func.count()).select_from(Skip)) == 1
        assert storage.next_sample_for_rater(s, alice).id != sid


def test_two_tabs_undoing_at_once_undo_two_ratings_not_one_twice(db: Database) -> None:
    _, (s1, s2) = seed(db, prompts=1, samples_per_prompt=2)
    alice = rater(db, "alice")
    run = in_tx(db)
    run(storage.record_rating, s1, alice, 0.5)
    run(storage.record_rating, s2, alice, -0.5)
    thread, first = _first_tab_holds_its_transaction(db, lambda s: storage.undo_last_rating(s, alice))
    try:
        second = run(storage.undo_last_rating, alice)
    finally:
        thread.join()
    assert first[0] is not None and second is not None
    assert {first[0].sample_id, second.sample_id} == {s1, s2}  # as if one after the other
    with db.read_session_factory.begin() as s:
        assert storage.ratings_for_sample(s, s1) == storage.ratings_for_sample(s, s2) == []
        assert s.execute(select(Sample.human_n).where(Sample.id.in_([s1, s2]))).scalars().all() == [0, 0]
        assert s.scalar(select(func.count()).select_from(RatingHistory)) == 2  # one undo each

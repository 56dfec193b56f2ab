"""Admin switches shared by the processes of a deployment: the latest value per switch, who set it and when; bad
input is refused with nothing written; two processes creating the same switch at once. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from storage_helpers import in_tx

from storage import Database
from storage.errors import InvalidInput
from storage.switches import RATING_MODE, REWARD_SOURCE, read_switches, set_switch

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_a_switch_keeps_its_latest_value_who_set_it_and_when(db: Database) -> None:
    run = in_tx(db)
    assert run(read_switches) == {}
    run(set_switch, RATING_MODE, "pairwise", "alice", now=T0)
    run(set_switch, REWARD_SOURCE, "vader", "token", now=T0)
    run(set_switch, RATING_MODE, "single", "bob", now=T0 + timedelta(seconds=5))
    stored = run(read_switches)
    assert {name: r.value for name, r in stored.items()} == {RATING_MODE: "single", REWARD_SOURCE: "vader"}
    assert stored[RATING_MODE].changed_by == "bob" and stored[RATING_MODE].changed_at == T0 + timedelta(seconds=5)
    assert stored[REWARD_SOURCE].changed_by == "token" and stored[REWARD_SOURCE].changed_at == T0


@pytest.mark.parametrize(
    ("name", "value", "by"),
    [
        ("colour", "blue", "alice"),
        (RATING_MODE, "", "alice"),
        (RATING_MODE, "x" * 1000, "alice"),
        (RATING_MODE, "a\x00", "alice"),
        (RATING_MODE, "pairwise", ""),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(db: Database, name: str, value: str, by: str) -> None:
    run = in_tx(db)
    run(set_switch, RATING_MODE, "single", "alice", now=T0)
    with pytest.raises(InvalidInput):
        run(set_switch, name, value, by)
    stored = run(read_switches)
    assert list(stored) == [RATING_MODE] and stored[RATING_MODE].value == "single"


def test_two_processes_switching_at_once_both_succeed_and_the_later_commit_stands(db: Database) -> None:
    """The second writer's statement runs while the first's insert of the same switch is uncommitted: it waits
    for the first to commit (a lock on PostgreSQL, SQLite's busy wait), then updates the row instead of failing."""
    first = db.session_factory()
    errors: list[BaseException] = []

    def second_admin() -> None:
        try:
            with db.session_factory.begin() as s:
                set_switch(s, RATING_MODE, "single", "bob", now=T0 + timedelta(seconds=1))
        except BaseException as err:
            errors.append(err)

    try:
        first.begin()
        set_switch(first, RATING_MODE, "pairwise", "alice", now=T0)  # inserted, not committed
        thread = threading.Thread(target=second_admin)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # the second writer waits for the first
        first.commit()
        thread.join(10)
    finally:
        first.close()
    assert not thread.is_alive() and errors == []
    stored = in_tx(db)(read_switches)
    assert stored[RATING_MODE].value == "single" and stored[RATING_MODE].changed_by == "bob"

"""Claims carry their owner and a heartbeat: start-up recovery frees only the starting process's own claims and
those of dead owners; one trainer per database; published versions only grow. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from storage_helpers import in_tx, rater, seed

import storage
from storage import Database, StepIn
from storage.owners import RoleTaken, beat, live_owners, mark_stopped, register_owner, release_orphaned_claims
from storage.published import announce_version, forget_published, list_published, newest_published

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
EXPIRY = 30.0
SHA = "ab" * 32


def _claim(db: Database, owner: str, n: int = 2) -> int:
    _, sids = seed(db, prompts=1, samples_per_prompt=n)
    alice = rater(db, f"alice-{owner}")
    run = in_tx(db)
    for sid in sids:
        run(storage.record_rating, sid, alice, 0.5)
    return int(run(storage.claim_next_batch, n, owner, now=T0).batch_id)


def test_startup_recovery_frees_its_own_and_dead_owners_claims_never_a_live_ones(db: Database) -> None:
    run = in_tx(db)
    run(register_owner, "trainer-live", "train", trainer=True, expiry_s=EXPIRY, now=T0)
    run(register_owner, "trainer-dead", "train", trainer=False, expiry_s=EXPIRY, now=T0 - timedelta(minutes=5))
    run(register_owner, "stopped", "all", trainer=False, expiry_s=EXPIRY, now=T0)
    run(mark_stopped, "stopped", now=T0)
    live = _claim(db, "trainer-live")
    dead, stopped, unknown, mine = (_claim(db, o) for o in ("trainer-dead", "stopped", "before-0005", "me"))
    now = T0 + timedelta(seconds=10)
    released = run(release_orphaned_claims, "me", EXPIRY, now=now)
    assert released == [dead, stopped, unknown, mine]
    assert run(storage.get_batch, live).status == "claimed"
    assert {run(storage.get_batch, b).status for b in released} == {"pending"}
    assert run(release_orphaned_claims, "serve-2", EXPIRY, now=now) == []  # a second front-end: nothing to free
    # the live trainer stops beating: once its heartbeat is older than the expiry, its claim is free too
    assert run(release_orphaned_claims, "me", EXPIRY, now=T0 + timedelta(seconds=EXPIRY + 1)) == [live]


def test_a_heartbeat_keeps_an_owner_alive_and_a_stopped_one_cannot_beat(db: Database) -> None:
    run = in_tx(db)
    run(register_owner, "serve-a", "serve", trainer=False, expiry_s=EXPIRY, now=T0)
    later = T0 + timedelta(seconds=EXPIRY + 5)
    assert [o.owner for o in run(live_owners, EXPIRY, now=later)] == []
    assert run(beat, "serve-a", now=later - timedelta(seconds=1))
    assert [o.owner for o in run(live_owners, EXPIRY, now=later)] == ["serve-a"]
    run(mark_stopped, "serve-a", now=later)
    assert not run(beat, "serve-a", now=later)
    assert not run(beat, "never-registered", now=later)
    assert run(live_owners, EXPIRY, now=later) == []


def test_one_trainer_per_database_until_it_dies(db: Database) -> None:
    run = in_tx(db)
    first = run(register_owner, "train-1", "train", trainer=True, expiry_s=EXPIRY, now=T0)
    assert first.trainer
    run(register_owner, "serve-1", "serve", trainer=False, expiry_s=EXPIRY, now=T0)  # front-ends: any number
    with pytest.raises(RoleTaken, match="another trainer is alive"):
        run(register_owner, "train-2", "train", trainer=True, expiry_s=EXPIRY, now=T0 + timedelta(seconds=5))
    assert [o.owner for o in run(live_owners, EXPIRY, now=T0)] == ["train-1", "serve-1"]
    second = run(register_owner, "train-2", "all", trainer=True, expiry_s=EXPIRY, now=T0 + timedelta(seconds=40))
    assert second.trainer  # the first one's heartbeat expired: its slot is taken over
    run(mark_stopped, "train-2", now=T0 + timedelta(seconds=41))
    assert run(register_owner, "train-3", "train", trainer=True, expiry_s=EXPIRY, now=T0 + timedelta(seconds=42))


def test_two_trainers_starting_at_once_get_one_slot(db_url: str) -> None:
    """Two processes (two engines) race for the slot: exactly one wins, on either backend's isolation."""
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def start(name: str) -> None:
        with storage.open_database(db_url) as own:
            barrier.wait()
            try:
                with own.session_factory.begin() as s:
                    register_owner(s, name, "train", trainer=True, expiry_s=EXPIRY)
                outcomes.append("won")
            except RoleTaken:
                outcomes.append("refused")

    threads = [threading.Thread(target=start, args=(f"t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["refused", "won"]


def test_bad_owners_are_refused(db: Database) -> None:
    run = in_tx(db)
    with pytest.raises(storage.InvalidInput):
        run(register_owner, "", "train", trainer=True, expiry_s=EXPIRY)
    with pytest.raises(storage.InvalidInput):
        run(register_owner, "x", "boss", trainer=False, expiry_s=EXPIRY)


def test_published_versions_only_grow_and_old_ones_are_forgotten(db: Database) -> None:
    run = in_tx(db)
    assert run(newest_published) is None
    for version in (1, 2, 5):
        run(announce_version, version, f"/w/v{version}.safetensors", SHA, "train-1", now=T0)
    assert run(newest_published).version == 5
    for bad in (5, 3):
        with pytest.raises(storage.InvalidInput, match="not newer"):
            run(announce_version, bad, "/w/x", SHA, "train-1")
    with pytest.raises(storage.InvalidInput, match="sha256"):
        run(announce_version, 6, "/w/v6", "not-a-digest", "train-1")
    assert [r.version for r in run(forget_published, 2)] == [1]
    assert [r.version for r in run(list_published)] == [2, 5]


def test_a_late_finish_after_a_wrong_death_verdict_is_refused(db: Database) -> None:
    """A trainer whose heartbeat stalled past the expiry lost its claim: its finish is refused (trained once)."""
    run = in_tx(db)
    run(register_owner, "slow", "train", trainer=True, expiry_s=EXPIRY, now=T0)
    batch_id = _claim(db, "slow")
    claimed = run(storage.claim_next_batch, 2, "slow")  # nothing new to claim: the batch above is held
    assert claimed is None
    with db.session_factory.begin() as s:
        held = storage.batches._claimed_batch(s, batch_id)
    assert run(release_orphaned_claims, "next", EXPIRY, now=T0 + timedelta(seconds=EXPIRY + 1)) == [batch_id]
    retaken = run(storage.claim_next_batch, 2, "next")
    with pytest.raises(storage.StaleClaim):
        run(storage.finish_batch, held, StepIn(1, {}))
    run(storage.finish_batch, retaken, StepIn(1, {}))

"""Faults never burn a batch: returned batches stay pending, lost steps go back to training, sizes can change."""

from __future__ import annotations

import pytest
from storage_helpers import in_tx, rater, seed

import storage
from storage import Database, StepIn
from storage.batches import requeue_failed_batch, return_batch
from storage.history import forget_checkpoints, list_lost_steps, newest_version, retire_steps_after


def _scored(db: Database, n: int, version: int = 0, score: float = 0.5) -> list[int]:
    _, sids = seed(db, prompts=1, samples_per_prompt=n, version=version)
    alice = rater(db, "alice")
    with db.session_factory.begin() as s:
        for sid in sids:
            storage.record_rating(s, sid, alice, score)
    return sids


def _train(db: Database, size: int, version: int) -> int:
    run = in_tx(db)
    batch = run(storage.claim_next_batch, size, "trainer")
    run(storage.finish_batch, batch, StepIn(version, {"ppo/loss/total": 0.1}))
    return int(batch.batch_id)


def test_an_infrastructure_fault_returns_the_batch_whatever_its_attempts(db: Database) -> None:
    run = in_tx(db)
    _scored(db, 2)
    for attempt in range(1, 6):  # more than max_attempts (3)
        batch = run(storage.claim_next_batch, 2, "trainer")
        assert batch.attempt == attempt
        record = run(return_batch, batch, "OSError: no space left on device")
        assert record.status == "pending"
    crashed = run(storage.claim_next_batch, 2, "trainer")  # and a process that dies holding it: still pending
    assert run(storage.release_all_claims) == [crashed.batch_id]
    assert run(storage.get_batch, crashed.batch_id).status == "pending"
    with pytest.raises(storage.BatchStateError):
        run(return_batch, crashed.batch_id, "not claimed any more")


def test_an_admin_requeues_a_failed_batch_with_its_samples_and_scores(db: Database) -> None:
    run = in_tx(db)
    sids = _scored(db, 2, score=0.25)
    batch = run(storage.claim_next_batch, 2, "trainer")
    run(storage.fail_batch, batch, "ValueError: bad token ids", retry=False)
    assert run(storage.claim_next_batch, 2, "trainer") is None  # failed for good: never trained
    with pytest.raises(storage.BatchStateError):
        run(requeue_failed_batch, _train_other(db))
    record = run(requeue_failed_batch, batch.batch_id)
    assert (record.status, record.attempts, record.finished_at) == ("pending", 0, None)
    again = run(storage.claim_next_batch, 2, "trainer")
    assert again.batch_id == batch.batch_id and sorted(x.sample_id for x in again.samples) == sorted(sids)
    assert again.scores == (0.25, 0.25)


def _train_other(db: Database) -> int:
    _scored(db, 1)
    return _train(db, 1, 1)


def test_a_pending_batch_of_another_size_goes_back_to_the_pool_and_is_trained_in_new_batches(db: Database) -> None:
    run = in_tx(db)
    sids = _scored(db, 4, score=0.75)
    first = run(storage.claim_next_batch, 2, "trainer")
    second = run(storage.claim_next_batch, 2, "trainer")
    assert run(storage.release_all_claims) == [first.batch_id, second.batch_id]  # a crash, then --batch-size 4
    batch = run(storage.claim_next_batch, 4, "trainer")
    assert batch is not None and sorted(x.sample_id for x in batch.samples) == sorted(sids)
    assert batch.scores == (0.75,) * 4  # the same ratings give the same scores
    released = [run(storage.get_batch, b.batch_id) for b in (first, second)]
    assert [b.status for b in released] == ["released", "released"]
    assert all("open pool" in (b.error or "") for b in released)
    assert run(storage.counts).in_claimed_batches == 4


def test_steps_after_the_loaded_checkpoint_go_back_to_training_and_their_versions_stay_retired(
    db: Database,
) -> None:
    run = in_tx(db)
    _scored(db, 6, version=0)
    batch_ids = [_train(db, 2, version) for version in (1, 2, 3)]
    assert run(newest_version) == 3

    lost = run(retire_steps_after, 1)  # the checkpoint loaded on restart holds version 1
    assert [(x.batch_id, x.policy_version) for x in lost] == [(batch_ids[1], 2), (batch_ids[2], 3)]
    assert [x.policy_version for x in run(storage.training_history)] == [1]
    assert run(newest_version) == 3  # 2 and 3 are never produced again
    assert [x.policy_version for x in run(list_lost_steps)] == [2, 3]
    assert [run(storage.get_batch, b).status for b in batch_ids] == ["trained", "pending", "pending"]
    assert run(retire_steps_after, 1) == []  # idempotent

    # Their samples (version 0) are older than the window at version 4 with max_staleness 2: trained anyway.
    again = run(storage.claim_next_batch, 2, "trainer", min_policy_version=2)
    assert again.batch_id == batch_ids[1]
    run(storage.finish_batch, again, StepIn(4, {"ppo/loss/total": 0.1}))
    assert run(storage.claim_next_batch, 2, "trainer", min_policy_version=2).batch_id == batch_ids[2]
    assert run(newest_version) == 4


def test_forgetting_checkpoints_deletes_only_their_records(db: Database) -> None:
    run = in_tx(db)
    for version in (1, 2, 3):
        run(storage.record_checkpoint, version, f"/ckpt/v{version}")
    assert run(forget_checkpoints, [1, 2, 7]) == 2
    assert [c.version for c in run(storage.list_checkpoints)] == [3]
    assert run(forget_checkpoints, []) == 0

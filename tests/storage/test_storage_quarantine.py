"""Score quarantine: a sample a reward model raised or hung on is never given to that model again, and stays
rateable by people."""

from __future__ import annotations

import pytest
from storage_helpers import in_tx, rater, seed, snapshot

import storage
from storage import Database


def test_a_quarantined_sample_is_left_out_for_that_source_only(db: Database) -> None:
    run = in_tx(db)
    _, (s1, s2, s3) = seed(db, prompts=1, samples_per_prompt=3)
    assert run(storage.quarantine_sample, s2, "vader", "raised ValueError") is True
    assert sorted(x.id for x in run(storage.samples_needing_auto_score, "vader", 10)) == [s1, s3]
    assert len(run(storage.samples_needing_auto_score, "length:4", 10)) == 3  # another reward model may try it
    assert run(storage.count_quarantined, "vader") == 1
    assert run(storage.count_quarantined, "length:4") == 0
    assert run(storage.quarantine_reasons, "vader") == {s2: "raised ValueError"}


def test_quarantining_again_keeps_the_first_reason(db: Database) -> None:
    run = in_tx(db)
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    assert run(storage.quarantine_sample, sid, "vader", "no answer within 30 s")
    assert not run(storage.quarantine_sample, sid, "vader", "raised KeyError")
    assert run(storage.quarantine_sample, sid, "length:4", "raised KeyError")
    assert run(storage.quarantine_reasons, "vader") == {sid: "no answer within 30 s"}
    assert run(storage.count_quarantined) == 1  # one sample, however many sources gave up on it
    assert run(storage.count_quarantined, "length:4") == 1


def test_a_quarantined_sample_stays_rateable_and_trainable_by_people(db: Database) -> None:
    run = in_tx(db)
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    run(storage.quarantine_sample, sid, "vader", "raised ValueError")
    alice = rater(db, "alice")
    assert run(storage.next_sample_for_rater, alice).id == sid
    run(storage.record_rating, sid, alice, 0.5)
    batch = run(storage.claim_next_batch, 1, "trainer")
    assert batch is not None and [x.sample_id for x in batch.samples] == [sid]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((999, "vader", "raised ValueError"), storage.UnknownSample),
        ((0, "vader", "raised ValueError"), storage.UnknownSample),
        ((1, "human", "raised ValueError"), storage.InvalidInput),  # people's source is not a reward model
        ((1, "  ", "raised ValueError"), storage.InvalidInput),
        ((1, "vader", ""), storage.InvalidInput),
        ((1, "vader", "x" * 501), storage.InvalidInput),
        ((1, "vader", None), storage.InvalidInput),
    ],
)
def test_bad_quarantine_requests_write_nothing(db: Database, args: tuple[object, ...], error: type) -> None:
    seed(db, prompts=1, samples_per_prompt=1)
    before = snapshot(db)
    with pytest.raises(error):
        in_tx(db)(storage.quarantine_sample, *args)
    assert snapshot(db) == before

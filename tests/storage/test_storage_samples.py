"""Samples: validation on add, the rater queue (leases, newest version first, skips), the reward-model queue."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from storage_helpers import in_tx, new_sample, rater, seed, snapshot

import storage
from storage import Database, NewSample
from storage.samples import count_in_flight, oldest_waiting_rating

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_add_samples_round_trips_token_ids_logprobs_and_settings(db: Database) -> None:
    run = in_tx(db)
    (pid,), _ = seed(db, prompts=1, samples_per_prompt=0)
    sample = NewSample(pid, "hi there", [5, 6], [7, 8, 9], 3, [-0.25, -1.5, -3.0], {"temperature": 0.7, "top_p": 1})
    (sid,) = run(storage.add_samples, [sample])
    got = run(storage.get_sample, sid)
    assert (got.query_ids, got.response_ids, got.behaviour_logprobs) == ((5, 6), (7, 8, 9), (-0.25, -1.5, -3.0))
    assert got.policy_version == 3 and got.prompt_text == "prompt 0" and got.response_text == "hi there"
    assert dict(got.generation_settings) == {"temperature": 0.7, "top_p": 1}
    assert got.created_at.tzinfo is not None
    assert run(storage.prompts_for_generation, 1)[0].sample_count == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"query_ids": []},
        {"query_ids": "1 2 3"},
        {"response_ids": [1, "2"]},
        {"response_ids": [1, -2]},
        {"response_ids": [True]},
        {"behaviour_logprobs": [-0.1, -0.2]},  # one per response token
        {"behaviour_logprobs": [-0.1, math.nan, -0.3]},
        {"behaviour_logprobs": [-0.1, 0.5, -0.3]},  # a log-probability is <= 0
        {"policy_version": -1},
        {"policy_version": "3"},
        {"generation_settings": {"stop": object()}},
        {"generation_settings": {"temperature": math.inf}},
        {"prompt_id": 0},
    ],
)
def test_bad_samples_are_refused_on_construction(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "prompt_id": 1,
        "response_text": "r",
        "query_ids": [1],
        "response_ids": [1, 2, 3],
        "policy_version": 0,
        "behaviour_logprobs": [-0.1, -0.2, -0.3],
        "generation_settings": {},
    }
    with pytest.raises(storage.InvalidSample):
        NewSample(**{**fields, **kwargs})  # type: ignore[arg-type]


def test_unknown_prompt_writes_nothing(db: Database) -> None:
    (pid,), _ = seed(db, prompts=1, samples_per_prompt=0)
    before = snapshot(db)
    with pytest.raises(storage.UnknownPrompt), db.session_factory.begin() as s:
        storage.add_samples(s, [new_sample(pid), new_sample(pid + 99)])
    assert snapshot(db) == before


def test_two_raters_never_get_the_same_sample_at_once(db: Database) -> None:
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=2)
    alice, bob, carol = rater(db, "alice"), rater(db, "bob"), rater(db, "carol")
    a = run(storage.next_sample_for_rater, alice)
    b = run(storage.next_sample_for_rater, bob)
    assert a is not None and b is not None and a.id != b.id
    assert run(storage.next_sample_for_rater, carol) is None  # both samples are leased
    assert run(storage.count_unrated_unleased) == 0


def test_asking_again_returns_the_same_leased_sample_until_rated(db: Database) -> None:
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=3)
    alice = rater(db, "alice")
    first = run(storage.next_sample_for_rater, alice)
    assert run(storage.next_sample_for_rater, alice).id == first.id
    run(storage.record_rating, first.id, alice, 0.5)
    second = run(storage.next_sample_for_rater, alice)
    assert second is not None and second.id != first.id


def test_expired_lease_is_offered_to_someone_else(db: Database) -> None:
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=1)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    leased = run(storage.next_sample_for_rater, alice, lease_seconds=60, now=T0)
    assert run(storage.next_sample_for_rater, bob, now=T0 + timedelta(seconds=59)) is None
    later = run(storage.next_sample_for_rater, bob, now=T0 + timedelta(seconds=61))
    assert later is not None and later.id == leased.id
    # alice's lease is gone: she gets nothing (bob holds it now)
    assert run(storage.next_sample_for_rater, alice, now=T0 + timedelta(seconds=62)) is None


def test_skip_ends_the_lease_and_is_never_offered_again(db: Database) -> None:
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=2)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    first = run(storage.next_sample_for_rater, alice)
    run(storage.skip_sample, alice, first.id)
    run(storage.skip_sample, alice, first.id)  # idempotent
    second = run(storage.next_sample_for_rater, alice)
    assert second.id != first.id
    run(storage.record_rating, second.id, alice, 0.0)
    assert run(storage.next_sample_for_rater, alice) is None
    assert run(storage.next_sample_for_rater, bob).id in (first.id, second.id)  # skips are per rater


def test_queue_is_newest_policy_version_first_then_unrated_first(db: Database) -> None:
    run = in_tx(db)
    (pid,), _ = seed(db, prompts=1, samples_per_prompt=0)
    old, new_a, new_b, mid = run(
        storage.add_samples, [new_sample(pid, 1), new_sample(pid, 5), new_sample(pid, 5), new_sample(pid, 3)]
    )
    alice, bob = rater(db, "alice"), rater(db, "bob")
    run(storage.record_rating, new_b, bob, 0.1)  # new_b already has a human rating
    order = []
    for _ in range(5):  # bounded: a broken queue must fail, not loop
        if (got := run(storage.next_sample_for_rater, alice)) is None:
            break
        order.append(got.id)
        run(storage.record_rating, got.id, alice, 0.0)
    assert order == [new_a, new_b, mid, old]


def test_samples_needing_auto_score(db: Database) -> None:
    run = in_tx(db)
    _, (s1, s2, s3) = seed(db, prompts=1, samples_per_prompt=3)
    vader = run(storage.get_or_create_model_rater, "vader").id
    run(storage.record_rating, s2, vader, 0.3, source="vader")
    todo = run(storage.samples_needing_auto_score, "vader", 10)
    assert sorted(x.id for x in todo) == [s1, s3]
    assert len(run(storage.samples_needing_auto_score, "length", 10)) == 3  # another model: all of them
    with pytest.raises(ValueError):
        run(storage.samples_needing_auto_score, "human", 10)


def test_count_unrated_unleased_is_the_generator_buffer(db: Database) -> None:
    run = in_tx(db)
    _, (s1, _s2, _s3) = seed(db, prompts=1, samples_per_prompt=3)
    alice = rater(db, "alice")
    vader = run(storage.get_or_create_model_rater, "vader").id
    assert run(storage.count_unrated_unleased) == 3
    run(storage.record_rating, s1, vader, 0.2, source="vader")  # automatic scores do not empty the buffer
    assert run(storage.count_unrated_unleased) == 3
    leased = run(storage.next_sample_for_rater, alice)
    assert run(storage.count_unrated_unleased) == 2
    run(storage.record_rating, leased.id, alice, 0.5)
    assert run(storage.count_unrated_unleased) == 2


def test_unknown_rater_and_sample_ids(db: Database) -> None:
    run = in_tx(db)
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    alice = rater(db, "alice")
    with pytest.raises(storage.UnknownRater):
        run(storage.next_sample_for_rater, alice + 100)
    with pytest.raises(storage.UnknownSample):
        run(storage.skip_sample, alice, sid + 100)
    with pytest.raises(storage.UnknownSample):
        run(storage.get_sample, "1")


def test_count_unrated_unleased_can_skip_old_versions(db: Database) -> None:
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=2, version=0)
    with db.session_factory.begin() as s:
        prompt_id = storage.prompts_for_generation(s, 1)[0].id
        storage.add_samples(s, [new_sample(prompt_id, 3)])
    assert run(storage.count_unrated_unleased) == 3
    assert run(storage.count_unrated_unleased, min_policy_version=1) == 1


def test_a_rater_holding_two_leases_is_shown_the_most_recent(db: Database) -> None:
    run = in_tx(db)
    _, (s1, s2) = seed(db, prompts=1, samples_per_prompt=2)
    alice = rater(db, "alice")
    now = datetime.now(UTC)
    with db.session_factory.begin() as s:  # two leases at once, as an undo can leave them
        for sample_id, expires in ((s1, now + timedelta(minutes=5)), (s2, now + timedelta(minutes=10))):
            row = s.get(storage.schema.Sample, sample_id)
            row.lease_rater_id, row.lease_expires_at = alice, expires
    assert run(storage.next_sample_for_rater, alice).id == s2


def test_the_queue_serves_only_versions_from_the_minimum_and_in_flight_counts_what_the_trainer_will_take(
    db: Database,
) -> None:
    run = in_tx(db)
    (pid,), _ = seed(db, prompts=1, samples_per_prompt=0)
    _old, held, rated, new = run(storage.add_samples, [new_sample(pid, v) for v in (1, 1, 1, 3)])
    alice, bob = rater(db, "alice"), rater(db, "bob")
    run(storage.record_rating, rated, alice, 0.5)
    assert run(storage.offer_sample, alice, held) is not None
    assert run(storage.next_sample_for_rater, bob, min_policy_version=3).id == new
    assert run(storage.next_sample_for_rater, rater(db, "carol"), min_policy_version=3) is None  # old ones: never
    # bob holds `new` now: in flight are the rated one, both held ones, and nothing else of version 3
    assert run(count_in_flight, 3) == 3  # not `old`: unrated, nobody holds it, older than version 3


def test_oldest_waiting_rating_is_the_first_human_rating_of_a_sample_no_batch_has_taken(db: Database) -> None:
    run = in_tx(db)
    _, (auto_only, rated_second, rated_first) = seed(db, prompts=1, samples_per_prompt=3)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    vader = run(storage.get_or_create_model_rater, "vader").id
    assert run(oldest_waiting_rating) is None
    run(storage.record_rating, auto_only, vader, 0.2, source="vader")
    assert run(oldest_waiting_rating) is None  # a reward model's score is not a person waiting
    first = run(storage.record_rating, rated_first, alice, 0.5)
    second = run(storage.record_rating, rated_second, alice, -0.5)
    run(storage.record_rating, rated_second, bob, 0.5)
    assert first.created_at <= second.created_at
    assert run(oldest_waiting_rating) == first.created_at
    batch = run(storage.claim_next_batch, 1, "trainer", use_auto_scores=False)  # the newest sample: rated_first
    assert [x.sample_id for x in batch.samples] == [rated_first]
    assert run(oldest_waiting_rating) == second.created_at
    run(storage.claim_next_batch, 1, "trainer", use_auto_scores=False)
    assert run(oldest_waiting_rating) is None

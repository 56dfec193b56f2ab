"""Pairs: formation, leases (never two raters on one pair), answers, skip, undo, derived scores trained once.
Each test runs on SQLite and on PostgreSQL (the ``db`` fixture)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from storage_helpers import in_tx, new_sample, rater, seed, snapshot

import storage
from storage import Database, StepIn
from storage.errors import AlreadyRated, InvalidInput, RatingLocked
from storage.pair_scores import prompt_outcomes, write_derived_scores
from storage.pairs import next_pair_for_rater, pair_progress, record_comparison, skip_pair, undo_last_comparison
from storage.samples import oldest_waiting_rating
from storage.schema import ComparisonHistory

BT = "bt@pairwise"


def _members(p: storage.records.PairRecord) -> set[int]:
    return {p.sample_a_id, p.sample_b_id}


def test_pairs_are_two_samples_of_one_prompt_leased_to_one_rater(db: Database) -> None:
    run = in_tx(db)
    _, samples = seed(db, prompts=2, samples_per_prompt=2)
    alice, bob, carol = rater(db, "alice"), rater(db, "bob"), rater(db, "carol")
    a = run(next_pair_for_rater, alice)
    assert a is not None and a.sample_a_id != a.sample_b_id
    assert {a.sample_a_id, a.sample_b_id} in ({samples[0], samples[1]}, {samples[2], samples[3]})
    assert run(next_pair_for_rater, alice).pair_id == a.pair_id  # asking again: the same pair, lease renewed
    b = run(next_pair_for_rater, bob)
    assert b is not None and _members(a).isdisjoint(_members(b)) and a.prompt_id != b.prompt_id
    assert run(next_pair_for_rater, carol) is None  # every open sample is in front of someone
    # the trainer never claims a sample a rater is comparing
    assert run(storage.claim_next_batch, 1, "t", use_auto_scores=True) is None


def test_answer_once_then_second_opinion_and_refusals(db: Database) -> None:
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=2)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    pair = run(next_pair_for_rater, alice)
    before = snapshot(db)
    with pytest.raises(InvalidInput):
        run(record_comparison, pair.pair_id, alice, "a_much_better")
    assert snapshot(db) == before
    run(record_comparison, pair.pair_id, alice, "a_better")
    run(record_comparison, pair.pair_id, alice, "a_better")  # a double click: no-op
    with pytest.raises(AlreadyRated):
        run(record_comparison, pair.pair_id, alice, "b_better")
    assert run(next_pair_for_rater, alice) is None  # answered: never shown to alice again
    assert run(next_pair_for_rater, bob).pair_id == pair.pair_id  # a second opinion
    assert run(pair_progress, alice).compared == 1


def test_skip_and_undo(db: Database) -> None:
    run = in_tx(db)
    seed(db, prompts=2, samples_per_prompt=2)
    alice = rater(db, "alice")
    first = run(next_pair_for_rater, alice)
    run(skip_pair, alice, first.pair_id)
    second = run(next_pair_for_rater, alice)
    assert second.pair_id != first.pair_id
    run(record_comparison, second.pair_id, alice, "tie")
    assert run(next_pair_for_rater, alice) is None
    undone = run(undo_last_comparison, alice)
    assert undone is not None and undone.answer == "tie"
    assert run(next_pair_for_rater, alice).pair_id == second.pair_id  # handed back
    assert run(pair_progress, alice).compared == 0
    assert run(undo_last_comparison, alice) is None


def test_live_sample_is_paired_with_an_older_trained_one(db: Database) -> None:
    run = in_tx(db)
    prompts, samples = seed(db, prompts=1, samples_per_prompt=1)
    alice = rater(db, "alice")
    assert run(next_pair_for_rater, alice) is None  # one sample alone: no partner yet
    run(storage.record_rating, samples[0], alice, 0.5)
    batch = run(storage.claim_next_batch, 1, "t")
    run(storage.finish_batch, batch, StepIn(1, {}, {}, {}))
    (new,) = run(storage.add_samples, [new_sample(prompts[0], version=1)])
    pair = run(next_pair_for_rater, alice)
    assert pair is not None and _members(pair) == {samples[0], new}
    assert {pair.version_a, pair.version_b} == {0, 1}


def test_derived_scores_are_trained_once_and_undo_locks(db: Database) -> None:
    run = in_tx(db)
    prompts, _ = seed(db, prompts=1, samples_per_prompt=2)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    pair = run(next_pair_for_rater, alice)
    run(record_comparison, pair.pair_id, alice, "a_better")
    assert [o.answer for o in run(prompt_outcomes, prompts[0])] == ["a_better"]
    run(write_derived_scores, BT, prompts[0], {pair.sample_a_id: 0.4, pair.sample_b_id: -0.4})
    batch = run(storage.claim_next_batch, 2, "t", use_auto_scores=True)
    assert batch is not None
    assert {x.sample_id: x.score for x in batch.samples} == {pair.sample_a_id: 0.4, pair.sample_b_id: -0.4}
    with pytest.raises(RatingLocked):
        run(undo_last_comparison, alice)
    assert not run(pair_progress, alice).can_undo
    assert run(next_pair_for_rater, bob) is None  # both samples are in a batch: nothing left to learn from it
    # a later refit leaves the frozen scores alone, and the samples are never claimed again
    assert run(write_derived_scores, BT, prompts[0], {pair.sample_a_id: -1.0}) == 0
    run(storage.finish_batch, batch, StepIn(1, {}, {}, {}))
    assert run(storage.claim_next_batch, 1, "t", use_auto_scores=True) is None


def test_undone_comparison_takes_its_derived_score_away(db: Database) -> None:
    run = in_tx(db)
    prompts, _ = seed(db, prompts=1, samples_per_prompt=2)
    alice = rater(db, "alice")
    pair = run(next_pair_for_rater, alice)
    run(record_comparison, pair.pair_id, alice, "both_bad")
    run(write_derived_scores, BT, prompts[0], {pair.sample_a_id: -0.3, pair.sample_b_id: -0.3})
    run(undo_last_comparison, alice)
    assert run(write_derived_scores, BT, prompts[0], {}) == 2
    run(skip_pair, alice, pair.pair_id)  # end alice's lease so only the score decides
    assert run(storage.claim_next_batch, 1, "t", use_auto_scores=True) is None


def test_racing_raters_never_hold_the_same_pair(db: Database) -> None:
    """Four raters ask for a pair at the same moment, round after round: the pairs (and the open samples in them)
    they hold at once are always different."""
    with db.session_factory.begin() as s:
        storage.add_prompts(s, [f"prompt {i}" for i in range(6)], source="race")
        ids = [p.id for p in storage.prompts_for_generation(s, 6)]
        storage.add_samples(s, [new_sample(pid, v) for pid in ids for v in (0, 0, 1)])
    raters = [rater(db, f"r{i}") for i in range(4)]
    now = datetime.now(UTC)
    barrier = threading.Barrier(len(raters))
    held: list[list[tuple[int, set[int]]]] = [[] for _ in range(8)]
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(rater_id: int) -> None:
        try:
            for round_ in range(8):
                barrier.wait(timeout=60)
                with db.session_factory.begin() as s:
                    pair = next_pair_for_rater(s, rater_id, now=now + timedelta(seconds=round_))
                if pair is not None:
                    with lock:
                        held[round_].append((pair.pair_id, _members(pair)))
                barrier.wait(timeout=60)
                if pair is not None:
                    with db.session_factory.begin() as s:
                        skip_pair(s, rater_id, pair.pair_id)
        except BaseException as err:  # reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sum(len(r) for r in held) >= 8  # the race was real: several raters got pairs in the same round
    for round_ in held:
        pair_ids = [p for p, _ in round_]
        assert len(pair_ids) == len(set(pair_ids))
        samples = [x for _, members in round_ for x in members]
        assert len(samples) == len(set(samples))


def test_an_undone_comparison_is_kept_in_the_history(db: Database) -> None:
    """As an undone rating stays in rating_history: who answered what, when, and when they took it back."""
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=2)
    alice = rater(db, "alice")
    pair = run(next_pair_for_rater, alice)
    given = run(record_comparison, pair.pair_id, alice, "b_better")
    later = given.created_at + timedelta(seconds=30)
    assert run(undo_last_comparison, alice, now=later) is not None
    run(record_comparison, pair.pair_id, alice, "a_better")  # answered again after the undo
    assert run(undo_last_comparison, alice, now=later + timedelta(seconds=5)).answer == "a_better"
    assert run(undo_last_comparison, alice) is None  # nothing left to undo: no row
    with db.read_session_factory.begin() as s:
        rows = s.scalars(select(ComparisonHistory).order_by(ComparisonHistory.id)).all()
        kept = [(h.pair_id, h.rater_id, h.action, h.old_answer, h.changed_at) for h in rows]
        first_answered = rows[0].answered_at
    assert kept == [
        (pair.pair_id, alice, "undo", "b_better", later),
        (pair.pair_id, alice, "undo", "a_better", later + timedelta(seconds=5)),
    ]
    assert first_answered == given.created_at


def test_a_locked_undo_keeps_no_history(db: Database) -> None:
    run = in_tx(db)
    prompts, _ = seed(db, prompts=1, samples_per_prompt=2)
    alice = rater(db, "alice")
    pair = run(next_pair_for_rater, alice)
    run(record_comparison, pair.pair_id, alice, "tie")
    run(write_derived_scores, BT, prompts[0], {pair.sample_a_id: 0.0, pair.sample_b_id: 0.0})
    assert run(storage.claim_next_batch, 2, "t", use_auto_scores=True) is not None
    with pytest.raises(RatingLocked):
        run(undo_last_comparison, alice)
    with db.read_session_factory.begin() as s:
        assert s.scalar(select(func.count()).select_from(ComparisonHistory)) == 0


def test_a_comparison_of_an_open_pair_waits_like_a_rating_until_a_batch_takes_its_samples(db: Database) -> None:
    """The trainer's --flush-after-s clock (storage.samples.oldest_waiting_rating) counts comparisons too."""
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=2)
    alice = rater(db, "alice")
    assert run(oldest_waiting_rating) is None
    pair = run(next_pair_for_rater, alice)
    assert run(oldest_waiting_rating) is None  # shown, not answered
    answered = run(record_comparison, pair.pair_id, alice, "a_better")
    assert run(oldest_waiting_rating) == answered.created_at
    run(write_derived_scores, BT, pair.prompt_id, {pair.sample_a_id: 0.4, pair.sample_b_id: -0.4})
    run(storage.claim_next_batch, 2, "trainer")
    assert run(oldest_waiting_rating) is None

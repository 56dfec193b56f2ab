"""Ratings: validation writes nothing, resubmission updates with history, undo rules, progress."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select
from storage_helpers import in_tx, rater, seed, snapshot

import storage
from storage import Database
from storage.schema import RatingHistory


@pytest.mark.parametrize(
    ("score", "error"),
    [
        (math.nan, storage.InvalidScore),
        (math.inf, storage.InvalidScore),
        (-math.inf, storage.InvalidScore),
        (1.5, storage.InvalidScore),
        (-1.0001, storage.InvalidScore),
        ("0.5", storage.InvalidScore),  # text where a number belongs
        ("good", storage.InvalidScore),
        (None, storage.InvalidScore),
        (True, storage.InvalidScore),
        ([0.5], storage.InvalidScore),
    ],
)
def test_bad_scores_are_refused_and_nothing_is_written(db: Database, score: object, error: type) -> None:
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    alice = rater(db, "alice")
    before = snapshot(db)
    # The error is caught inside the transaction, which then commits: still nothing may have been written.
    with db.session_factory.begin() as s, pytest.raises(error):
        storage.record_rating(s, sid, alice, score)  # type: ignore[arg-type]
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("sample_delta", "rater_delta", "kwargs", "error"),
    [
        (100, 0, {}, storage.UnknownSample),
        (0, 100, {}, storage.UnknownRater),
        (0, 0, {"source": "vader"}, storage.InvalidInput),  # a person cannot rate as a reward model
        (0, 0, {"score_range": (1.0, 1.0)}, storage.InvalidScore),
    ],
)
def test_bad_ids_and_sources_are_refused_and_nothing_is_written(
    db: Database, sample_delta: int, rater_delta: int, kwargs: dict[str, object], error: type
) -> None:
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    alice = rater(db, "alice")
    before = snapshot(db)
    with db.session_factory.begin() as s, pytest.raises(error):
        storage.record_rating(s, sid + sample_delta, alice + rater_delta, 0.5, **kwargs)  # type: ignore[arg-type]
    assert snapshot(db) == before


def test_errors_are_value_errors_with_clear_messages(db: Database) -> None:
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    alice = rater(db, "alice")
    with pytest.raises(ValueError, match=r"outside the configured range \[1.0, 5.0\]"), db.session_factory.begin() as s:
        storage.record_rating(s, sid, alice, 7, score_range=(1, 5))


def test_score_range_is_configurable_and_inclusive(db: Database) -> None:
    run = in_tx(db)
    _, (s1, s2) = seed(db, prompts=1, samples_per_prompt=2)
    alice = rater(db, "alice")
    assert run(storage.record_rating, s1, alice, 5, score_range=(1, 5)).score == 5.0
    assert run(storage.record_rating, s2, alice, -1.0).score == -1.0  # default range (-1, 1)


def test_resubmission_updates_the_score_and_keeps_history(db: Database) -> None:
    run = in_tx(db)
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    alice = rater(db, "alice")
    first = run(storage.record_rating, sid, alice, 0.2)
    run(storage.record_rating, sid, alice, 0.2)  # the same score again: no change, no history
    second = run(storage.record_rating, sid, alice, -0.4)
    assert second.id == first.id and second.score == -0.4 and second.updated_at >= first.updated_at
    assert [r.score for r in run(storage.ratings_for_sample, sid)] == [-0.4]
    assert run(storage.get_sample, sid).human_ratings == 1
    with db.session_factory.begin() as s:
        history = [(h.action, h.old_score, h.new_score) for h in s.scalars(select(RatingHistory))]
    assert history == [("update", 0.2, -0.4)]


def test_first_rating_of_a_claimed_sample_is_kept_but_changes_are_locked(db: Database) -> None:
    run = in_tx(db)
    _, (s1, s2) = seed(db, prompts=1, samples_per_prompt=2)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    run(storage.record_rating, s1, alice, 0.5)
    run(storage.record_rating, s2, alice, -0.5)
    batch = run(storage.claim_next_batch, 2, "trainer")
    assert batch is not None
    before = snapshot(db)
    with db.session_factory.begin() as s, pytest.raises(storage.RatingLocked):
        storage.record_rating(s, s1, alice, 0.9)
    assert snapshot(db) == before
    late = run(storage.record_rating, s1, bob, 1.0)  # stored and exported, not in the frozen batch score
    assert late.score == 1.0
    assert run(storage.get_batch, batch.batch_id).score_mean == 0.0


def test_undo_deletes_the_last_rating_and_re_offers_the_sample(db: Database) -> None:
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=3)
    alice = rater(db, "alice")
    first = run(storage.next_sample_for_rater, alice)
    run(storage.record_rating, first.id, alice, 0.1)
    second = run(storage.next_sample_for_rater, alice)
    run(storage.record_rating, second.id, alice, 0.9)
    assert run(storage.rater_progress, alice).can_undo
    undone = run(storage.undo_last_rating, alice)
    assert undone.sample_id == second.id and undone.score == 0.9
    assert run(storage.ratings_for_sample, second.id) == []
    assert run(storage.get_sample, second.id).human_ratings == 0
    assert run(storage.next_sample_for_rater, alice).id == second.id  # offered again
    progress = run(storage.rater_progress, alice)
    assert (progress.rated, progress.can_undo) == (1, True)
    assert run(storage.undo_last_rating, alice).sample_id == first.id
    assert run(storage.undo_last_rating, alice) is None
    assert not run(storage.rater_progress, alice).can_undo


def test_undo_after_being_shown_the_next_sample_frees_that_one(db: Database) -> None:
    run = in_tx(db)
    seed(db, prompts=1, samples_per_prompt=2)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    rated = run(storage.next_sample_for_rater, alice)
    run(storage.record_rating, rated.id, alice, 0.3)
    shown_next = run(storage.next_sample_for_rater, alice)  # the UI shows the next one right after rating
    run(storage.undo_last_rating, alice)
    assert run(storage.next_sample_for_rater, alice).id == rated.id
    assert run(storage.next_sample_for_rater, bob).id == shown_next.id  # not stuck on alice's old lease


def test_undo_is_refused_once_the_sample_is_in_a_batch(db: Database) -> None:
    run = in_tx(db)
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    alice = rater(db, "alice")
    run(storage.record_rating, sid, alice, 0.5)
    run(storage.claim_next_batch, 1, "trainer")
    assert not run(storage.rater_progress, alice).can_undo
    before = snapshot(db)
    with pytest.raises(storage.RatingLocked):
        run(storage.undo_last_rating, alice)
    assert snapshot(db) == before


def test_model_raters_rate_under_their_own_source(db: Database) -> None:
    run = in_tx(db)
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    vader = run(storage.get_or_create_model_rater, "vader")
    assert (vader.name, vader.role) == ("reward:vader", "model")
    with pytest.raises(storage.InvalidInput):
        run(storage.record_rating, sid, vader.id, 0.5)  # source defaults to "human"
    rating = run(storage.record_rating, sid, vader.id, 0.5, source="vader")
    assert (rating.source, rating.rater_name) == ("vader", "reward:vader")
    assert run(storage.get_sample, sid).auto_ratings == 1
    with pytest.raises(storage.InvalidInput):
        run(storage.get_or_create_rater, "reward:sneaky", "rater")


def test_rater_roles(db: Database) -> None:
    run = in_tx(db)
    alice = run(storage.get_or_create_rater, "alice")
    assert alice.role == "rater"
    assert run(storage.get_or_create_rater, "alice", "admin").id == alice.id
    assert run(storage.get_rater, alice.id).role == "admin"
    with pytest.raises(storage.InvalidInput):
        run(storage.get_or_create_rater, "bob", "superuser")
    with pytest.raises(storage.InvalidInput):
        run(storage.get_or_create_rater, "  ")


def test_progress_and_recent_ratings(db: Database) -> None:
    run = in_tx(db)
    _, (s1, s2, s3) = seed(db, prompts=1, samples_per_prompt=3)
    alice = rater(db, "alice")
    run(storage.record_rating, s1, alice, 0.5)
    run(storage.record_rating, s2, alice, -0.5)
    run(storage.skip_sample, alice, s3)
    batch = run(storage.claim_next_batch, 2, "trainer")
    run(storage.finish_batch, batch, storage.StepIn(1, {"kl": 0.1}))
    progress = run(storage.rater_progress, alice)
    assert (progress.rated, progress.skipped, progress.trained, progress.available) == (2, 1, 2, 0)
    assert progress.last_rated_at is not None and progress.last_rated_at.tzinfo is not None
    recent = run(storage.recent_ratings, 5)
    assert [r.rating.sample_id for r in recent] == [s2, s1]
    assert recent[0].prompt_text == "prompt 0" and recent[0].response_text.startswith("response")

"""The Watch tab's story in numbers: the mean human score per policy version, and how many human ratings the
model has been trained on. Small hand-computed cases, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

import storage
from storage import Database, StepIn
from storage.dashboard import trained_share, version_scores
from storage.records import TrainedShare, VersionScore
from tests.storage.storage_helpers import in_tx, new_sample, rater, seed


def two_versions(db: Database) -> list[int]:
    """Samples s0, s1 written by v0 and s2, s3 by v1 (one prompt); returns their ids."""
    (prompt,), v0 = seed(db, prompts=1, samples_per_prompt=2, version=0)
    v1 = in_tx(db)(storage.add_samples, [new_sample(prompt, 1, "v1 a"), new_sample(prompt, 1, "v1 b")])
    return [*v0, *v1]


def test_mean_human_score_per_version_counts_people_only_and_forgets_undone_ratings(db: Database) -> None:
    run = in_tx(db)
    s0, s1, s2, s3 = two_versions(db)
    alice, bob = rater(db, "alice"), rater(db, "bob", "admin")  # an admin's ratings are human ratings too
    vader = run(storage.get_or_create_model_rater, "vader").id
    run(storage.record_rating, s0, alice, 1.0)
    run(storage.record_rating, s1, alice, 0.0)
    run(storage.record_rating, s0, bob, 0.5)
    run(storage.record_rating, s2, alice, 0.25)
    run(storage.record_rating, s2, vader, -1.0, source="vader")  # a reward model: not a human score
    run(storage.record_rating, s3, vader, -1.0, source="vader")  # v1's only other rating is automatic
    run(storage.record_rating, s3, bob, -0.5)
    run(storage.undo_last_rating, bob)  # undone: gone from the mean

    # v0: (1.0 + 0.0 + 0.5) / 3 from three ratings; v1: alice's 0.25 alone
    assert run(version_scores) == [VersionScore(0, 0.5, 3), VersionScore(1, 0.25, 1)]


def test_versions_nobody_rated_are_left_out(db: Database) -> None:
    run = in_tx(db)
    s0, _, s2, _ = two_versions(db)
    assert run(version_scores) == []
    run(storage.record_rating, s2, rater(db, "alice"), -0.75)
    assert run(version_scores) == [VersionScore(1, -0.75, 1)]
    run(storage.record_rating, s0, rater(db, "bob"), 1.0)
    assert [v.policy_version for v in run(version_scores)] == [0, 1], "oldest version first"


def test_trained_share_counts_human_ratings_of_samples_in_trained_batches_only(db: Database) -> None:
    run = in_tx(db)
    s0, s1, s2, s3 = two_versions(db)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    vader = run(storage.get_or_create_model_rater, "vader").id
    assert run(trained_share) == TrainedShare(trained=0, total=0)
    for sample, who, score in [(s0, alice, 1.0), (s0, bob, 0.5), (s1, alice, 0.0), (s2, alice, 0.25)]:
        run(storage.record_rating, sample, who, score)
    run(storage.record_rating, s3, vader, 0.1, source="vader")  # automatic: in neither number
    assert run(trained_share) == TrainedShare(trained=0, total=4)

    first = run(storage.claim_next_batch, 2, "trainer", use_auto_scores=False)  # newest version first: s2, then s1
    assert first is not None and {x.sample_id for x in first.samples} == {s1, s2}
    assert run(trained_share) == TrainedShare(trained=0, total=4), "claimed is not trained yet"
    run(storage.finish_batch, first, StepIn(1, {"objective/kl": 0.0}))
    assert run(trained_share) == TrainedShare(trained=2, total=4)  # alice's ratings of s1 and s2

    second = run(storage.claim_next_batch, 1, "trainer", use_auto_scores=False)
    assert second is not None and [x.sample_id for x in second.samples] == [s0]
    run(storage.fail_batch, second, "out of memory", retry=False)
    assert run(trained_share) == TrainedShare(trained=2, total=4), "a failed batch was not trained"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_trained_share_of_a_retired_step_goes_back_to_untrained(db: Database) -> None:
    run = in_tx(db)
    s0, *_ = two_versions(db)
    run(storage.record_rating, s0, rater(db, "alice"), 1.0)
    batch = run(storage.claim_next_batch, 1, "trainer", use_auto_scores=False)
    run(storage.finish_batch, batch, StepIn(1, {"objective/kl": 0.0}))
    assert run(trained_share) == TrainedShare(trained=1, total=1)
    run(storage.retire_steps_after, 0)  # a crash lost v1's weights: its batch will be trained again
    assert run(trained_share) == TrainedShare(trained=0, total=1)

"""Training batches: full batches only, newest first, frozen mixed-mode scores, lifecycle, recovery, history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from storage_helpers import in_tx, new_sample, rater, seed, snapshot

import storage
from storage import Database, StepIn

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _rate_all(db: Database, sample_ids: list[int], rater_id: int, score: float = 0.5) -> None:
    with db.session_factory.begin() as s:
        for sid in sample_ids:
            storage.record_rating(s, sid, rater_id, score)


def test_claims_only_full_batches_of_scored_samples(db: Database) -> None:
    run = in_tx(db)
    _, sids = seed(db, prompts=1, samples_per_prompt=3)
    alice = rater(db, "alice")
    _rate_all(db, sids[:2], alice)
    assert run(storage.claim_next_batch, 3, "trainer") is None  # only two are scored
    before = snapshot(db)
    assert run(storage.claim_next_batch, 3, "trainer") is None
    assert snapshot(db) == before  # a refused claim leaves no empty batch behind
    batch = run(storage.claim_next_batch, 2, "trainer")
    assert batch is not None and sorted(x.sample_id for x in batch.samples) == sorted(sids[:2])
    assert run(storage.claim_next_batch, 1, "trainer") is None  # the third is unrated


def test_batch_carries_what_the_trainer_needs(db: Database) -> None:
    run = in_tx(db)
    (pid,), _ = seed(db, prompts=1, samples_per_prompt=0)
    (sid,) = run(storage.add_samples, [new_sample(pid, version=4, n_tokens=2)])
    alice = rater(db, "alice")
    run(storage.record_rating, sid, alice, 0.25)
    batch = run(storage.claim_next_batch, 1, "trainer-1")
    (item,) = batch.samples
    assert (item.query_ids, item.response_ids, item.behaviour_logprobs) == ((1, 2, 3), (10, 11), (-0.5, -0.5))
    assert (item.score, item.policy_version, item.prompt_text) == (0.25, 4, "prompt 0")
    assert (batch.claimed_by, batch.attempt, batch.size, batch.scores) == ("trainer-1", 1, 1, (0.25,))


def test_newest_policy_versions_are_claimed_first(db: Database) -> None:
    run = in_tx(db)
    (pid,), _ = seed(db, prompts=1, samples_per_prompt=0)
    ids = run(storage.add_samples, [new_sample(pid, v) for v in (0, 2, 1, 2)])
    _rate_all(db, ids, rater(db, "alice"))
    first = run(storage.claim_next_batch, 2, "trainer")
    assert {x.policy_version for x in first.samples} == {2}
    second = run(storage.claim_next_batch, 2, "trainer")
    assert [x.policy_version for x in second.samples] == [1, 0]


def test_mixed_mode_score_rule_is_frozen_at_claim(db: Database) -> None:
    run = in_tx(db)
    _, (both, auto_only, human_only) = seed(db, prompts=1, samples_per_prompt=3)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    vader = run(storage.get_or_create_model_rater, "vader").id
    length = run(storage.get_or_create_model_rater, "length").id
    run(storage.record_rating, both, alice, 1.0)
    run(storage.record_rating, both, bob, 0.0)
    run(storage.record_rating, both, vader, -1.0, source="vader")  # ignored: people rated it
    run(storage.record_rating, auto_only, vader, 0.2, source="vader")
    run(storage.record_rating, auto_only, length, 0.4, source="length")
    run(storage.record_rating, human_only, alice, -0.5)
    batch = run(storage.claim_next_batch, 3, "trainer")
    scores = {x.sample_id: x.score for x in batch.samples}
    assert scores == pytest.approx({both: 0.5, auto_only: 0.3, human_only: -0.5})
    assert run(storage.get_batch, batch.batch_id).score_mean == pytest.approx(0.1)


def test_human_only_mode_ignores_automatic_scores(db: Database) -> None:
    run = in_tx(db)
    _, (s1, s2) = seed(db, prompts=1, samples_per_prompt=2)
    vader = run(storage.get_or_create_model_rater, "vader").id
    run(storage.record_rating, s1, vader, 0.2, source="vader")
    run(storage.record_rating, s2, vader, 0.2, source="vader")
    run(storage.record_rating, s2, rater(db, "alice"), -0.75)
    assert run(storage.claim_next_batch, 2, "trainer", use_auto_scores=False) is None
    batch = run(storage.claim_next_batch, 1, "trainer", use_auto_scores=False)
    assert [(x.sample_id, x.score) for x in batch.samples] == [(s2, -0.75)]
    assert run(storage.counts, use_auto_scores=False).unrated == 1


def test_leased_samples_are_not_claimed_under_a_rater(db: Database) -> None:
    run = in_tx(db)
    _, (s1, s2) = seed(db, prompts=1, samples_per_prompt=2)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    _rate_all(db, [s1, s2], alice)
    shown = run(storage.next_sample_for_rater, bob, now=T0)  # bob is looking at one of them
    assert run(storage.claim_next_batch, 2, "trainer", now=T0 + timedelta(seconds=1)) is None
    batch = run(storage.claim_next_batch, 1, "trainer", now=T0 + timedelta(seconds=1))
    assert batch.samples[0].sample_id != shown.id


def test_finish_records_the_step_and_history(db: Database) -> None:
    run = in_tx(db)
    _, sids = seed(db, prompts=2, samples_per_prompt=2)
    _rate_all(db, sids, rater(db, "alice"), 0.5)
    b1 = run(storage.claim_next_batch, 2, "trainer")
    step = StepIn(1, {"ppo/loss/policy": -0.1, "objective/kl": 0.02}, {"learning_rate": 1e-5}, {"total": 1.5})
    rec = run(storage.finish_batch, b1, step)
    assert (rec.policy_version, rec.batch_size, rec.score_mean) == (1, 2, 0.5)
    b2 = run(storage.claim_next_batch, 2, "trainer")
    run(storage.finish_batch, b2.batch_id, StepIn(2, {"objective/kl": 0.03}))
    history = run(storage.training_history)
    assert [h.policy_version for h in history] == [1, 2]
    assert history[0].stats == {"ppo/loss/policy": -0.1, "objective/kl": 0.02}
    assert history[0].config == {"learning_rate": 1e-5} and history[0].durations == {"total": 1.5}
    assert [h.policy_version for h in run(storage.training_history, since_step_id=history[0].id)] == [2]
    assert [h.policy_version for h in run(storage.training_history, last=1)] == [2]
    assert run(storage.get_batch, b1.batch_id).status == "trained"
    with pytest.raises(storage.BatchStateError):
        run(storage.finish_batch, b1.batch_id, step)  # trained once, never twice


def test_numpy_stats_are_stored_as_plain_floats(db: Database) -> None:
    run = in_tx(db)
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    _rate_all(db, [sid], rater(db, "alice"))
    batch = run(storage.claim_next_batch, 1, "trainer")
    step = StepIn(1, {"kl": np.float32(0.25), "clipfrac": np.float64(0.5)}, {"lr": 1e-5}, {"total": np.float32(2)})
    run(storage.finish_batch, batch, step)
    (record,) = run(storage.training_history)
    assert record.stats == {"kl": 0.25, "clipfrac": 0.5} and record.durations == {"total": 2.0}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stats": {"kl": float("nan")}},
        {"stats": {"kl": "0.1"}},
        {"config": {"model": object()}},
        {"durations": {"total": -1.0}},
        {"policy_version": -1},
    ],
)
def test_bad_step_records_are_refused(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"policy_version": 1, "stats": {"kl": 0.1}, "config": {}, "durations": {}}
    with pytest.raises(storage.InvalidStep):
        StepIn(**{**fields, **kwargs})  # type: ignore[arg-type]


def test_failed_batches_are_retried_then_failed_for_good(db: Database) -> None:
    run = in_tx(db)
    _, sids = seed(db, prompts=1, samples_per_prompt=2)
    _rate_all(db, sids, rater(db, "alice"))
    first = run(storage.claim_next_batch, 2, "trainer", max_attempts=2)
    assert run(storage.fail_batch, first, "CUDA out of memory").status == "pending"
    again = run(storage.claim_next_batch, 2, "trainer")
    assert again.batch_id == first.batch_id and again.attempt == 2
    assert [x.sample_id for x in again.samples] == [x.sample_id for x in first.samples]
    assert again.scores == first.scores
    final = run(storage.fail_batch, again, "CUDA out of memory")
    assert (final.status, final.error, final.attempts) == ("failed", "CUDA out of memory", 2)
    assert run(storage.claim_next_batch, 2, "trainer") is None  # failed samples are never trained
    assert run(storage.counts).failed == 2


def test_fail_without_retry(db: Database) -> None:
    run = in_tx(db)
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    _rate_all(db, [sid], rater(db, "alice"))
    batch = run(storage.claim_next_batch, 1, "trainer")
    assert run(storage.fail_batch, batch, "NaN loss", retry=False).status == "failed"


def test_expired_claims_go_back_to_pending_and_the_old_claim_cannot_finish(db: Database) -> None:
    run = in_tx(db)
    _, sids = seed(db, prompts=1, samples_per_prompt=2)
    _rate_all(db, sids, rater(db, "alice"))
    crashed = run(storage.claim_next_batch, 2, "trainer-a", now=T0)
    assert run(storage.release_expired_claims, 600, now=T0 + timedelta(seconds=599)) == []
    assert run(storage.release_expired_claims, 600, now=T0 + timedelta(seconds=601)) == [crashed.batch_id]
    batch = run(storage.get_batch, crashed.batch_id)
    assert batch.status == "pending" and "expired" in (batch.error or "")
    retaken = run(storage.claim_next_batch, 2, "trainer-b")
    assert retaken.batch_id == crashed.batch_id and retaken.attempt == 2
    with pytest.raises(storage.StaleClaim):
        run(storage.finish_batch, crashed, StepIn(1, {}))  # the first trainer woke up: refused
    run(storage.finish_batch, retaken, StepIn(1, {}))
    assert run(storage.counts).trained == 2


def test_release_all_claims_at_startup_ignores_the_attempt_limit(db: Database) -> None:
    run = in_tx(db)
    _, sids = seed(db, prompts=1, samples_per_prompt=2)
    _rate_all(db, sids, rater(db, "alice"))
    batch = run(storage.claim_next_batch, 2, "trainer", max_attempts=1)
    assert run(storage.release_all_claims) == [batch.batch_id]
    # a crash is the process's fault, not the batch's: it is trained again, never failed (docs/app.md)
    assert run(storage.get_batch, batch.batch_id).status == "pending"


def test_min_policy_version_marks_old_unrated_and_machine_scored_samples_stale_never_human_rated(db: Database) -> None:
    run = in_tx(db)
    (pid,), _ = seed(db, prompts=1, samples_per_prompt=0)
    samples = [new_sample(pid, v) for v in (1, 1, 1, 1, 3)]
    rated_old, machine_old, _unrated_old, held_old, new = run(storage.add_samples, samples)
    alice, bob = rater(db, "alice"), rater(db, "bob")
    vader = rater(db, "reward:vader", "model")
    _rate_all(db, [rated_old, new], alice)
    run(storage.record_rating, machine_old, vader, 0.9, source="vader")
    assert run(storage.offer_sample, bob, held_old) is not None  # bob is looking at it now
    batch = run(storage.claim_next_batch, 2, "trainer", min_policy_version=2, use_auto_scores=False)
    assert sorted(x.sample_id for x in batch.samples) == sorted([rated_old, new])  # the person's work is trained
    assert run(storage.counts).stale == 2  # machine_old and unrated_old
    assert run(storage.next_sample_for_rater, rater(db, "carol")) is None  # nobody is asked to rate them
    run(storage.record_rating, held_old, bob, -0.5)  # bob's rating arrives after the claim: still trainable
    again = run(storage.claim_next_batch, 1, "trainer", min_policy_version=4, use_auto_scores=False)
    assert [x.sample_id for x in again.samples] == [held_old]


def test_a_claim_takes_every_scored_sample_up_to_max_size_in_multiples(db: Database) -> None:
    run = in_tx(db)
    _, sids = seed(db, prompts=1, samples_per_prompt=11)
    alice = rater(db, "alice")
    _rate_all(db, sids[:3], alice)
    assert run(storage.claim_next_batch, 4, "trainer", max_size=8) is None  # fewer than the minimum
    _rate_all(db, sids[3:], alice)
    first = run(storage.claim_next_batch, 4, "trainer", max_size=8, multiple=2)
    assert len(first.samples) == 8  # capped at max_size, newest first
    second = run(storage.claim_next_batch, 2, "trainer", max_size=8, multiple=2)
    assert len(second.samples) == 2  # 3 left: rounded down to a multiple of the minibatch
    assert run(storage.claim_next_batch, 2, "trainer", max_size=8, multiple=2) is None
    taken = [x.sample_id for b in (first, second) for x in b.samples]
    assert len(set(taken)) == 10 and set(taken) <= set(sids)


def test_a_pending_batch_outside_new_bounds_goes_back_to_the_pool(db: Database) -> None:
    run = in_tx(db)
    _, sids = seed(db, prompts=1, samples_per_prompt=6)
    _rate_all(db, sids, rater(db, "alice"))
    batch = run(storage.claim_next_batch, 2, "trainer", max_size=6)
    assert len(batch.samples) == 6
    run(storage.release_all_claims)
    again = run(storage.claim_next_batch, 4, "trainer", max_size=8)  # 6 fits 4..8: trained as it is
    assert again.batch_id == batch.batch_id
    run(storage.release_all_claims)
    smaller = run(storage.claim_next_batch, 2, "trainer", max_size=4)  # 6 does not fit 2..4: released
    assert smaller.batch_id != batch.batch_id and len(smaller.samples) == 4
    assert run(storage.get_batch, batch.batch_id).status == "released"


def test_a_pending_batch_is_trained_whatever_its_age(db: Database) -> None:
    """Staleness is judged when a batch is formed; a batch back in pending (a retry, a crash) keeps its ratings."""
    run = in_tx(db)
    _, sids = seed(db, prompts=1, samples_per_prompt=2, version=1)
    _rate_all(db, sids, rater(db, "alice"))
    batch = run(storage.claim_next_batch, 2, "trainer")
    run(storage.release_all_claims)  # the trainer died holding it; the restart resumes under a higher version
    again = run(storage.claim_next_batch, 2, "trainer", min_policy_version=5)
    assert again is not None and again.batch_id == batch.batch_id
    assert run(storage.get_batch, batch.batch_id).status == "claimed"


def test_bad_claim_arguments(db: Database) -> None:
    run = in_tx(db)
    for kwargs in (
        {"size": 0},
        {"size": "8"},
        {"claimer": ""},
        {"min_policy_version": -1},
        {"max_attempts": 0},
        {"size": 2, "max_size": 1},
        {"multiple": 3},
    ):
        args = {"size": 1, "claimer": "trainer", **kwargs}
        with pytest.raises(storage.InvalidInput):
            run(storage.claim_next_batch, **args)
    with pytest.raises(storage.UnknownBatch):
        run(storage.finish_batch, 99, StepIn(1, {}))


def test_checkpoints(db: Database) -> None:
    run = in_tx(db)
    assert run(storage.latest_checkpoint) is None
    run(storage.record_checkpoint, 1, "runs/v1")
    run(storage.record_checkpoint, 3, "runs/v3")
    run(storage.record_checkpoint, 2, "runs/v2")
    assert run(storage.latest_checkpoint).folder == "runs/v3"
    run(storage.record_checkpoint, 3, "runs/v3-again")
    assert [(c.version, c.folder) for c in run(storage.list_checkpoints)] == [
        (1, "runs/v1"),
        (2, "runs/v2"),
        (3, "runs/v3-again"),
    ]
    with pytest.raises(storage.InvalidInput):
        run(storage.record_checkpoint, -1, "x")


def test_counts_partition_the_samples(db: Database) -> None:
    run = in_tx(db)
    (pid,), _ = seed(db, prompts=1, samples_per_prompt=0)
    sids = run(storage.add_samples, [new_sample(pid, v) for v in (0, 1, 1, 1, 1, 1, 1, 1)])
    alice = rater(db, "alice")
    vader = run(storage.get_or_create_model_rater, "vader").id
    _rate_all(db, sids[1:7], alice)
    run(storage.record_rating, sids[0], vader, 0.1, source="vader")
    # sids[0] goes stale: scored by a model only (a sample a person rated never goes stale)
    trained = run(storage.claim_next_batch, 2, "trainer", min_policy_version=1)
    run(storage.finish_batch, trained, StepIn(2, {}))
    failed = run(storage.claim_next_batch, 2, "trainer")
    run(storage.fail_batch, failed, "x", retry=False)
    run(storage.claim_next_batch, 1, "trainer")
    c = run(storage.counts)
    assert (c.prompts, c.samples, c.raters, c.ratings, c.human_ratings, c.auto_ratings) == (1, 8, 2, 7, 6, 1)
    assert (c.stale, c.trained, c.failed, c.in_claimed_batches, c.scored_not_trained, c.unrated) == (
        1,
        2,
        2,
        1,
        1,
        1,
    )
    assert c.unrated + c.scored_not_trained + c.in_claimed_batches + c.trained + c.failed + c.stale == c.samples

"""Checkpoints and resume: a restart continues with the same version and weights and re-queues claimed batches."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from app.checkpoints import STATE_FILE, verify_checkpoint
from app.service import FeedbackService
from storage.batches import claim_next_batch
from storage.engine import open_database
from storage.history import list_lost_steps, training_history
from storage.raters import get_or_create_rater
from storage.ratings import record_rating
from storage.schema import Sample, TrainingBatch
from tests.app.app_helpers import batches, generate, open_samples, rate_next, same_weights, weights
from tests.app.conftest import wait_until


def test_a_restart_resumes_version_weights_and_requeues_a_claimed_batch(
    make_service: Callable[..., FeedbackService],
) -> None:
    first = make_service()
    first.start()
    alice = first.login("alice")
    wait_until(lambda: len(open_samples(first)) >= 4, what="samples")
    for sample_id in sorted(open_samples(first))[:2]:
        first.rate(alice.id, sample_id, 1.0)
    wait_until(lambda: first.publisher.version == 1, what="version 1")
    trained = weights(first)
    kl_coef = first.trainer.trainer.kl_ctl.value
    wait_until(
        lambda: first.generator.status.state in ("idle", "held") and len(open_samples(first, unleased=True)) >= 2,
        what="the generator to settle with two samples nobody holds",
    )
    first.stop()  # saves the shutdown checkpoint
    folder = first.settings.checkpoint_dir / "v1"
    assert (folder / STATE_FILE).is_file() and (folder / "optimizer.safetensors").is_file()
    assert verify_checkpoint(folder) is None  # every file matches manifest.json

    # A trainer that died holding a claim: two more ratings, claimed and never finished.
    with open_database(first.settings.db_url) as db, db.session_factory.begin() as s:
        carol = get_or_create_rater(s, "carol")
        for sample_id in sorted(open_samples(first, unleased=True))[:2]:
            record_rating(s, sample_id, carol.id, -1.0)
        dead = claim_next_batch(s, 2, "trainer-that-crashed")
    assert dead is not None

    second = make_service()
    assert second.publisher.version == 1 and second.generator.status.version == 1
    assert same_weights(trained, weights(second))
    assert second.trainer.trainer.kl_ctl.value == kl_coef
    assert second.trainer.status.checkpoint_version == 1
    second.start()
    wait_until(lambda: second.publisher.version == 2, what="the re-queued batch to be trained")
    retried = next(b for b in batches(second) if b.id == dead.batch_id)
    assert (retried.status, retried.attempts) == ("trained", 2)
    assert second.history()[-1].version == 2 and second.history()[-1].mean_score == -1.0


def test_after_a_crash_the_lost_steps_are_trained_again_under_new_version_numbers(
    make_service: Callable[..., FeedbackService],
) -> None:
    """kill -9 after two steps and no checkpoint: the weights of versions 1 and 2 are gone, their ratings are not."""
    crashed = make_service()
    initial = weights(crashed)
    alice = crashed.login("alice")
    generate(crashed, 4)
    rated = []
    for _ in range(2):  # two steps, driven by hand: no thread, so no shutdown checkpoint either
        rated += [a.sample_id for a in rate_next(crashed, alice.id, 2)]
        assert crashed.trainer.tick()
        crashed.generator.tick()
    assert crashed.publisher.version == 2
    lost_batches = [b.id for b in reversed(batches(crashed))]
    assert not Path(crashed.settings.checkpoint_dir).exists()

    restarted = make_service(max_staleness=10)  # bob's batch below stays trainable whatever its version
    assert restarted.publisher.version == 3  # the initial weights under a fresh number, never "version 1" again
    assert same_weights(initial, weights(restarted))
    restarted.trainer.recover()  # what the trainer thread does first (app.recovery.recover_training)
    assert [(b.id, b.status) for b in reversed(batches(restarted))] == [(b, "pending") for b in lost_batches]
    generate(restarted, 2)
    rate_next(restarted, restarted.login("bob").id, 2)  # a new full batch is waiting too: the lost ones go first
    for version in (4, 5, 6):
        assert restarted.trainer.tick() and restarted.publisher.version == version
    with restarted.db.read_session_factory.begin() as s:
        steps = training_history(s)
        lost = list_lost_steps(s)
        trained = set(s.scalars(select(Sample.id).join(TrainingBatch).where(TrainingBatch.status == "trained")))
    assert [(x.batch_id, x.policy_version) for x in steps][:2] == [(lost_batches[0], 4), (lost_batches[1], 5)]
    assert [(x.batch_id, x.policy_version) for x in lost] == [(lost_batches[0], 1), (lost_batches[1], 2)]
    assert set(rated) <= trained  # every rating of before the crash is in the weights of version 6

"""Rater-facing rules: automatic rewards with human precedence, admin-only controls, undo."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.access import Caller
from app.errors import AccessDenied, UserError
from app.service import FeedbackService
from ppo_core.rewards import VaderReward
from storage.ratings import ratings_for_sample
from storage.records import ClaimedBatch
from storage.samples import get_sample
from tests.app.app_helpers import generate, open_samples, rate_next


def test_the_reward_worker_scores_samples_and_human_scores_take_precedence(
    make_service: Callable[..., FeedbackService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(reward="vader")
    alice = service.login("alice")
    generate(service, 4)
    assert service.reward_worker.tick()
    assert service.dashboard().counts["auto_ratings"] == len(open_samples(service)) >= 4
    newest = max(open_samples(service))
    with service.db.read_session_factory.begin() as s:
        [auto] = ratings_for_sample(s, newest)
        text = get_sample(s, newest).response_text
    assert auto.source == "vader" and auto.rater_name == "reward:vader"
    assert auto.score == pytest.approx(VaderReward()([""], [text])[0])

    service.rate(alice.id, newest, -0.75)  # a person overrides the reward model on this one
    claimed: list[ClaimedBatch] = []
    real_step = service.trainer.step

    def spy(batch: ClaimedBatch) -> dict[str, Any]:
        claimed.append(batch)
        return real_step(batch)

    monkeypatch.setattr(service.trainer, "step", spy)
    assert service.trainer.tick() and service.publisher.version == 1
    scores = {x.sample_id: x.score for x in claimed[0].samples}
    assert scores.pop(newest) == -0.75  # not the automatic score
    assert len(scores) >= 2  # the step takes every scored sample waiting (up to --max-batch-size)
    with service.db.read_session_factory.begin() as s:
        for other, score in scores.items():  # scored by the reward model only
            assert [(r.source, r.score) for r in ratings_for_sample(s, other)] == [("vader", score)]


def admin_of(service: FeedbackService) -> Caller:
    """The caller holding the start-up admin token."""
    assert service.access.admin_token is not None
    return Caller(admin_token=service.access.admin_token)


def test_human_only_mode_ignores_automatic_scores(make_service: Callable[..., FeedbackService]) -> None:
    service = make_service(reward="vader")
    admin = service.login("admin")
    generate(service, 4)
    assert service.reward_worker.tick()
    service.set_reward_source(admin_of(service), "human")
    assert service.dashboard().reward_note == "switching to human"
    service.reward_worker.tick()  # the reward thread builds the requested source and swaps it in
    assert service.dashboard().reward_source == "human" and service.dashboard().reward_note is None
    assert not service.reward_worker.tick()
    assert not service.trainer.tick()  # every sample has an automatic score, none a human one
    rate_next(service, admin.id, 2)
    assert service.trainer.tick() and service.publisher.version == 1


def test_controls_that_change_training_are_for_admins_only(make_service: Callable[..., FeedbackService]) -> None:
    service = make_service()
    rater, typed_admin = service.login("alice"), service.login(" admin ")
    assert not rater.is_admin and not typed_admin.is_admin and typed_admin.name == "admin"
    admin = admin_of(service)
    for caller in (Caller(), Caller(admin_token="not-the-token")):
        for action in (
            lambda c=caller: service.set_paused(c, True),
            lambda c=caller: service.set_reward_source(c, "vader"),
            lambda c=caller: service.save_checkpoint(c),
            lambda c=caller: service.export(c, "jsonl"),
        ):
            with pytest.raises(AccessDenied):
                action()
    with pytest.raises(UserError):
        service.set_reward_source(admin, "no-such-reward")
    service.set_reward_source(admin, "length:40")
    service.reward_worker.tick()
    assert service.dashboard().reward_source == "length:40"
    service.set_reward_source(admin, "human")
    service.reward_worker.tick()

    generate(service, 2)
    rate_next(service, rater.id, 2)
    service.set_paused(admin, True)
    assert not service.trainer.tick() and service.dashboard().training == "paused"
    service.set_paused(admin, False)
    assert service.trainer.tick() and service.publisher.version == 1
    with pytest.raises(ValueError, match="not running"):
        service.save_checkpoint(admin)  # the trainer thread was never started here
    with pytest.raises(UserError):
        service.login("   ")


def test_undo_takes_back_the_last_rating_until_its_batch_is_claimed(
    make_service: Callable[..., FeedbackService],
) -> None:
    service = make_service()
    alice = service.login("alice")
    generate(service, 4)
    assert service.undo(alice.id).notice == "Nothing to undo"
    first = service.next_for(alice.id).assignment
    assert first is not None
    rated = service.rate(alice.id, first.sample_id, 0.5)
    assert rated.progress.rated == 1 and rated.progress.can_undo
    assert rated.assignment is not None and rated.assignment.sample_id != first.sample_id

    undone = service.undo(alice.id)
    assert undone.notice == "Undone" and undone.progress.rated == 0 and not undone.progress.can_undo
    assert undone.assignment is not None and undone.assignment.sample_id == first.sample_id  # offered again
    with pytest.raises(ValueError):
        service.rate(alice.id, first.sample_id, 7.0)  # outside the scale
    skipped = service.skip(alice.id, first.sample_id)
    assert skipped.progress.skipped == 1 and skipped.assignment is not None
    assert skipped.assignment.sample_id != first.sample_id

    rate_next(service, alice.id, 2)
    assert service.trainer.tick()  # the batch with alice's last rating is claimed and trained
    locked = service.undo(alice.id)
    assert locked.notice is not None and locked.notice.startswith("Cannot undo")
    assert locked.progress.rated == 2 and not locked.progress.can_undo


def test_exports_hold_every_rating(make_service: Callable[..., FeedbackService]) -> None:
    import json

    import pyarrow.parquet as pq

    service = make_service()
    alice, bob = service.login("alice"), service.login("bob")
    generate(service, 4)
    rated = rate_next(service, alice.id, 2, score=1.0)
    service.rate(bob.id, rated[0].sample_id, -1.0)
    admin = admin_of(service)
    jsonl = service.export(admin, "jsonl")
    rows = [json.loads(line) for line in Path(jsonl).read_text(encoding="utf-8").splitlines()]
    assert sorted((r["rater"], r["score"]) for r in rows) == [("alice", 1.0), ("alice", 1.0), ("bob", -1.0)]
    assert pq.read_table(service.export(admin, "parquet")).num_rows == 3
    assert service.export(admin, "pairwise").endswith(".jsonl")
    with pytest.raises(UserError):
        service.export(admin, "csv")
    recent = service.recent_ratings(2)
    assert [(r.rater, r.score) for r in recent] == [("bob", -1.0), ("alice", 1.0)]
    assert recent[0].prompt == rated[0].prompt and recent[0].policy_version == 0

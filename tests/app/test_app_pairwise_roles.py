"""Pairwise mode and admin switches in the split roles, in-process with a tiny model: a `serve --mode pairwise`
front-end writes two responses per prompt so pairs form, and a `train --mode pairwise` trainer trains the
Bradley-Terry rewards of the answers (automatic scores) under `--reward human`; a trainer started in single mode
leaves them alone. An admin's switch of the rating mode or the reward source on one front-end reaches the other
front-ends and the trainer (app.shared_switches), and a front-end that starts later serves what the others serve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from app.access import Caller
from app.roles import TrainerProcess
from app.service import FeedbackService
from app.shared_switches import SharedSwitches
from tests.app.app_helpers import generate

TOKEN = "a-fixed-admin-token-for-tests-0123"
ADMIN = Caller(admin_token=TOKEN)
SPLIT = {"reward": "human", "admin_token": TOKEN}


def _answer_one_pair(front: FeedbackService) -> None:
    generate(front, 2)
    alice = front.login("alice")
    shown = front.next_pair_for(alice.id).assignment
    assert shown is not None, "the pairwise front-end wrote no two responses to one prompt"
    assert front.answer_pair(alice.id, shown.pair_id, "a_better").notice == "Saved: A better"


@pytest.mark.parametrize("trainer_mode", ["pairwise", "single"])
def test_a_pairwise_trainer_trains_the_answers_of_a_pairwise_front_end(
    build_role: Callable[..., Any], trainer_mode: str
) -> None:
    front: FeedbackService = build_role("serve", **SPLIT, mode="pairwise")
    trainer: TrainerProcess = build_role("train", **SPLIT, mode=trainer_mode)
    assert front.rating_mode() == "pairwise"
    _answer_one_pair(front)
    trained = trainer.trainer.tick()
    if trainer_mode == "pairwise":  # Bradley-Terry rewards count: the pair's two samples are one batch
        assert trained and trainer.publisher.version == 1
    else:  # single mode with a human reward counts human scores only, and a pair answer is not one
        assert not trained and trainer.publisher.version == 0


def test_an_admins_switches_on_one_front_end_reach_the_other_front_ends_and_the_trainer(
    build_role: Callable[..., Any],
) -> None:
    one: FeedbackService = build_role("serve", **SPLIT)
    other: FeedbackService = build_role("serve", **SPLIT)
    trainer: TrainerProcess = build_role("train", **SPLIT)
    assert not trainer.trainer.use_auto_scores()  # human reward, single mode: people's scores only

    one.set_rating_mode(ADMIN, "pairwise")
    assert one.rating_mode() == "pairwise" and other.rating_mode() == "single"  # until the other's next poll
    switches_of(other).tick()
    trainer.switches.tick()
    assert other.rating_mode() == "pairwise" and trainer.switches.mode.pairwise
    assert trainer.trainer.use_auto_scores()  # Bradley-Terry rewards count now
    _answer_one_pair(other)  # the other front-end writes twins now, and its raters compare
    assert trainer.trainer.tick() and trainer.publisher.version == 1

    other.set_rating_mode(ADMIN, "single")
    one.set_reward_source(ADMIN, "vader")
    for process in (one, other):
        switches_of(process).tick()
    trainer.switches.tick()
    assert one.rating_mode() == other.rating_mode() == "single"
    assert other.rewards.requested == "vader"  # asked of its reward thread, which builds it
    assert trainer.switches.reward_spec == "vader" and trainer.trainer.use_auto_scores()

    late: FeedbackService = build_role("serve", **SPLIT, mode="pairwise")  # started after the switches
    assert late.rating_mode() == "single" and late.rewards.requested == "vader"


def test_a_stored_switch_this_process_was_not_configured_for_is_ignored(build_role: Callable[..., Any]) -> None:
    one: FeedbackService = build_role("serve", **SPLIT, reward_choices=("human", "vader", "length:40"))
    other: FeedbackService = build_role("serve", **SPLIT, reward_choices=("human", "vader"))
    one.set_reward_source(ADMIN, "length:40")
    switches_of(other).tick()
    assert other.rewards.requested is None and other.rewards.current().spec == "human"  # not its operator's choice


def switches_of(front: FeedbackService) -> SharedSwitches:
    return next(w for w in front._extra_workers if isinstance(w, SharedSwitches))

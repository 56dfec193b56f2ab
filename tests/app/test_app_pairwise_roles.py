"""Pairwise mode and admin switches in the split roles, in-process with a tiny model: a `serve --mode pairwise`
front-end writes two responses per prompt so pairs form, and a `train --mode pairwise` trainer trains the
Bradley-Terry rewards of the answers (automatic scores) under `--reward human`; a trainer started in single mode
leaves them alone. An admin's switch of the rating mode or the reward source on one front-end reaches the other
front-ends and the trainer (app.shared_switches), and a front-end that starts later serves what the others serve."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.access import Caller
from app.roles import TrainerProcess, build_front_end, build_trainer_process
from app.service import FeedbackService
from app.settings import AppSettings
from app.shared_switches import SharedSwitches
from tests.app.app_helpers import generate

Built = FeedbackService | TrainerProcess
TOKEN = "a-fixed-admin-token-for-tests-0123"
ADMIN = Caller(admin_token=TOKEN)


@pytest.fixture
def build(make_settings: Callable[..., AppSettings]) -> Iterator[Callable[..., Any]]:
    """build(role, **overrides): a front-end service or a trainer process, not started; all stopped at the end."""
    built: list[Built] = []

    def make(role: str, **overrides: Any) -> Any:
        settings = make_settings(**{"reward": "human", "admin_token": TOKEN, **overrides})
        made: Built = build_front_end(settings) if role == "serve" else build_trainer_process(settings)
        built.append(made)
        return made

    yield make
    for made in reversed(built):
        made.stop()


def _answer_one_pair(front: FeedbackService) -> None:
    generate(front, 2)
    alice = front.login("alice")
    shown = front.next_pair_for(alice.id).assignment
    assert shown is not None, "the pairwise front-end wrote no two responses to one prompt"
    assert front.answer_pair(alice.id, shown.pair_id, "a_better").notice == "Saved: A better"


@pytest.mark.parametrize("trainer_mode", ["pairwise", "single"])
def test_a_pairwise_trainer_trains_the_answers_of_a_pairwise_front_end(
    build: Callable[..., Any], trainer_mode: str
) -> None:
    front: FeedbackService = build("serve", mode="pairwise")
    trainer: TrainerProcess = build("train", mode=trainer_mode)
    assert front.rating_mode() == "pairwise"
    _answer_one_pair(front)
    trained = trainer.trainer.tick()
    if trainer_mode == "pairwise":  # Bradley-Terry rewards count: the pair's two samples are one batch
        assert trained and trainer.publisher.version == 1
    else:  # single mode with a human reward counts human scores only, and a pair answer is not one
        assert not trained and trainer.publisher.version == 0


def test_an_admins_switches_on_one_front_end_reach_the_other_front_ends_and_the_trainer(
    build: Callable[..., Any],
) -> None:
    one: FeedbackService = build("serve")
    other: FeedbackService = build("serve")
    trainer: TrainerProcess = build("train")
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

    late: FeedbackService = build("serve", mode="pairwise", reward="human")  # started after the switches
    assert late.rating_mode() == "single" and late.rewards.requested == "vader"


def test_a_stored_switch_this_process_was_not_configured_for_is_ignored(build: Callable[..., Any]) -> None:
    one: FeedbackService = build("serve", reward_choices=("human", "vader", "length:40"))
    other: FeedbackService = build("serve", reward_choices=("human", "vader"))
    one.set_reward_source(ADMIN, "length:40")
    switches_of(other).tick()
    assert other.rewards.requested is None and other.rewards.current().spec == "human"  # not its operator's choice


def switches_of(front: FeedbackService) -> SharedSwitches:
    return next(w for w in front._extra_workers if isinstance(w, SharedSwitches))

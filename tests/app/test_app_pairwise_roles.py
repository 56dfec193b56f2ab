"""Pairwise mode in the split roles, in-process with a tiny model: a `serve --mode pairwise` front-end writes two
responses per prompt so pairs form, and a `train --mode pairwise` trainer trains the Bradley-Terry rewards of the
answers (automatic scores) under `--reward human`; a trainer started in single mode leaves them alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.roles import TrainerProcess, build_front_end, build_trainer_process
from app.service import FeedbackService
from app.settings import AppSettings
from tests.app.app_helpers import generate

Built = FeedbackService | TrainerProcess


@pytest.fixture
def build(make_settings: Callable[..., AppSettings]) -> Iterator[Callable[..., Any]]:
    """build(role, **overrides): a front-end service or a trainer process, not started; all stopped at the end."""
    built: list[Built] = []

    def make(role: str, **overrides: Any) -> Any:
        settings = make_settings(reward="human", **overrides)
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

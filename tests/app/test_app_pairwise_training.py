"""Pairwise mode end to end with the tiny model and real threads: the generator writes two responses per prompt,
one answer makes a pair's Bradley-Terry rewards, and the trainer takes one PPO step on exactly those samples."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from app.cli import parse_settings
from app.service import FeedbackService
from storage.schema import Sample
from tests.app.app_helpers import batches
from tests.app.conftest import wait_until


def test_mode_comes_from_the_command_line() -> None:
    assert parse_settings(["--mode", "pairwise"], env={}).mode == "pairwise"
    assert parse_settings([], env={}).mode == "single"
    with pytest.raises(SystemExit):
        parse_settings(["--mode", "triplets"], env={})


def test_one_answer_trains_one_step_on_bradley_terry_rewards(make_service: Callable[..., FeedbackService]) -> None:
    service = make_service(mode="pairwise")  # batch_size 2
    service.start()
    alice = service.login("alice")
    shown = wait_until(lambda: service.next_pair_for(alice.id).assignment, what="a first pair")
    assert shown.version_a == shown.version_b == 0  # two responses of the same version, written together
    service.answer_pair(alice.id, shown.pair_id, "a_better")
    wait_until(lambda: service.dashboard().version == 1, what="a PPO step")
    (batch,) = [b for b in batches(service) if b.status == "trained"]
    assert batch.score_mean == pytest.approx(0.0, abs=1e-9)  # +r and -r: the two samples of the pair
    with service.db.read_session_factory.begin() as s:
        trained = s.execute(
            select(Sample.prompt_id, func.count(), func.max(Sample.train_score))
            .where(Sample.batch_id == batch.id)
            .group_by(Sample.prompt_id)
        ).all()
    assert len(trained) == 1 and trained[0][1] == 2 and trained[0][2] == pytest.approx(0.2549, abs=1e-3)

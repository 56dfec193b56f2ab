"""Pairwise mode through the service (fake workers, real storage): the admin switch, answers becoming Bradley-Terry
rewards that the trainer's claim trains once, a restart keeping both, and the TRL-shaped comparisons export."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest

from app.access import Caller
from app.errors import AccessDenied, UserError
from app.pairwise import BT_SOURCE
from app.service import FeedbackService
from app.settings import AppSettings
from storage.batches import claim_next_batch, finish_batch
from storage.pairs import get_pair
from storage.ratings import ratings_for_sample
from storage.records import StepIn
from tests.app.fakes import add_fake_samples, fake_service

TOKEN = "a-fixed-admin-token-for-tests-0123"
ADMIN = Caller(admin_token=TOKEN)
# The columns TRL reads from an explicit-prompt preference dataset: DPOTrainer needs all three, RewardTrainer
# chosen/rejected (and uses prompt when present). See the TRL docs, "Dataset formats: preference".
TRL_PREFERENCE_COLUMNS = {"prompt", "chosen", "rejected"}


@pytest.fixture
def make_fake(prompt_file: Path, tmp_path: Path, app_db_url: str | None) -> Iterator[Callable[..., FeedbackService]]:
    built: list[FeedbackService] = []

    def make(**overrides: Any) -> FeedbackService:
        settings = AppSettings(
            model="unused",
            dataset=str(prompt_file),
            data_dir=tmp_path / "data",
            db=app_db_url,
            batch_size=2,
            admin_token=TOKEN,
        )
        service = fake_service(settings, **overrides)
        built.append(service)
        return service

    yield make
    for service in built:
        service.stop()


def _bt_score(service: FeedbackService, sample_id: int) -> float | None:
    with service.db.read_session_factory.begin() as s:
        scores = [r.score for r in ratings_for_sample(s, sample_id) if r.source == BT_SOURCE]
    return scores[0] if scores else None


def test_only_an_admin_switches_the_mode(make_fake: Callable[..., FeedbackService]) -> None:
    service = make_fake()
    alice = service.login("alice")
    assert service.rating_mode() == "single"
    assert service.next_pair_for(alice.id).waiting is not None  # the mode is off: no pair, a notice why
    with pytest.raises(AccessDenied):
        service.set_rating_mode(Caller(), "pairwise")
    with pytest.raises(UserError):
        service.set_rating_mode(ADMIN, "triplets")
    assert service.rating_mode() == "single"
    add_fake_samples(service, 2)
    assert service.next_for(alice.id).assignment is not None  # single mode: the Rate tab has work
    service.set_rating_mode(ADMIN, "pairwise")
    assert service.rating_mode() == "pairwise"
    single = service.next_for(alice.id)
    assert single.assignment is None and "Compare tab" in (single.waiting or "")  # one mode at a time
    assert service.next_pair_for(alice.id).assignment is not None


def test_answers_become_rewards_trained_once_and_survive_a_restart(
    make_fake: Callable[..., FeedbackService],
) -> None:
    service = make_fake(mode="pairwise")
    alice = service.login("alice")
    add_fake_samples(service, 2)
    shown = service.next_pair_for(alice.id).assignment
    assert shown is not None and shown.response_a != shown.response_b
    after = service.answer_pair(alice.id, shown.pair_id, "a_better")
    assert after.notice == "Saved: A better" and after.progress.rated == 1 and after.progress.can_undo
    with service.db.read_session_factory.begin() as s:  # the ids behind A and B
        pair = get_pair(s, shown.pair_id)
    win, lose = _bt_score(service, pair.sample_a_id), _bt_score(service, pair.sample_b_id)
    assert win is not None and lose is not None and win == pytest.approx(-lose) and win > 0
    service.stop()

    again = make_fake(mode="pairwise")  # a restart: comparisons and rewards are in the database
    assert _bt_score(again, pair.sample_a_id) == win
    with again.db.session_factory.begin() as s:
        batch = claim_next_batch(s, 2, "trainer", use_auto_scores=True)
    assert batch is not None and {x.sample_id: x.score for x in batch.samples} == {
        pair.sample_a_id: win,
        pair.sample_b_id: lose,
    }
    assert (again.undo_pair(alice.id).notice or "").startswith("Cannot undo")
    with again.db.session_factory.begin() as s:
        finish_batch(s, batch, StepIn(1, {}, {}, {}))
        assert claim_next_batch(s, 1, "trainer", use_auto_scores=True) is None  # trained once


def test_undo_takes_the_reward_back(make_fake: Callable[..., FeedbackService]) -> None:
    service = make_fake(mode="pairwise")
    alice = service.login("alice")
    add_fake_samples(service, 2)
    shown = service.next_pair_for(alice.id).assignment
    assert shown is not None
    service.answer_pair(alice.id, shown.pair_id, "both_bad")
    undone = service.undo_pair(alice.id)
    assert undone.notice == "Undone" and undone.assignment is not None
    assert undone.assignment.pair_id == shown.pair_id  # shown again, to answer anew
    with service.db.read_session_factory.begin() as s:
        pair = get_pair(s, shown.pair_id)
    assert _bt_score(service, pair.sample_a_id) is None and _bt_score(service, pair.sample_b_id) is None
    skipped = service.skip_pair(alice.id, shown.pair_id)
    assert skipped.assignment is None and skipped.progress.skipped == 1


def test_comparisons_export_is_admin_only_and_in_trl_shape(make_fake: Callable[..., FeedbackService]) -> None:
    service = make_fake(mode="pairwise")
    names = ["alice", "bob", "carol"]
    raters = [service.login(n) for n in names]
    add_fake_samples(service, 6)
    answers = ["b_better", "tie", "both_bad"]
    for r, answer in zip(raters, answers):
        shown = service.next_pair_for(r.id).assignment
        assert shown is not None
        service.answer_pair(r.id, shown.pair_id, answer)
        if answer == "b_better":
            expected = (shown.prompt, shown.response_b, shown.response_a)
    with pytest.raises(AccessDenied):
        service.export(Caller(), "comparisons")
    path = service.export(ADMIN, "comparisons")
    data = datasets.load_dataset("json", data_files=path, split="train")
    assert set(data.column_names) >= TRL_PREFERENCE_COLUMNS
    assert data.num_rows == 1  # the tie and the both-bad answer prefer nothing: left out
    assert (data[0]["prompt"], data[0]["chosen"], data[0]["rejected"]) == expected
    assert data[0]["rater"] == "alice"

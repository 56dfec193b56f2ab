"""`--reward human+learned` end to end: the real app (tiny Llama policy, tiny BERT embedder, real threads) fits
the learned reward once enough samples have human ratings, scores unrated samples as `learned@v1` and trains on
them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.service import FeedbackService
from storage.export import iter_ratings
from tests.app.conftest import wait_until
from tests.app.learned_fakes import save_tiny_bert


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def learned_sources(service: FeedbackService) -> set[str]:
    with service.db.read_session_factory.begin() as s:
        return {r["source"] for r in iter_ratings(s) if r["source"] != "human"}


def test_human_plus_learned_scores_unrated_samples_and_the_trainer_uses_them(
    make_service: Callable[..., FeedbackService], tiny_bert: Path
) -> None:
    service = make_service(
        reward="human+learned", learned_embedder=str(tiny_bert), learned_min_ratings=8, learned_wait_s=0.0, buffer=6
    )
    assert service.learned is not None
    service.start()
    rater = service.login("ann")
    for i in range(8):
        shown = wait_until(lambda: service.next_for(rater.id).assignment, what="a sample to rate")
        service.rate(rater.id, shown.sample_id, 1.0 if i % 2 else -1.0)
    assert wait_until(lambda: "learned@v1" in learned_sources(service), what="learned scores")
    d = wait_until(lambda: service.dashboard(), what="dashboard")
    assert d.learned is not None and d.learned.version is not None and d.learned.fit_n + d.learned.held_out_n >= 8
    # more steps than the 8 human ratings alone make (batches of 2): learned scores reach the trainer
    wait_until(lambda: len(service.history()) > 4, timeout=120, what="steps trained on learned scores")

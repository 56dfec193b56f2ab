"""The reward model learned from the raters (app/learned/): it fits a planted preference, refuses to score before
it has enough human ratings, never outranks a person for training, and its guard keeps reward hacks out."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.access import Access
from app.cli import parse_settings
from app.learned.fit import fit_ridge, pairwise_accuracy, spearman
from app.learned.head import fit_head
from app.learned.worker import LearnedRewardWorker
from app.parts import ServiceParts
from app.reward_source import RewardControl, build_source
from app.service import FeedbackService
from app.settings import AppSettings
from app.staleness import StalenessWindow
from app.startup import import_prompts, open_store
from app.worker import ErrorLog
from storage.batches import claim_next_batch
from storage.export import iter_ratings
from storage.learned import samples_to_score
from storage.prompts import prompts_for_generation
from storage.raters import get_or_create_model_rater, get_or_create_rater
from storage.ratings import record_rating
from storage.records import NewSample
from storage.samples import add_samples
from storage.schema import utcnow
from tests.app.fakes import FakeGenerator, FakePublisher, FakeRewardWorker, FakeTrainer
from tests.app.learned_fakes import planted_responses, planted_score, tiny_embedder

PROMPT = "Say something kind."
HACK = " ".join(["good"] * 12)
"""What a policy trained on "liked words" would drift to: nothing like what people rated."""


# ----------------------------------------------------------------------------------------------- the maths
def test_rank_metrics_on_hand_computed_cases() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))
    # pairs (0,1) and (0,2) ordered as people did, (1,2) a tie in the prediction: (1 + 1 + 0.5) / 3
    assert pairwise_accuracy([0.1, 0.2, 0.2], [0.0, 1.0, 2.0]) == pytest.approx(2.5 / 3)
    assert pairwise_accuracy([0.3, 0.1], [0.0, 1.0]) == 0.0
    assert math.isnan(pairwise_accuracy([0.3, 0.1], [1.0, 1.0]))


def test_ridge_recovers_a_linear_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = x @ np.array([1.0, -2.0, 0.0, 0.5, 3.0]) + 0.7
    fit = fit_ridge(x, y)
    np.testing.assert_allclose(fit.predict(x), y, atol=0.05)
    assert fit.loo_rmse < 0.1


# ------------------------------------------------------------------------------- the head and its guard
def planted(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    responses = planted_responses(n, seed)
    return responses, np.array([planted_score(r) for r in responses])


def test_the_head_fits_a_planted_preference_on_tiny_data() -> None:
    embedder = tiny_embedder()
    responses, scores = planted(60, seed=0)
    head = fit_head(1, list(range(1, 61)), embedder.embed([PROMPT] * 60, responses), scores)
    assert (head.fit_n, head.held_out.n) == (48, 12)
    assert head.held_out.spearman > 0.8
    assert head.held_out.pairwise > 0.8


def test_the_guard_refuses_what_is_far_from_the_fit_and_passes_the_rest() -> None:
    embedder = tiny_embedder()
    responses, scores = planted(60, seed=1)
    head = fit_head(1, list(range(1, 61)), embedder.embed([PROMPT] * 60, responses), scores)
    fresh = planted_responses(40, seed=11)
    assert all(v.guarded is None for v in head.judge(embedder.embed([PROMPT] * 40, fresh)))
    (hack,) = head.judge(embedder.embed([PROMPT], [HACK]))
    assert hack.score > 1.0 and hack.guarded is not None and "learned@v1" in hack.guarded


# ------------------------------------------------------------------------------------------ in the app
@pytest.fixture
def make_learned(prompt_file: Path, tmp_path: Path, app_db_url: str | None) -> Iterator[Callable[..., Any]]:
    """A service over real storage with fake generator/trainer and a learned reward worker on a tiny BERT, driven
    by hand (`worker.resume_numbering()`, `worker.tick()`: no thread)."""
    built: list[FeedbackService] = []

    def make(**overrides: Any) -> tuple[FeedbackService, LearnedRewardWorker]:
        settings = AppSettings(
            model="unused", dataset=str(prompt_file), data_dir=tmp_path / "data", db=app_db_url, **overrides
        )
        db = open_store(settings)
        errors = ErrorLog()
        rewards = RewardControl(settings.reward, settings.reward_choices)
        worker = LearnedRewardWorker(db, rewards, tiny_embedder(), settings, errors)
        parts = ServiceParts(
            db,
            import_prompts(db, settings),
            Access([], (), None),
            errors,
            rewards,
            FakePublisher(),
            FakeGenerator(),
            FakeTrainer(settings.checkpoint_dir),
            FakeRewardWorker(),
            StalenessWindow(2),
            learned=worker,
        )
        service = FeedbackService(settings, parts)
        built.append(service)
        worker.resume_numbering()
        return service, worker

    yield make
    for service in built:
        service.stop()


def add_planted(service: FeedbackService, responses: list[str]) -> list[int]:
    with service.db.session_factory.begin() as s:
        prompt = prompts_for_generation(s, 1)[0]
        return add_samples(s, [NewSample(prompt.id, r, [1, 2], [3, 4], 0, [-1.0, -1.0]) for r in responses])


def rate_as_human(service: FeedbackService, ids: list[int], responses: list[str], name: str = "ann") -> int | None:
    """Rate by the planted preference; returns the sample the rater is shown next (leased to them)."""
    rater = service.login(name)
    shown = None
    for sample_id, response in zip(ids, responses):
        shown = service.rate(rater.id, sample_id, planted_score(response)).assignment
    return None if shown is None else shown.sample_id


def sources(service: FeedbackService) -> dict[int, set[str]]:
    with service.db.read_session_factory.begin() as s:
        out: dict[int, set[str]] = {}
        for row in iter_ratings(s):
            out.setdefault(row["sample_id"], set()).add(row["source"])
        return out


def test_human_plus_learned_refuses_until_enough_ratings_then_scores_the_rest_as_learned_at_vN(
    make_learned: Callable[..., Any],
) -> None:
    service, worker = make_learned(reward="human+learned", learned_wait_s=0.0, learned_min_ratings=24)
    responses = planted_responses(70, seed=2)
    ids = add_planted(service, responses)
    rate_as_human(service, ids[:20], responses[:20])
    worker.tick()
    worker.refresh_status()
    d = service.dashboard()
    assert d.learned is not None and d.learned.version is None and d.learned.have == 20
    assert "scores nothing until 24 samples have human ratings (20 so far)" in (d.reward_note or "")
    assert not any(src.startswith("learned") for found in sources(service).values() for src in found)

    shown = rate_as_human(service, ids[20:50], responses[20:50])
    while worker.tick():
        pass
    worker.refresh_status()
    d = service.dashboard()
    assert d.learned is not None and d.learned.version == 1 and d.learned.fit_n + d.learned.held_out_n == 50
    assert d.learned.spearman is not None and d.reward_note is None
    found = sources(service)
    assert all(found[i] == {"human"} for i in ids[:50])  # people rated these: the model leaves them alone
    assert shown in ids[50:] and shown not in found  # the one a person is looking at is left to them
    assert all(found[i] == {"learned@v1"} for i in ids[50:] if i != shown)  # one rating steers many samples
    assert d.learned.scored == 19 and d.counts["auto_ratings"] == 19


def test_a_restarted_app_numbers_its_fits_after_the_stored_ones(make_learned: Callable[..., Any]) -> None:
    service, worker = make_learned(reward="learned", learned_min_ratings=8)
    with service.db.session_factory.begin() as s:
        get_or_create_model_rater(s, "learned@v7")
    worker.resume_numbering()
    responses = planted_responses(12, seed=3)
    ids = add_planted(service, responses)
    shown = rate_as_human(service, ids[:10], responses[:10])
    worker.tick()
    worker.tick()
    assert worker.status.version == 8
    assert {sources(service)[i].pop() for i in ids[10:] if i != shown} == {"learned@v8"}


def test_a_human_rating_always_wins_over_a_learned_score_for_training(make_learned: Callable[..., Any]) -> None:
    service, _ = make_learned(reward="human+learned")
    a, b = add_planted(service, ["good day", "sad day"])
    with service.db.session_factory.begin() as s:
        model = get_or_create_model_rater(s, "learned@v3")
        record_rating(s, a, model.id, 0.9, source="learned@v3")
        record_rating(s, b, model.id, 0.4, source="learned@v3")
        person = get_or_create_rater(s, "bob")
        record_rating(s, a, person.id, -0.5)  # after the model: the person wins
    with service.db.session_factory.begin() as s:
        batch = claim_next_batch(s, 2, "test", use_auto_scores=service.rewards.use_auto_scores())
    assert batch is not None
    assert {x.sample_id: x.score for x in batch.samples} == {a: -0.5, b: 0.4}


def test_the_guard_quarantines_a_reward_hack_and_a_later_human_rating_counts_as_a_check(
    make_learned: Callable[..., Any],
) -> None:
    service, worker = make_learned(reward="learned", learned_min_ratings=40)
    (hack,) = add_planted(service, [HACK])  # the oldest, so the rater is not shown it (newest first)
    responses = planted_responses(60, seed=4)
    ids = add_planted(service, responses)
    shown = rate_as_human(service, ids[:50], responses[:50])
    while worker.tick():
        pass
    found = sources(service)
    assert hack not in found  # not scored, so never trained on the model's say-so
    assert all(found[i] == {"learned@v1"} for i in ids[50:] if i != shown)
    checked = [i for i in ids[50:] if i != shown][:4]
    rate_as_human(service, checked, [responses[ids.index(i)] for i in checked], name="cat")  # people check four
    worker.refresh_status()
    d = service.dashboard()
    assert d.learned is not None and d.learned.guarded == 1 and d.counts["quarantined"] == 1
    assert d.learned.checks == 4 and d.learned.checks_mean_abs_diff is not None


def test_human_plus_learned_leaves_new_samples_to_people_first(make_learned: Callable[..., Any]) -> None:
    service, _ = make_learned(reward="human+learned")
    (sample,) = add_planted(service, ["a lovely day"])
    with service.db.read_session_factory.begin() as s:
        assert samples_to_score(s, waited_s=20.0) == []
        later = samples_to_score(s, waited_s=20.0, now=utcnow() + timedelta(seconds=21))
    assert [x.id for x in later] == [sample]


def test_the_learned_sources_are_chosen_like_any_other() -> None:
    control = RewardControl("human", ("human", "human+learned"))
    assert not control.use_auto_scores()
    control.request("human+learned")
    assert control.complete(build_source("human+learned"))
    assert control.current().learned and control.use_auto_scores() and control.current().source == "learned"
    assert AppSettings(reward_choices=("human", "learned")).learned_enabled
    assert not AppSettings().learned_enabled
    with pytest.raises(ValueError, match="--learned-min-ratings"):
        AppSettings(learned_min_ratings=4)
    parsed = parse_settings(["--reward", "learned", "--learned-min-ratings", "12"], env={})
    assert parsed.learned_enabled and parsed.learned_min_ratings == 12


def test_export_names_the_fit_that_scored(make_learned: Callable[..., Any], tmp_path: Path) -> None:
    service, worker = make_learned(reward="learned", learned_min_ratings=8)
    responses = planted_responses(12, seed=5)
    ids = add_planted(service, responses)
    rate_as_human(service, ids[:10], responses[:10])
    worker.tick()
    worker.tick()
    path = tmp_path / "out.jsonl"
    with service.db.read_session_factory.begin() as s:
        from storage.export import export_jsonl

        export_jsonl(s, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["source"] for r in rows} == {"human", "learned@v1"}
    assert {r["rater"] for r in rows if r["source"] == "learned@v1"} == {"reward:learned@v1"}

"""The reward thread: a sample the reward raises, hangs or returns garbage on is quarantined and scoring goes on;
hung calls are capped; reward sources are switched only among the configured ones, built in the reward thread."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import app.reward_worker as reward_worker
from app.errors import UserError
from app.reward_source import RewardControl, RewardSource, build_source, source_name
from app.reward_worker import RewardFailing, RewardWorker, clip_scores
from app.worker import ErrorLog
from storage import Database, NewSample, open_database
from storage.prompts import add_prompts, prompts_for_generation
from storage.quarantine import count_quarantined, quarantine_reasons
from storage.ratings import ratings_for_sample
from storage.samples import add_samples
from storage.validation import MAX_SOURCE_CHARS

CHOICES = ("human", "length:4", "no_such_module_for_rlhf_live:fn")


class FakeReward:
    """Scores 0.5, except: raises on `BOOM`, blocks on `HANG` until released, returns NaN for `NAN`."""

    name = "fake"

    def __init__(self, fail_all: bool = False) -> None:
        self.release = threading.Event()
        self.calls: list[list[str]] = []
        self.fail_all = fail_all

    def __call__(self, queries: Sequence[str], responses: Sequence[str]) -> list[float]:
        self.calls.append(list(responses))
        if self.fail_all or "BOOM" in responses:
            raise ValueError("/secret/server/path broke")
        if "HANG" in responses:
            self.release.wait()
        return [math.nan if r == "NAN" else 0.5 for r in responses]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "feedback.db")
    yield database
    database.close()


def add(db: Database, *responses: str) -> list[int]:
    with db.session_factory.begin() as s:
        add_prompts(s, ["a prompt"], source="test")
        (prompt,) = prompts_for_generation(s, 1)
        samples = [NewSample(prompt.id, r, [1], [2], 0, [-0.5], {}) for r in responses]
        return add_samples(s, samples)


def worker(db: Database, reward: FakeReward, **kwargs: float) -> RewardWorker:
    control = RewardControl(RewardSource("fake", reward, "fake"), CHOICES)
    return RewardWorker(db, control, ErrorLog(), 0.05, **kwargs)  # type: ignore[arg-type]


def scored(db: Database, sample_ids: Sequence[int]) -> dict[int, list[float]]:
    with db.read_session_factory.begin() as s:
        return {i: [r.score for r in ratings_for_sample(s, i)] for i in sample_ids}


def reasons(db: Database) -> dict[int, str]:
    with db.read_session_factory.begin() as s:
        return quarantine_reasons(s, "fake")


def test_a_sample_the_reward_raises_on_is_quarantined_and_scoring_goes_on(db: Database) -> None:
    reward = FakeReward()
    ids = add(db, "fine", "BOOM", "also fine")
    w = worker(db, reward)
    assert w.tick()
    assert scored(db, ids) == {ids[0]: [0.5], ids[1]: [], ids[2]: [0.5]}
    assert reasons(db) == {ids[1]: "raised ValueError"}  # the kind of error, not its message (a server path)
    assert not w.tick()  # nothing left: the culprit is not selected again
    new = add(db, "later")
    reward.calls.clear()
    assert w.tick() and reward.calls == [["later"]] and scored(db, new) == {new[0]: [0.5]}
    assert w.status.scored == 3 and w.status.quarantined == 1


def test_a_sample_the_reward_hangs_on_is_quarantined_after_the_time_limit(db: Database) -> None:
    reward = FakeReward()
    ids = add(db, "fine", "HANG", "also fine")
    w = worker(db, reward, timeout_s=0.3)
    try:
        started = time.monotonic()
        assert w.tick()
        assert time.monotonic() - started < 5
        assert scored(db, ids) == {ids[0]: [0.5], ids[1]: [], ids[2]: [0.5]}
        assert reasons(db) == {ids[1]: "no answer within 0.3 s"}
        assert w.calls.hung == 2  # the chunk's call and the culprit's own call, abandoned
    finally:
        reward.release.set()
    deadline = time.monotonic() + 5
    while w.calls.hung and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.calls.hung == 0


def test_a_sample_the_reward_returns_no_valid_score_for_is_quarantined(db: Database) -> None:
    ids = add(db, "fine", "NAN")
    w = worker(db, FakeReward())
    assert w.tick()
    assert scored(db, ids) == {ids[0]: [0.5], ids[1]: []}
    assert reasons(db) == {ids[1]: "returned no valid score"}


def test_a_reward_that_fails_on_everything_quarantines_nothing(db: Database) -> None:
    ids = add(db, "one", "two")
    w = worker(db, FakeReward(fail_all=True))
    with pytest.raises(RewardFailing, match="every sample"):
        w.tick()
    assert reasons(db) == {} and scored(db, ids) == {ids[0]: [], ids[1]: []}


def test_a_lone_bad_sample_is_quarantined_only_once_the_reward_has_worked(db: Database) -> None:
    (bad,) = add(db, "BOOM")
    w = worker(db, FakeReward())
    with pytest.raises(RewardFailing):  # alone, and the reward never worked: it may be the reward
        w.tick()
    assert reasons(db) == {}
    add(db, "fine")
    assert w.tick()
    assert reasons(db) == {bad: "raised ValueError"}


def test_hung_calls_are_capped_then_scoring_stops_with_an_error_until_they_return(db: Database) -> None:
    reward = FakeReward()
    add(db, "HANG", "HANG")
    w = worker(db, reward, timeout_s=0.2, max_hung=2)
    try:
        with pytest.raises(RewardFailing):  # the chunk and the first sample hang: nothing proves the reward works
            w.tick()
        calls = len(reward.calls)
        assert not w.tick() and len(reward.calls) == calls  # stopped: no new call
        assert w.status.stopped is not None and "still running" in w.status.stopped
        last = w.errors.last()
        assert last is not None and "ScoringStopped" in last.message
        assert not w.tick() and len(w.errors.all()) == 1  # recorded once, not at every tick
    finally:
        reward.release.set()
    deadline = time.monotonic() + 5
    while w.calls.hung and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.tick() and w.status.stopped is None  # the calls returned: scoring resumes


def test_a_chunk_too_slow_for_the_limit_is_halved_not_quarantined(db: Database) -> None:
    class SlowInBulk(FakeReward):
        def __call__(self, queries: Sequence[str], responses: Sequence[str]) -> list[float]:
            if len(responses) > 2:
                time.sleep(0.6)
            return super().__call__(queries, responses)

    ids = add(db, "a", "b", "c", "d")
    w = worker(db, SlowInBulk(), timeout_s=0.3, chunk=4)
    assert w.tick()
    assert reasons(db) == {} and all(v == [0.5] for v in scored(db, ids).values())
    assert w.batch == 2


def test_stopping_the_worker_abandons_a_hung_call(db: Database) -> None:
    reward = FakeReward()
    add(db, "HANG")
    w = worker(db, reward, timeout_s=60)
    w.start()
    try:
        deadline = time.monotonic() + 5
        while not reward.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        w.stop()
        assert w.join(5)
    finally:
        reward.release.set()
    assert reasons(db) == {}  # stopping says nothing about the sample


# --------------------------------------------------------------------------------------------- reward sources
def test_only_configured_sources_can_be_requested() -> None:
    control = RewardControl("human", CHOICES)
    assert control.choices == CHOICES
    with pytest.raises(UserError, match="must be one of: human, length:4") as refused:
        control.request("os:system")
    assert "os:system" not in str(refused.value)
    assert control.current().spec == "human" and control.requested is None


def test_a_request_is_built_in_the_reward_thread_which_it_wakes(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    built_in: list[str] = []

    def recording_build(spec: str) -> RewardSource:
        built_in.append(threading.current_thread().name)
        return build_source(spec)

    monkeypatch.setattr(reward_worker, "build_source", recording_build)
    control = RewardControl("human", CHOICES)
    w = RewardWorker(db, control, ErrorLog(), poll_seconds=60)
    w.start()
    try:
        control.request(" length:4 ")
        assert control.switching and control.current().spec == "human"  # recorded, not built here
        deadline = time.monotonic() + 10  # far less than the 60 s poll: the request woke the thread
        while control.current().spec != "length:4" and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        w.stop()
        w.join(10)
    assert control.current().source == "length:4" and control.use_auto_scores() and not control.switching
    assert built_in == ["reward"]


def test_a_failed_build_keeps_the_previous_source_and_shows_no_server_details(db: Database) -> None:
    control = RewardControl("length:4", CHOICES)
    errors = ErrorLog()
    w = RewardWorker(db, control, errors, 0.05)
    control.request("no_such_module_for_rlhf_live:fn")
    w.tick()
    assert control.current().spec == "length:4" and control.requested is None
    assert control.switch_error == "could not switch the reward source to no_such_module_for_rlhf_live:fn; " + (
        "still using length:4"
    )
    last = errors.last()
    assert last is not None and "RewardSwitchFailed" in last.message and "No module" not in last.message


def test_the_last_request_wins_and_asking_for_the_current_source_cancels(db: Database) -> None:
    control = RewardControl("human", CHOICES)
    w = RewardWorker(db, control, ErrorLog(), 0.05)
    control.request("length:4")
    control.request("human")
    assert not control.switching
    w.tick()
    assert control.current().spec == "human"
    control.request("length:4")
    built = build_source("length:4")
    control.request("human")  # while length:4 was being built
    assert not control.complete(built) and control.current().spec == "human"


def test_the_start_up_source_is_built_at_once_and_fails_fast() -> None:
    with pytest.raises(ValueError, match="unknown reward"):
        RewardControl("not-a-reward", CHOICES)
    assert RewardControl("vader", CHOICES).choices == (*CHOICES, "vader")  # --reward is always allowed


@given(st.text(max_size=40) | st.sampled_from([*CHOICES, " human", "length:4\n", "vader", "os:system"]))
def test_request_accepts_exactly_the_choices_and_never_builds(spec: str) -> None:
    control = RewardControl(RewardSource("human", None, "human"), CHOICES)
    try:
        control.request(spec)
    except UserError as err:
        assert spec.strip() not in CHOICES and str(err).startswith("the reward source must be one of")
        assert control.requested is None
    else:
        assert spec.strip() in CHOICES
        assert control.requested == (None if spec.strip() == "human" else spec.strip())
    assert control.current().spec == "human"  # nothing was built or swapped in the caller's thread


def test_source_names_and_clipped_scores() -> None:
    class Long:
        name = "x" * 300

    name = source_name(Long())  # type: ignore[arg-type]
    assert len(name) <= MAX_SOURCE_CHARS and name == source_name(Long())  # type: ignore[arg-type]
    assert clip_scores([2.0, -0.5, -3.0], 3, "r") == [1.0, -0.5, -1.0]
    with pytest.raises(ValueError):
        clip_scores([float("nan")], 1, "r")


def test_quarantine_counts_for_the_dashboard(db: Database) -> None:
    add(db, "BOOM", "fine")
    worker(db, FakeReward()).tick()
    with db.read_session_factory.begin() as s:
        assert count_quarantined(s, "fake") == 1 and count_quarantined(s) == 1

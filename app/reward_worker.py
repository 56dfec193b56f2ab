"""The reward thread: switches the reward source when an admin asked for it, and scores open samples with it.

With a reward model selected, every open sample gets its score in the background, stored as a rating by the
model rater `reward:<name>` with source `<name>`. Mixed mode is explicit and storage's rule: a sample that any
person rated trains on the mean human score; otherwise on the automatic score. In human-only mode the thread
idles and automatic scores (from an earlier mode) do not count for training.

Reward code is the operator's (`module:function`, a classifier), so one sample may make it raise or hang. Each
call runs with a time limit (`--reward-timeout-s`, `app.timed_calls`). When a chunk's call fails, the samples are
scored one by one: one by one rather than by bisection, because every call that hangs leaves a thread behind
(bisection would spend one hung call per level on a single bad sample, one by one spends one). A sample whose
own call raises, hangs or returns no valid score is quarantined for that source (`storage.quarantine`): never
given to that reward again, still rateable by people, and the others are scored. Only when the reward is known to
work (another sample of the chunk scored, or, for a chunk of one, any sample since the source was swapped in):
when every sample fails on its own, the reward is what is broken, nothing is quarantined and the error is shown.
After `max_hung` abandoned calls still running, scoring stops (an error on the dashboard) until they return.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from app.reward_source import HUMAN, RewardControl, RewardSource, build_source, source_name
from app.settings import SCORE_RANGE, AppSettings
from app.timed_calls import TIMEOUT_REASON, CallInterrupted, CallTimedOut, TimedCalls
from app.worker import ErrorLog, Worker
from ppo_core.rewards import checked_scores
from storage.engine import Database
from storage.quarantine import quarantine_sample
from storage.raters import get_or_create_model_rater
from storage.ratings import record_rating
from storage.records import SampleRecord
from storage.samples import samples_needing_auto_score

__all__ = ["HUMAN", "RewardControl", "RewardSource", "RewardStatus", "RewardWorker", "clip_scores", "source_name"]

log = logging.getLogger(__name__)

DEFAULT_MAX_HUNG = 3


class InvalidScores(ValueError):
    """The reward answered, but not with one finite score per response."""


class RewardSwitchFailed(Exception):
    """A requested reward source could not be built; the previous one stays (details in the server log)."""


class RewardFailing(Exception):
    """The reward failed on every sample it was given alone: the reward is broken, not the samples."""


class ScoringStopped(Exception):
    """Too many reward calls are still running past the time limit; automatic scoring waits for them."""


def clip_scores(values: Sequence[float], expected: int, name: str) -> list[float]:
    """One finite score per response (else ValueError), clipped to the rating scale."""
    lo, hi = SCORE_RANGE
    checked = checked_scores(values, expected, name)
    out = [min(hi, max(lo, v)) for v in checked]
    if out != checked:
        log.warning("reward %r returned scores outside [%s, %s]; clipped", name, lo, hi)
    return out


@dataclass(frozen=True)
class RewardStatus:
    source: str
    scored: int
    """Samples scored by this process."""
    quarantined: int = 0
    """Samples this process quarantined (storage.quarantine.count_quarantined has the total)."""
    hung: int = 0
    """Reward calls abandoned past the time limit and still running."""
    stopped: str | None = None
    """Why automatic scoring is stopped, safe to show; None while it runs."""


@dataclass(frozen=True)
class _Scored:
    scores: dict[int, float]
    failures: dict[int, str]
    """Sample id -> quarantine reason (no server values)."""


class RewardWorker(Worker):
    name = "reward"
    error_backoff_s = 5.0

    def __init__(
        self,
        db: Database,
        control: RewardControl,
        errors: ErrorLog,
        poll_seconds: float,
        *,
        timeout_s: float = AppSettings.reward_timeout_s,
        max_hung: int = DEFAULT_MAX_HUNG,
        chunk: int = 32,
    ) -> None:
        super().__init__(errors, poll_seconds)
        self.db = db
        self.control = control
        self.batch = chunk
        self.calls = TimedCalls(timeout_s, max_hung, name="reward-call")
        self.status = RewardStatus(control.current().source, 0)
        self._works: str | None = None  # the source that has scored a sample since it was swapped in
        control.subscribe(self.wake)

    def tick(self) -> bool:
        switched = self._apply_request()
        current = self.control.current()
        self.status = replace(self.status, source=current.source, hung=self.calls.hung)
        if current.reward is None:
            return switched
        if self._stopped_by_hung_calls():
            return switched
        with self.db.read_session_factory.begin() as s:
            samples = samples_needing_auto_score(s, current.source, limit=self.batch)
        if not samples:
            return switched
        result = self._score(current, samples)
        self._store(current.source, result)
        return True

    # --------------------------------------------------------------------------------------------- switching
    def _apply_request(self) -> bool:
        """Build the requested source here, in this thread, and swap it in; on failure keep the current one."""
        spec = self.control.take_request()
        if spec is None:
            return False
        try:
            built = build_source(spec)
        except Exception as err:
            failure = RewardSwitchFailed(self.control.fail(spec))
            failure.__cause__ = err  # the server log gets the build's own error; the dashboard only the message
            self.errors.record(self.name, failure)
            return True
        if self.control.complete(built) and built.source != self._works:
            self._works = None
        return True

    def _stopped_by_hung_calls(self) -> bool:
        if not self.calls.saturated:
            if self.status.stopped is not None:
                log.info("reward calls returned; automatic scoring resumes")
                self.status = replace(self.status, stopped=None)
            return False
        if self.status.stopped is None:
            message = (
                f"automatic scoring stopped: {self.calls.hung} reward calls are still running past the "
                f"{self.calls.timeout_s:g} s limit; it resumes when they return (or restart the app)"
            )
            self.status = replace(self.status, stopped=message)
            self.errors.record(self.name, ScoringStopped(message))
        return True

    # ----------------------------------------------------------------------------------------------- scoring
    def _call(self, current: RewardSource, samples: Sequence[SampleRecord]) -> list[float]:
        """One call of the reward on `samples`, in a thread of its own, within the time limit."""
        reward = current.reward
        assert reward is not None
        queries, responses = [x.prompt_text for x in samples], [x.response_text for x in samples]
        raw = self.calls.call(lambda: reward(queries, responses), self.stop_event)
        try:
            return clip_scores(raw, len(samples), current.source)
        except (TypeError, ValueError) as err:
            raise InvalidScores(str(err)) from err

    def _score(self, current: RewardSource, samples: Sequence[SampleRecord]) -> _Scored:
        """Scores for the samples; after a failed chunk, one by one, with the ones that fail alone set apart."""
        try:
            scores = self._call(current, samples)
        except CallInterrupted:
            raise
        except Exception as err:
            log.warning(
                "reward %s failed on a chunk of %d samples (%s); scoring them one by one",
                current.source,
                len(samples),
                _reason(err),
            )
            result = self._one_by_one(current, samples)
            if (
                isinstance(err, CallTimedOut)
                and result.scores
                and not any(_timed_out(r) for r in result.failures.values())
            ):
                # every sample answers in time alone: the chunk is too big for the limit, not stuck
                self.batch = max(1, self.batch // 2)
                log.warning("reward %s: chunks of %d samples from now on", current.source, self.batch)
            return result
        self._works = current.source
        return _Scored({x.id: v for x, v in zip(samples, scores)}, {})

    def _one_by_one(self, current: RewardSource, samples: Sequence[SampleRecord]) -> _Scored:
        result = _Scored({}, {})
        for sample in samples:
            if self.calls.saturated:  # the rest wait until the hung calls return
                break
            try:
                result.scores[sample.id] = self._call(current, [sample])[0]
            except CallInterrupted:
                raise
            except Exception as err:
                result.failures[sample.id] = _reason(err)
        if result.scores:
            self._works = current.source
        elif result.failures and (len(samples) > 1 or self._works != current.source):
            kinds = sorted(set(result.failures.values()))
            raise RewardFailing(f"the reward failed on every sample it was given ({'; '.join(kinds)})")
        return result

    def _store(self, source: str, result: _Scored) -> None:
        with self.db.session_factory.begin() as s:
            rater = get_or_create_model_rater(s, source)
            for sample_id, score in result.scores.items():
                record_rating(s, sample_id, rater.id, score, source=source, score_range=SCORE_RANGE)
            added = sum(quarantine_sample(s, i, source, reason) for i, reason in result.failures.items())
        for sample_id, reason in result.failures.items():
            log.warning("sample %d quarantined for reward %s: %s", sample_id, source, reason)
        self.status = replace(
            self.status,
            scored=self.status.scored + len(result.scores),
            quarantined=self.status.quarantined + added,
            hung=self.calls.hung,
        )


def _timed_out(reason: str) -> bool:
    return reason.startswith(TIMEOUT_REASON)


def _reason(err: BaseException) -> str:
    """Why a call failed, for operators: the kind of failure, never its message (it may hold server values)."""
    if isinstance(err, CallTimedOut):
        return str(err)  # TIMEOUT_REASON + "30 s": our own text
    if isinstance(err, InvalidScores):
        return "returned no valid score"
    return f"raised {type(err).__name__}"

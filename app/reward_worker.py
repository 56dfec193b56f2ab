"""Automatic rewards: the reward source the app uses (switchable at run time) and the thread that scores samples.

With a reward model selected, every open sample gets its score in the background, stored as a rating by the
model rater `reward:<name>` with source `<name>`. Mixed mode is explicit and storage's rule: a sample that any
person rated trains on the mean human score; otherwise on the automatic score. In human-only mode the thread
idles and automatic scores (from an earlier mode) do not count for training.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from app.settings import SCORE_RANGE
from app.worker import ErrorLog, Worker
from ppo_core.rewards import Reward, checked_scores, make_reward
from storage.engine import Database
from storage.raters import get_or_create_model_rater
from storage.ratings import record_rating
from storage.samples import samples_needing_auto_score
from storage.validation import MAX_SOURCE_CHARS

log = logging.getLogger(__name__)

HUMAN = "human"


def source_name(reward: Reward) -> str:
    """The reward's name as a storage source (within storage's length limit, stable for the same reward)."""
    name = reward.name.strip()
    if len(name) <= MAX_SOURCE_CHARS:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: MAX_SOURCE_CHARS - 9]}#{digest}"


def build_reward(spec: str) -> Reward | None:
    """None for `human`; else a Reward from ppo_core (ValueError with a clear message for a bad spec)."""
    spec = spec.strip()
    if spec == HUMAN:
        return None
    try:
        return make_reward(spec)
    except ValueError:
        raise
    except Exception as err:  # e.g. a classifier folder that transformers cannot load
        raise ValueError(f"cannot build reward {spec!r}: {type(err).__name__}: {err}") from err


@dataclass(frozen=True)
class RewardSource:
    spec: str
    """What the admin asked for (`human`, `vader`, ...)."""
    reward: Reward | None
    source: str
    """The source name stored with its scores; `human` in human-only mode."""


class RewardControl:
    """The current reward source, swapped whole under a lock (the admin changes it; workers read it)."""

    def __init__(self, spec: str) -> None:
        self._lock = threading.Lock()
        self._current = self._make(spec)

    @staticmethod
    def _make(spec: str) -> RewardSource:
        reward = build_reward(spec)
        return RewardSource(spec.strip(), reward, HUMAN if reward is None else source_name(reward))

    def set(self, spec: str) -> RewardSource:
        """Build the new reward first (may take a while for a classifier), then swap it in."""
        new = self._make(spec)
        with self._lock:
            self._current = new
        log.info("reward source is now %s", new.source)
        return new

    def current(self) -> RewardSource:
        with self._lock:
            return self._current

    def use_auto_scores(self) -> bool:
        return self.current().reward is not None


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


class RewardWorker(Worker):
    name = "reward"
    error_backoff_s = 5.0

    def __init__(self, db: Database, control: RewardControl, errors: ErrorLog, poll_seconds: float) -> None:
        super().__init__(errors, poll_seconds)
        self.db = db
        self.control = control
        self.batch = 32
        self.status = RewardStatus(control.current().source, 0)

    def tick(self) -> bool:
        current = self.control.current()
        self.status = replace(self.status, source=current.source)
        if current.reward is None:
            return False
        with self.db.read_session_factory.begin() as s:
            samples = samples_needing_auto_score(s, current.source, limit=self.batch)
        if not samples:
            return False
        raw = current.reward([x.prompt_text for x in samples], [x.response_text for x in samples])
        scores = clip_scores(raw, len(samples), current.source)
        with self.db.session_factory.begin() as s:
            rater = get_or_create_model_rater(s, current.source)
            for sample, score in zip(samples, scores):
                record_rating(s, sample.id, rater.id, score, source=current.source, score_range=SCORE_RANGE)
        self.status = replace(self.status, scored=self.status.scored + len(samples))
        return True

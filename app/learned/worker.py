"""The learned reward thread: refits the reward head as human ratings arrive, and, when the reward source is
`learned` or `human+learned`, scores the samples no person rated.

It owns the embedder and the head; nobody else touches them. It runs at the workers' lower CPU priority with one
torch thread, and the rater path never waits for it: a rating only sets its wake event.

Refit: once `--learned-min-ratings` samples have human ratings, and then after every `--learned-refit-every` new
human ratings, or `--learned-refit-s` seconds after the last fit when any human rating changed. Each fit gets the
next version N and its scores are stored as source `learned@vN`. Embeddings are cached per sample (its text never
changes), so a refit embeds only the newly rated samples.

Scoring: `learned` scores every open sample no person rated and nobody is looking at; `human+learned` leaves a
sample to people for `--learned-wait-s` first. The human score always wins for training (storage.scoring), and a
sample the guard refuses (app.learned.head) is quarantined for `learned`: not scored, so never trained on the
model's say-so. A person's rating of a learned-scored sample is a check of the model (storage.learned.checks).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

import numpy as np
import torch

from app.learned.embedder import Embedder
from app.learned.fit import Array, pairwise_accuracy
from app.learned.head import RewardHead, Verdict, fit_head
from app.reward_source import HUMAN_LEARNED, RewardControl
from app.settings import SCORE_RANGE, AppSettings
from app.views import LearnedRewardView
from app.worker import ErrorLog, Worker
from storage.engine import Database
from storage.learned import (
    LEARNED_SOURCE,
    checks,
    count_human_rated_samples,
    count_learned_scores,
    human_rating_mark,
    human_scored,
    latest_learned_version,
    learned_source,
    samples_to_score,
)
from storage.quarantine import count_quarantined, quarantine_sample
from storage.raters import get_or_create_model_rater
from storage.ratings import record_rating
from storage.records import SampleRecord

log = logging.getLogger(__name__)

STATUS_EVERY_S = 3.0
"""How often the counts behind the dashboard (scores, guarded, checks) are read again."""


class LearnedRewardWorker(Worker):
    name = "learned-reward"

    def __init__(
        self, db: Database, control: RewardControl, embedder: Embedder, settings: AppSettings, errors: ErrorLog
    ) -> None:
        super().__init__(errors, settings.poll_seconds)
        self.db = db
        self.control = control
        self.embedder = embedder
        self.settings = settings
        self.head: RewardHead | None = None
        self.status = LearnedRewardView(version=None, needed=settings.learned_min_ratings, have=0)
        self._cache: dict[int, Array] = {}
        self._version = 0
        self._fitted_mark: tuple[int, int] | None = None
        self._fitted_at = -math.inf
        self._status_at = -math.inf
        self.chunk = 8
        """Samples scored per transaction: small, so a rater's write never waits long behind the thread's (bench)."""
        control.subscribe(self.wake)

    def setup(self) -> None:
        torch.set_num_threads(1)  # per thread: the generator's and trainer's threads keep theirs
        self.resume_numbering()

    def resume_numbering(self) -> None:
        """Number the next fit after the highest `learned@vN` in storage (a restart never reuses a number)."""
        with self.db.read_session_factory.begin() as s:
            self._version = latest_learned_version(s)

    def tick(self) -> bool:
        did = self.refit_if_due()
        if self.head is not None and self.control.current().learned:
            did = self.score_some() or did
        if time.monotonic() - self._status_at >= STATUS_EVERY_S:
            self.refresh_status()
        return did

    # --------------------------------------------------------------------------------------------- fitting
    def refit_if_due(self) -> bool:
        with self.db.read_session_factory.begin() as s:
            mark = human_rating_mark(s)
        if mark == self._fitted_mark or not self._due(mark):
            return False
        with self.db.read_session_factory.begin() as s:
            rows = human_scored(s)
        self.status = replace(self.status, have=len(rows))
        self._fitted_mark = mark
        if len(rows) < self.settings.learned_min_ratings:
            return False
        start = time.perf_counter()
        x = self._embed([r.sample_id for r in rows], [r.prompt for r in rows], [r.response for r in rows])
        head = fit_head(self._version + 1, [r.sample_id for r in rows], x, np.array([r.score for r in rows]))
        self._version, self.head, self._fitted_at = head.version, head, time.monotonic()
        agreement = head.held_out
        self.status = replace(
            self.status,
            version=head.version,
            fit_n=head.fit_n,
            held_out_n=agreement.n,
            spearman=_finite(agreement.spearman),
            pairwise=_finite(agreement.pairwise),
            fit_s=time.perf_counter() - start,
        )
        log.info(
            "learned reward v%d: fit on %d, held-out %d: spearman %.2f, pairwise %.2f (alpha %g, %.2f s)",
            head.version,
            head.fit_n,
            agreement.n,
            agreement.spearman,
            agreement.pairwise,
            head.alpha,
            self.status.fit_s,
        )
        return True

    def _due(self, mark: tuple[int, int]) -> bool:
        """Due at the first possible fit, after `refit_every` new human ratings, or `refit_s` after the last fit
        when anything changed (an undo, a slow trickle)."""
        if self.head is None or self._fitted_mark is None:
            return True
        new = mark[0] - self._fitted_mark[0]
        waited = time.monotonic() - self._fitted_at
        return new >= self.settings.learned_refit_every or waited >= self.settings.learned_refit_s

    def _embed(self, ids: list[int], prompts: list[str], responses: list[str]) -> Array:
        missing = [i for i, sample_id in enumerate(ids) if sample_id not in self._cache]
        if missing:
            fresh = self.embedder.embed([prompts[i] for i in missing], [responses[i] for i in missing])
            for i, row in zip(missing, fresh):
                self._cache[ids[i]] = row
        return np.stack([self._cache[i] for i in ids])

    # --------------------------------------------------------------------------------------------- scoring
    def score_some(self) -> bool:
        """Score (or guard) one chunk of the samples waiting for the learned model; True if there were any."""
        head = self.head
        assert head is not None
        waited = self.settings.learned_wait_s if self.control.current().spec == HUMAN_LEARNED else 0.0
        with self.db.read_session_factory.begin() as s:
            samples = samples_to_score(s, waited_s=waited, limit=self.chunk)
        if not samples:
            return False
        x = self.embedder.embed([x.prompt_text for x in samples], [x.response_text for x in samples])
        self._store(head, samples, head.judge(x))
        return True

    def _store(self, head: RewardHead, samples: list[SampleRecord], verdicts: list[Verdict]) -> None:
        lo, hi = SCORE_RANGE
        source = learned_source(head.version)
        with self.db.session_factory.begin() as s:
            rater = get_or_create_model_rater(s, source)
            for sample, verdict in zip(samples, verdicts):
                if verdict.guarded is None:
                    score = min(hi, max(lo, verdict.score))
                    record_rating(s, sample.id, rater.id, score, source=source, score_range=SCORE_RANGE)
                else:
                    quarantine_sample(s, sample.id, LEARNED_SOURCE, verdict.guarded)
        guarded = [v.guarded for v in verdicts if v.guarded is not None]
        if guarded:
            log.warning("learned reward guarded %d samples, e.g. %s", len(guarded), guarded[0])

    # ---------------------------------------------------------------------------------------------- status
    def refresh_status(self) -> None:
        with self.db.read_session_factory.begin() as s:
            have = count_human_rated_samples(s)
            scored = count_learned_scores(s)
            guarded = count_quarantined(s, LEARNED_SOURCE)
            found = checks(s)
        learned = [c.learned for c in found]
        human = [c.human for c in found]
        self.status = replace(
            self.status,
            have=have,
            scoring=self.control.current().learned,
            scored=scored,
            guarded=guarded,
            checks=len(found),
            checks_pairwise=_finite(pairwise_accuracy(learned, human)) if len(found) >= 2 else None,
            checks_mean_abs_diff=float(np.mean(np.abs(np.subtract(learned, human)))) if found else None,
        )
        self._status_at = time.monotonic()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None

"""`FeedbackService`: the one object the UI talks to (docs/app-service-contract.md).

It is built from its parts (`app.parts.ServiceParts`) by the composition root, `app.bootstrap.build_service`:
storage, the prompts, the access rules and the three workers (generator, trainer, reward). Rater methods are a
couple of short database operations and never touch torch, so a rating never waits behind generation or a PPO
step. Admin and export methods take the request's `Caller` and check it with `Access` on every call.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from app.access import Caller
from app.dashboard import DashboardBuilder
from app.errors import AccessDenied, UserError
from app.pairwise import PairDesk
from app.parts import ServiceParts
from app.rating_mode import RatingMode
from app.settings import SCORE_RANGE, AppSettings
from app.views import (
    Assignment,
    Comparison,
    Dashboard,
    HistoryPoint,
    NextResult,
    PairResult,
    Progress,
    RaterView,
    RatingRow,
    VersionScore,
)
from storage.batches import list_batches, requeue_failed_batch
from storage.dashboard import version_scores
from storage.errors import AlreadyRated, BatchStateError, RatingLocked
from storage.export import export_jsonl, export_parquet, pairwise_dataset
from storage.history import training_history
from storage.pair_export import export_comparisons
from storage.raters import get_or_create_rater, set_rater_role
from storage.ratings import last_rating_undoable, rater_progress, recent_ratings, record_rating, undo_last_rating
from storage.samples import next_sample_for_rater, offer_sample, skip_sample
from storage.schema import BATCH_FAILED
from storage.switches import RATING_MODE, REWARD_SOURCE

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("jsonl", "parquet", "pairwise", "comparisons")
MAX_COMPARE_PROMPT_CHARS = 4000
MAX_NAME_CHARS = 200
STOP_TIMEOUT_S = 900.0
PAIRWISE_ON = "Pairwise mode is on: compare two responses on the Compare tab."


class FeedbackService:
    """See the module docstring and docs/app.md."""

    def __init__(self, settings: AppSettings, parts: ServiceParts) -> None:
        self.settings = settings
        self.db = parts.db
        self.prompts = parts.prompts
        self.access = parts.access
        self.errors = parts.errors
        self.rewards = parts.rewards
        self.publisher = parts.publisher
        self.generator = parts.generator
        self.trainer = parts.trainer
        self.reward_worker = parts.reward_worker
        self.window = parts.window
        self.mode = parts.mode or RatingMode(settings.mode)
        self.pairs = PairDesk(self.db, settings, self.mode)
        self.learned = parts.learned
        self._switches = parts.switches
        self._workers = (self.generator, self.trainer, self.reward_worker, *([self.learned] if self.learned else []))
        self._extra_workers = parts.extra_workers
        self._dashboard = DashboardBuilder(self)
        self._history: list[HistoryPoint] = []
        self._history_last_id = 0
        self._history_lock = threading.Lock()
        self._started = self._stopped = False

    # --------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the extra workers (the heartbeat registers this process's owner first), then the generator,
        trainer and reward threads; the trainer re-queues claims a dead process left (app.recovery)."""
        if self._started:
            return
        for worker in (*self._extra_workers, *self._workers):
            worker.start()
        self._started = True

    def stop(self) -> None:
        """Stop the threads (each finishes its unit of work), joining them; the trainer checkpoints on its way out."""
        if self._stopped:
            return
        self._stopped = True
        for group in (self._workers, self._extra_workers):  # the heartbeat beats until the trainer has stopped
            for worker in group:
                worker.stop()
            for worker in group:
                worker.join(STOP_TIMEOUT_S)
        self.db.close()
        log.info("service stopped at version %d", self.publisher.version)

    # ------------------------------------------------------------------------------------------------ raters
    def login(self, name: str, caller: Caller | None = None) -> RaterView:
        """Get or create the rater. With `--auth` the name is the authenticated user's (the UI passes it); the
        admin flag comes from the caller's identity (`Access`), never from the name."""
        if not isinstance(name, str) or not name.strip():
            raise UserError("please enter a name")
        clean = name.strip()
        if len(clean) > MAX_NAME_CHARS:
            raise UserError(f"a name has at most {MAX_NAME_CHARS} characters")
        caller = caller or Caller()
        self.access.require_user(caller, clean)
        is_admin = self.access.is_admin(caller)
        role = "admin" if is_admin and self.access.auth_on else "rater"
        with self.db.session_factory.begin() as s:
            rater = get_or_create_rater(s, clean, role)
            if rater.role != role:
                rater = set_rater_role(s, rater.id, role)
        return RaterView(rater.id, rater.name, is_admin)

    def is_admin(self, caller: Caller) -> bool:
        return self.access.is_admin(caller)

    def admin_token_login(self) -> bool:
        """True when admins identify with the start-up token (no `--auth`), so the page offers a token box."""
        return not self.access.auth_on

    def signed_in(self, caller: Caller, rater: RaterView | None) -> RaterView:
        """The tab's rater, if this request may act as them (with `--auth`: only the authenticated user)."""
        self.access.require_user(caller, None if rater is None else rater.name)
        if rater is None:
            raise AccessDenied("sign in first")
        return rater

    def next_for(self, rater_id: int) -> NextResult:
        return self._next(rater_id, None)

    def rate(self, rater_id: int, sample_id: int, score: float) -> NextResult:
        """Store a first rating; a different score for a sample this rater already rated (e.g. in another tab) is
        refused with a notice, the same score again is a no-op (a double click)."""
        try:
            with self.db.session_factory.begin() as s:
                record_rating(s, sample_id, rater_id, score, score_range=SCORE_RANGE, replace=False)
        except AlreadyRated as err:
            return self._next(rater_id, str(err))
        self._wake()
        return self._next(rater_id, "Rating saved")

    def skip(self, rater_id: int, sample_id: int) -> NextResult:
        with self.db.session_factory.begin() as s:
            skip_sample(s, rater_id, sample_id)
        self._wake()
        return self._next(rater_id, "Skipped")

    def undo(self, rater_id: int) -> NextResult:
        try:
            with self.db.session_factory.begin() as s:
                undone = undo_last_rating(s, rater_id, lease_seconds=self.settings.lease_seconds)
        except RatingLocked:
            return self._next(rater_id, "Cannot undo: that rating is already in a training batch")
        if undone is None:
            return self._next(rater_id, "Nothing to undo")
        return self._next(rater_id, "Undone", offer=undone.sample_id)

    # -------------------------------------------------------------------------------------- pairwise rating
    def rating_mode(self) -> str:
        """`single` or `pairwise` (docs/pairwise.md)."""
        return self.mode.current()

    def next_pair_for(self, rater_id: int) -> PairResult:
        return self.pairs.next_for(rater_id, self._waiting())

    def answer_pair(self, rater_id: int, pair_id: int, answer: str) -> PairResult:
        """Store the rater's answer (a_better, b_better, tie, both_bad) and refit the prompt's rewards."""
        notice = self.pairs.answer(rater_id, pair_id, answer)
        self._wake()
        return self.pairs.next_for(rater_id, self._waiting(), notice)

    def skip_pair(self, rater_id: int, pair_id: int) -> PairResult:
        notice = self.pairs.skip(rater_id, pair_id)
        self._wake()
        return self.pairs.next_for(rater_id, self._waiting(), notice)

    def undo_pair(self, rater_id: int) -> PairResult:
        return self.pairs.next_for(rater_id, self._waiting(), self.pairs.undo(rater_id))

    def _next(self, rater_id: int, notice: str | None, offer: int | None = None) -> NextResult:
        single = not self.mode.pairwise  # one mode at a time: a sample lease here would end the rater's pair lease
        with self.db.session_factory.begin() as s:
            lease = self.settings.lease_seconds
            sample = offer_sample(s, rater_id, offer, lease_seconds=lease) if offer is not None and single else None
            if sample is None and single:  # only the newest version with samples: the badge never goes back
                newest = self.generator.status.serving
                sample = next_sample_for_rater(s, rater_id, lease_seconds=lease, min_policy_version=newest)
            p = rater_progress(s, rater_id)
        progress = Progress(p.rated, p.skipped, p.can_undo)
        if sample is None:
            return NextResult(None, self._waiting() if single else PAIRWISE_ON, progress, notice)
        settings = sample.generation_settings
        cut_at = int(settings["max_new_tokens"]) if settings.get("cut") and "max_new_tokens" in settings else None
        assignment = Assignment(sample.id, sample.prompt_text, sample.response_text, sample.policy_version, cut_at)
        return NextResult(assignment, None, progress, notice)

    def can_undo(self, rater_id: int) -> bool:
        """Whether the rater's last rating can still be undone: its sample is in no training batch yet."""
        with self.db.read_session_factory.begin() as s:
            return last_rating_undoable(s, rater_id)

    def _waiting(self) -> str:
        if self.generator.fatal is not None or (self._started and not self.generator.alive):
            return f"The generator has stopped ({self.generator.fatal or 'shutting down'}); no new responses."
        g = self.generator.status
        if g.state == "held":
            return (
                f"Nothing for you to rate right now: the model is learning from the {g.in_flight} responses people "
                "just rated; "
                "new ones come with the next version (this page updates itself)"
            )
        return (
            f"Nothing for you to rate right now: model v{g.version} is writing new responses (this page updates itself)"
        )

    def _wake(self) -> None:
        for worker in self._workers:
            worker.wake.set()

    def guidelines(self) -> str:
        return resources.files("app").joinpath("guidelines.md").read_text(encoding="utf-8")

    def score_range(self) -> tuple[float, float]:
        return SCORE_RANGE

    # ------------------------------------------------------------------------------------------------- watch
    def dashboard(self) -> Dashboard:
        return self._dashboard.build()

    def history(self) -> list[HistoryPoint]:
        """One point per PPO step, oldest first (new steps are read incrementally)."""
        with self._history_lock:
            with self.db.read_session_factory.begin() as s:
                new = training_history(s, since_step_id=self._history_last_id)
            for step in new:
                stats = step.stats
                mean = step.score_mean if step.score_mean is not None else stats.get("ppo/mean_scores", math.nan)
                self._history.append(
                    HistoryPoint(
                        step=len(self._history) + 1,
                        version=step.policy_version,
                        mean_score=float(mean),
                        kl=float(stats.get("objective/kl_k3", stats.get("objective/kl", math.nan))),
                        policy_loss=float(stats.get("ppo/loss/policy", math.nan)),
                        value_loss=float(stats.get("ppo/loss/value", math.nan)),
                        time=_time(step.created_at),
                    )
                )
                self._history_last_id = step.id
            return list(self._history)

    def version_scores(self) -> list[VersionScore]:
        """Mean human score of each policy version's samples, oldest version first (versions nobody rated left out)."""
        with self.db.read_session_factory.begin() as s:
            rows = version_scores(s)
        return [VersionScore(r.policy_version, r.mean_score, r.ratings) for r in rows]

    def recent_ratings(self, limit: int = 20) -> list[RatingRow]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise UserError("limit must be a whole number from 1 to 1000")
        with self.db.read_session_factory.begin() as s:
            rows = recent_ratings(s, limit)
        return [
            RatingRow(
                time=_time(r.rating.updated_at),
                rater=r.rating.rater_name,
                source=r.rating.source,
                score=r.rating.score,
                policy_version=r.policy_version,
                prompt=r.prompt_text,
                response=r.response_text,
            )
            for r in rows
        ]

    def compare(self, prompt: str | None = None) -> Comparison:
        """Greedy answers of the first version (the frozen reference) and the current one; may take seconds."""
        text = prompt.strip() if isinstance(prompt, str) and prompt.strip() else self.prompts.first_prompt
        if len(text) > MAX_COMPARE_PROMPT_CHARS:
            raise UserError(f"the prompt is {len(text)} characters long; the limit is {MAX_COMPARE_PROMPT_CHARS}")
        return self.generator.compare(text)

    # ------------------------------------------------------------------------------------------------- admin
    def set_paused(self, caller: Caller, paused: bool) -> None:
        self.access.require_admin(caller)
        if paused:
            self.trainer.paused.set()
        else:
            self.trainer.paused.clear()
        self.trainer.wake.set()
        log.info("training %s by an admin (%s)", "paused" if paused else "resumed", caller.username or "token")

    def requeue_failed(self, caller: Caller) -> int:
        """Admin only: give every batch that failed for good (a data error) another chance; how many."""
        self.access.require_admin(caller)
        requeued: list[int] = []
        with self.db.session_factory.begin() as s:
            for batch in list_batches(s, status=BATCH_FAILED, limit=10_000):
                try:
                    requeued.append(requeue_failed_batch(s, batch.id).id)
                except BatchStateError:  # holds no samples any more: nothing to train
                    continue
        if requeued:
            log.info("an admin requeued failed batches %s", requeued)
            self.trainer.wake.set()
        return len(requeued)

    def reward_choices(self) -> tuple[str, ...]:
        """The reward sources the operator configured; the only ones an admin can switch to."""
        return self.rewards.choices

    def set_reward_source(self, caller: Caller, spec: str) -> None:
        """Ask the reward worker to switch to one of the configured sources (it builds the source in its thread)."""
        self.access.require_admin(caller)
        clean = spec.strip() if isinstance(spec, str) else ""
        self.rewards.request(clean)
        self._wake()
        if self._switches is not None:  # a split deployment: the other processes follow
            self._switches.announce(REWARD_SOURCE, clean, caller.username or "token")

    def set_rating_mode(self, caller: Caller, mode: str) -> None:
        """Admin only: switch between single and pairwise rating (stored ratings and comparisons stay)."""
        self.access.require_admin(caller)
        previous = self.mode.set(mode)
        self._wake()
        if self._switches is not None:
            self._switches.announce(RATING_MODE, mode, caller.username or "token")
        log.info("rating mode %s -> %s by an admin (%s)", previous, mode, caller.username or "token")

    def save_checkpoint(self, caller: Caller) -> str:
        """Admin only; returns the checkpoint's name (`v12`), not its server path."""
        self.access.require_admin(caller)
        return Path(self.trainer.request_checkpoint()).name

    def export(self, caller: Caller, fmt: str) -> str:
        """Admin only: write all ratings (jsonl, parquet) or preference pairs (pairwise, as JSONL) to a file in the
        export folder; returns its path (for the download, which Gradio serves by file name)."""
        self.access.require_admin(caller)
        if fmt not in EXPORT_FORMATS:
            raise UserError(f"export format must be one of {', '.join(EXPORT_FORMATS)}")
        folder = self.settings.export_dir
        folder.mkdir(parents=True, exist_ok=True)
        # a random part: the name is not guessable from the time (it travels in the download URL)
        stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(8)}"
        name = f"pairs-{stamp}.jsonl" if fmt == "pairwise" else f"ratings-{stamp}.{fmt}"
        if fmt == "comparisons":
            name = f"comparisons-{stamp}.jsonl"
        path = Path(folder, name)
        with self.db.read_session_factory.begin() as s:
            if fmt == "jsonl":
                export_jsonl(s, path)
            elif fmt == "parquet":
                export_parquet(s, path)
            elif fmt == "comparisons":
                export_comparisons(s, path)
            else:
                pairs = pairwise_dataset(s, use_auto_scores=self.rewards.use_auto_scores())
                pairs.to_json(str(path), lines=True)
        return str(path.resolve())


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")

"""The Watch tab's status block (`FeedbackService.dashboard`): counts, training state, reward notes, learned model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.views import Dashboard
from storage.dashboard import counts, trained_share
from storage.quarantine import count_quarantined
from storage.samples import count_unrated_unleased, oldest_waiting_rating

if TYPE_CHECKING:
    from app.service import FeedbackService


class DashboardBuilder:
    """Reads the service's parts as they are now (a test or a front-end may swap one, e.g. the trainer) and the
    database; holds nothing of its own."""

    def __init__(self, service: FeedbackService) -> None:
        self._svc = service

    def build(self) -> Dashboard:
        reward = self._svc.rewards.current()
        version = self._svc.publisher.version
        with self._svc.db.read_session_factory.begin() as s:
            c = counts(s, use_auto_scores=reward.auto or self._svc.mode.pairwise)
            share = trained_share(s)
            people_waiting = oldest_waiting_rating(s) is not None  # the trainer's --flush-after-s clock runs
            # counted here, not the generator's figure, which is only refreshed between its batches
            ready = count_unrated_unleased(s, min_policy_version=self._svc.window.floor(version))
            quarantined = count_quarantined(s, reward.source) if reward.auto else 0
        numbers = {
            "prompts": c.prompts,
            "samples": c.samples,
            "unrated": c.unrated,
            "scored": c.scored_not_trained,
            "claimed": c.in_claimed_batches,
            "trained": c.trained,
            "failed": c.failed,
            "stale": c.stale,
            "ratings": c.ratings,
            "human_ratings": c.human_ratings,
            "human_ratings_all": share.total,
            "human_ratings_trained": share.trained,
            "auto_ratings": c.auto_ratings,
            "raters": c.raters,
            "quarantined": quarantined,
        }
        last = self._svc.errors.last()
        return Dashboard(
            version=version,
            training=self._training_state(c.scored_not_trained, c.in_claimed_batches, people_waiting),
            reward_source=reward.spec,
            counts=numbers,
            buffer_ready=ready,
            buffer_target=self._svc.generator.status.target,
            last_step_s=self._svc.trainer.status.last_step_s,
            last_error=str(last) if last is not None else None,
            reward_note=self._reward_note(),
            learned=self._svc.learned.status if self._svc.learned is not None else None,
        )

    def _reward_note(self) -> str | None:
        notes = []
        if (wanted := self._svc.rewards.requested) is not None:
            notes.append(f"switching to {wanted}")
        if (failed := self._svc.rewards.switch_error) is not None:
            notes.append(failed)
        if (stopped := self._svc.reward_worker.status.stopped) is not None:
            notes.append(stopped)
        if (waiting := self._learned_waiting()) is not None:
            notes.append(waiting)
        return "; ".join(notes) or None

    def _learned_waiting(self) -> str | None:
        """Why the learned reward scores nothing yet, when it is the reward source."""
        if (
            not self._svc.rewards.current().learned
            or self._svc.learned is None
            or self._svc.learned.status.version is not None
        ):
            return None
        st = self._svc.learned.status
        return (
            f"the learned reward model scores nothing until {st.needed} samples have human ratings "
            f"({st.have} so far); until then only human scores train"
        )

    def _training_state(self, scored: int, in_batches: int, people_waiting: bool) -> str:
        t = self._svc.trainer.status
        if self._svc.trainer.fatal is not None:
            return f"error: the trainer stopped: {self._svc.trainer.fatal.public}"
        if t.state in ("starting", "stopped"):
            return t.state
        if self._svc.trainer.paused.is_set():
            reason = t.paused_reason
            return "paused" if reason is None else f"paused: {reason}; an admin can resume it"
        if t.state == "training":
            return "running"
        if t.last_error is not None:
            return f"error: {t.last_error} (the batch goes back to training and is retried)"
        missing = self._svc.settings.batch_size - scored
        if missing > 0 and in_batches == 0:
            waiting = f"waiting for {missing} more rating{'s' if missing != 1 else ''}"
            flush = self._svc.settings.flush_after_s
            return f"{waiting} (or trains what it has {flush:g} s after the oldest)" if people_waiting else waiting
        return "running"

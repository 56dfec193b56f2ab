"""Pairwise rating for the service: the pair queue, answers, skip and undo, and the Bradley-Terry refit behind them.

Every answer (and every undo) refits the strengths of its prompt's samples from all of that prompt's comparisons
(app/bradley_terry.py; comparisons only ever link samples of one prompt, so nothing else changes) and writes each
open sample's reward as an automatic rating of source `BT_SOURCE`, in the same transaction as the comparison: a
crash keeps both or neither, and the trainer's ordinary claim trains each sample once on the reward it had then.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.bradley_terry import scores_from_outcomes
from app.rating_mode import RatingMode
from app.settings import SCORE_RANGE, AppSettings
from app.views import PairAssignment, PairResult, Progress
from storage.engine import Database
from storage.errors import AlreadyRated, RatingLocked
from storage.pair_scores import prompt_outcomes, write_derived_scores
from storage.pairs import next_pair_for_rater, pair_progress, record_comparison, skip_pair, undo_last_comparison

BT_SOURCE = "bt@pairwise"
"""The source of Bradley-Terry rewards in the ratings table (model rater `reward:bt@pairwise`)."""
ANSWER_LABELS = {"a_better": "A better", "b_better": "B better", "tie": "Tie", "both_bad": "Both bad"}
MODE_OFF = "Pairwise rating is off: an admin can switch the rating mode to pairwise (the Rate tab takes scores)."


class PairDesk:
    """The pairwise half of the rater API; the service forwards to it."""

    def __init__(self, db: Database, settings: AppSettings, mode: RatingMode) -> None:
        self.db = db
        self.settings = settings
        self.mode = mode

    def next_for(self, rater_id: int, waiting: str, notice: str | None = None) -> PairResult:
        """The rater's current or next pair; ``waiting`` is shown when there is none."""
        with self.db.session_factory.begin() as s:
            pair = None
            if self.mode.pairwise:
                pair = next_pair_for_rater(s, rater_id, lease_seconds=self.settings.lease_seconds)
            p = pair_progress(s, rater_id)
        progress = Progress(p.compared, p.skipped, p.can_undo)
        if pair is None:
            return PairResult(None, waiting if self.mode.pairwise else MODE_OFF, progress, notice)
        view = PairAssignment(
            pair.pair_id, pair.prompt_text, pair.response_a, pair.response_b, pair.version_a, pair.version_b
        )
        return PairResult(view, None, progress, notice)

    def answer(self, rater_id: int, pair_id: int, answer: str) -> str:
        """Store the answer and refit its prompt; returns the notice to show."""
        try:
            with self.db.session_factory.begin() as s:
                record = record_comparison(s, pair_id, rater_id, answer)
                self._refit(s, record.prompt_id)
        except AlreadyRated as err:
            return str(err)
        return f"Saved: {ANSWER_LABELS[answer]}"

    def skip(self, rater_id: int, pair_id: int) -> str:
        with self.db.session_factory.begin() as s:
            skip_pair(s, rater_id, pair_id)
        return "Skipped"

    def undo(self, rater_id: int) -> str:
        try:
            with self.db.session_factory.begin() as s:
                undone = undo_last_comparison(s, rater_id, lease_seconds=self.settings.lease_seconds)
                if undone is not None:
                    self._refit(s, undone.prompt_id)
        except RatingLocked:
            return "Cannot undo: a response of that pair is already in a training batch"
        return "Nothing to undo" if undone is None else "Undone"

    def _refit(self, s: Session, prompt_id: int) -> None:
        outcomes = [(o.sample_a_id, o.sample_b_id, o.answer) for o in prompt_outcomes(s, prompt_id)]
        scores = scores_from_outcomes(outcomes, SCORE_RANGE)
        write_derived_scores(s, BT_SOURCE, prompt_id, scores, score_range=SCORE_RANGE)

"""The learned reward model's line on the Watch tab."""

from __future__ import annotations

from app.ui.learned_text import learned_text
from app.views import LearnedRewardView


def test_the_watch_tab_line_says_what_the_learned_model_needs_and_how_it_agrees() -> None:
    assert "needs 24 human-rated samples (10 so far)" in learned_text(LearnedRewardView(None, 24, 10))
    shown = learned_text(
        LearnedRewardView(
            3,
            24,
            50,
            fit_n=40,
            held_out_n=10,
            spearman=0.812,
            pairwise=0.875,
            scored=7,
            guarded=2,
            checks=5,
            checks_pairwise=0.8,
            checks_mean_abs_diff=0.21,
        )
    )
    for part in ("v3", "fit on 40", "10 held out", "Spearman 0.81", "pairwise 88%", "guarded 2", "by people 5"):
        assert part in shown

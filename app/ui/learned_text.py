"""The learned reward model's line on the Watch tab (numbers and fixed words only: safe in Markdown)."""

from __future__ import annotations

from app.views import LearnedRewardView


def learned_text(v: LearnedRewardView) -> str:
    """Its fit and agreement with held-out human scores, what it scored, what its guard refused, its checks."""
    if v.version is None:
        return f"**Learned reward:** not fit yet: needs {v.needed} human-rated samples ({v.have} so far)"
    parts = [
        f"**Learned reward v{v.version}:** fit on {v.fit_n} human-rated samples; {v.held_out_n} held out: "
        f"Spearman {_num(v.spearman)} · pairwise {_percent(v.pairwise)}",
        f"scores unrated samples: {'yes' if v.scoring else 'no'} ({v.scored} so far)",
        f"guarded {v.guarded}",
    ]
    if v.checks:
        parts.append(
            f"checked by people {v.checks}: pairwise {_percent(v.checks_pairwise)}, "
            f"mean |diff| {_num(v.checks_mean_abs_diff)}"
        )
    return " · ".join(parts)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"

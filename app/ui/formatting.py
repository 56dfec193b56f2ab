"""Pure functions from service views to what the page shows: strings, tables and plot frames.

No Gradio here, so every display rule is testable without a browser. Markdown produced here only ever
interpolates numbers and service-chosen status words; model output and prompts go to Textboxes and
plain-text table cells, never into Markdown or HTML (see docs/ui.md, "XSS").
"""

from __future__ import annotations

import html

import pandas as pd

from app.ui.learned_text import learned_text
from app.views import Comparison, Dashboard, HistoryPoint, Progress, RaterView, RatingRow, VersionScore

QUICK_LABELS = ("Bad", "Poor", "OK", "Good", "Great")
PLOT_METRICS = {
    "mean_score": "Mean score",
    "kl": "KL to reference (k3, never negative)",
    "policy_loss": "Policy loss",
    "value_loss": "Value loss",
}
RECENT_HEADERS = ["time", "rater", "source", "score", "version", "prompt", "response"]
RECENT_WIDTHS: list[str | int] = ["9%", "9%", "8%", "7%", "8%", "22%", "37%"]
MAIN_COUNTS = ("unrated", "scored", "trained")
MORE_COUNTS = ("claimed", "stale", "failed", "quarantined", "samples", "ratings", "raters", "prompts")


def quick_scores(lo: float, hi: float, n: int = len(QUICK_LABELS)) -> list[float]:
    """Evenly spaced quick-score points from ``lo`` to ``hi`` inclusive (keys 1..n)."""
    step = (hi - lo) / (n - 1)
    return [round(lo + i * step, 4) for i in range(n)]


def quick_label(index: int, score: float) -> str:
    """Button text: the key to press, a word, and the score it sends."""
    return f"{index + 1} · {QUICK_LABELS[index]} ({score:+g})"


def plain(text: str) -> str:
    """Escape text meant for a Markdown/HTML slot (names typed by people)."""
    return html.escape(text, quote=True).replace("*", "&#42;").replace("_", "&#95;").replace("`", "&#96;")


def rater_badge(rater: RaterView | None) -> str:
    if rater is None:
        return "Not signed in"
    role = "admin" if rater.is_admin else "rater"
    return f"Rating as **{plain(rater.name)}** · {role}"


def progress_text(progress: Progress) -> str:
    return f"**{progress.rated}** rated · {progress.skipped} skipped"


def response_label(version: int | None, cut_at: int | None) -> str:
    """The response box's label: its version and, for an answer cut at the token limit, a mark saying so."""
    if version is None:
        return "Response"
    cut = f" · … cut at {cut_at} tokens (the answer did not finish)" if cut_at is not None else ""
    return f"Response · model v{version}{cut}"


def version_badge(version: int | None) -> str:
    return "Model version —" if version is None else f"Model version **v{version}**"


def status_text(notice: str | None, waiting: str | None) -> str:
    """The banner above the response: the service's notice ("Rating saved") on its own line, then why there is
    nothing to rate, if so."""
    lines = [plain(notice) if notice else "", f"**{plain(waiting)}**" if waiting else ""]
    return "  \n".join(line for line in lines if line) or "&nbsp;"


def dashboard_text(d: Dashboard) -> str:
    """The status block at the top of the Watch tab."""
    step_s = "—" if d.last_step_s is None else f"{d.last_step_s:.1f} s"
    lines = [
        f"### Model v{d.version} · training: {plain(d.training)}",
        f"Reward source: `{plain(d.reward_source)}` · prefetch buffer {d.buffer_ready}/{d.buffer_target}"
        f" · last PPO step {step_s}",
    ]
    if d.reward_note:
        lines.append(f"**Reward:** {plain(d.reward_note)}")
    if d.learned is not None:
        lines.append(learned_text(d.learned))
    if d.last_error:
        lines.append(f"**Last error:** {plain(d.last_error)}")
    return "\n\n".join(lines)


def counts_text(counts: dict[str, int]) -> str:
    """Sample counts: the lifecycle (unrated -> scored -> trained) in bold, then the rest."""
    main = " · ".join(f"{k} **{counts[k]}**" for k in MAIN_COUNTS if k in counts)
    more = " · ".join(f"{k} {counts[k]}" for k in MORE_COUNTS if k in counts)
    trained = ""
    if "human_ratings_trained" in counts:
        trained = "  \n" + trained_share_text(counts["human_ratings_trained"], counts["human_ratings_all"])
    return f"Samples: {main}{trained}" + (f"  \n<small>{more}</small>" if more else "")


def trained_share_text(trained: int, total: int) -> str:
    """How much of the people's work the model has learned from so far."""
    percent = f"{100 * trained / total:.0f}%" if total else "—"
    return f"**{trained}** of {total} human ratings trained ({percent})"


def axis_values(xs: list[int]) -> list[str]:
    """Whole-number x values (steps, versions) as text categories, right-aligned with spaces.

    A numeric axis over a short range of whole numbers gets fractional ticks ("1 2 2 3 3" with the "d" format);
    categories have exactly one tick per point. They are padded (" 9" before "10") because the plot orders them
    as text and the order has to come from the data itself: Gradio 6 hands a changed plot value to Vega as new
    data only, so neither a ``sort`` list nor a switch to a numeric axis later reaches the chart.
    """
    width = max((len(str(x)) for x in xs), default=0)
    return [str(x).rjust(width) for x in xs]


def history_frame(points: list[HistoryPoint], metric: str) -> pd.DataFrame:
    """One metric per PPO step, for a LinePlot with x=step, y=value."""
    return pd.DataFrame(
        {"step": axis_values([p.step for p in points]), "value": [float(getattr(p, metric)) for p in points]},
        columns=["step", "value"],
    )


def version_frame(scores: list[VersionScore]) -> pd.DataFrame:
    """Mean human score per policy version, for a LinePlot with x=version, y=mean score."""
    return pd.DataFrame(
        {
            "version": axis_values([v.version for v in scores]),
            "mean score": [v.mean_score for v in scores],
            "ratings": [v.ratings for v in scores],
        },
        columns=["version", "mean score", "ratings"],
    )


def steps_caption(points: list[HistoryPoint]) -> str:
    """Under the plots: how many steps, and the latest values (a single point draws no line)."""
    if not points:
        return "No PPO steps yet."
    last = points[-1]
    values = " · ".join(f"{title.lower()} {getattr(last, m):.4g}" for m, title in PLOT_METRICS.items())
    steps = f"{len(points)} PPO step{'' if len(points) == 1 else 's'}"
    return f"{steps} · latest version v{last.version}: {values}"


def recent_rows(rows: list[RatingRow], width: int = 160) -> list[list[str | float | int]]:
    """Table rows; long prompts/responses are cut to ``width`` characters (shown as plain text)."""
    return [
        [
            r.time.split(" ")[-1],
            r.rater,
            r.source,
            round(r.score, 3),
            f"v{r.policy_version}",
            _cut(r.prompt, width),
            _cut(r.response, width),
        ]
        for r in rows
    ]


def comparison_labels(c: Comparison) -> tuple[str, str]:
    return f"First version (v{c.first_version})", f"Current version (v{c.current_version})"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"

"""The Watch tab: live training status, the first-vs-current comparison (open), the mean human score per version,
plots per PPO step, recent ratings; the admin panel (training controls and exports) for admins.

A 2 s timer refreshes the status, plots and table (it only ticks while the browser tab is visible). The step plots
are re-sent only when the number of PPO steps changed, the per-version plot only when its numbers changed.
Compare runs greedy generation, so it has its own concurrency group with limit 1 and never delays rating events.
Everything here needs a signed-in user (checked against the request by ``service.signed_in``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.ui.admin_panel import build_admin_panel
from app.ui.contract import Service
from app.ui.errors import SERVICE_ERRORS, shown
from app.ui.formatting import (
    PLOT_METRICS,
    RECENT_HEADERS,
    RECENT_WIDTHS,
    comparison_labels,
    counts_text,
    dashboard_text,
    history_frame,
    recent_rows,
    steps_caption,
    version_frame,
)
from app.ui.identity import caller_of
from app.views import RaterView, VersionScore

WATCH_EVENTS: dict[str, Any] = {"concurrency_id": "watch", "concurrency_limit": 4, "show_progress": "hidden"}


@dataclass
class WatchTab:
    timer: gr.Timer
    admin: gr.Column
    """The admin panel: visible only to admins."""
    refreshers: list[tuple[Any, list[Any], list[Any]]]
    """(handler, inputs, outputs) for each timer refresh, so the page can also run them right after sign-in."""
    loaders: list[tuple[Any, list[Any], list[Any]]]
    """(handler, inputs, outputs) to run once after sign-in."""


def build_watch_tab(service: Service, rater: gr.State, token: gr.Textbox) -> WatchTab:
    """Lay out the Watch tab inside the current Blocks context and wire its events."""
    status = gr.Markdown("Loading…", elem_id="dash-status")
    counts = gr.Markdown("", elem_id="dash-counts")
    with gr.Accordion("Same prompt: first version vs current version", open=True, elem_id="compare"):
        compare_prompt = gr.Textbox(label="Prompt (empty: a prompt from the dataset)", lines=1)
        compare_btn = gr.Button("Compare (greedy)", elem_id="compare-btn")
        with gr.Row():
            first = gr.Textbox(label="First version", interactive=False, lines=5, elem_id="compare-first")
            current = gr.Textbox(label="Current version", interactive=False, lines=5, elem_id="compare-current")
    admin, load_reward_source = build_admin_panel(service, token)
    by_version = gr.LinePlot(
        x="version",
        y="mean score",
        title="Mean human score per version",
        height=220,
        y_axis_format="~g",
        tooltip="all",
        elem_id="plot-versions",
    )
    seen_versions: gr.State = gr.State([])
    plots: list[gr.LinePlot] = []
    metrics = list(PLOT_METRICS.items())
    for row in (metrics[:2], metrics[2:]):
        with gr.Row():
            plots += [
                gr.LinePlot(
                    x="step",
                    y="value",
                    title=title,
                    height=220,
                    y_axis_format="~g",
                    elem_id=f"plot-{m}",
                )
                for m, title in row
            ]
    steps = gr.Markdown("No PPO steps yet.", elem_id="steps-count")
    seen = gr.State(-1)
    recent = gr.Dataframe(
        headers=RECENT_HEADERS,
        datatype="str",
        label="Recent ratings",
        interactive=False,
        wrap=True,
        max_height=360,
        column_widths=RECENT_WIDTHS,
        elem_id="recent",
    )
    timer = gr.Timer(2.0, active=False)

    def allowed(r: RaterView | None, request: gr.Request) -> bool:
        """Refreshes run on a timer: a request that may not see the dashboard gets nothing (no toast flood)."""
        try:
            service.signed_in(caller_of(request), r)
        except SERVICE_ERRORS:
            return False
        return True

    def on_status(r: RaterView | None, request: gr.Request) -> tuple[Any, ...]:
        if not allowed(r, request):
            return gr.skip(), gr.skip()
        d = service.dashboard()
        return dashboard_text(d), counts_text(d.counts)

    def on_history(r: RaterView | None, seen_steps: int, request: gr.Request) -> tuple[Any, ...]:
        points = service.history() if allowed(r, request) else None
        if points is None or len(points) == seen_steps:
            return tuple(gr.skip() for _ in range(len(plots) + 2))
        frames = [history_frame(points, metric) for metric in PLOT_METRICS]
        return (*frames, steps_caption(points), len(points))

    def on_versions(r: RaterView | None, shown_scores: list[VersionScore], request: gr.Request) -> tuple[Any, ...]:
        scores = service.version_scores() if allowed(r, request) else None
        if scores is None or scores == shown_scores:
            return gr.skip(), gr.skip()
        return version_frame(scores), scores

    def on_recent(r: RaterView | None, request: gr.Request) -> Any:
        return recent_rows(service.recent_ratings(20)) if allowed(r, request) else gr.skip()

    @shown(3)
    def on_compare(r: RaterView | None, prompt: str, request: gr.Request) -> tuple[Any, ...]:
        service.signed_in(caller_of(request), r)
        c = service.compare((prompt or "").strip() or None)
        first_label, current_label = comparison_labels(c)
        return (
            c.prompt,
            gr.Textbox(c.first_response, label=first_label),
            gr.Textbox(c.current_response, label=current_label),
        )

    refreshers: list[tuple[Any, list[Any], list[Any]]] = [
        (on_status, [rater], [status, counts]),
        (on_history, [rater, seen], [*plots, steps, seen]),
        (on_versions, [rater, seen_versions], [by_version, seen_versions]),
        (on_recent, [rater], [recent]),
    ]
    for (fn, inputs, outputs), name in zip(refreshers, ("dashboard", "history", "version_scores", "recent")):
        timer.tick(fn, inputs, outputs, api_name=name, **WATCH_EVENTS)
    compare_btn.click(
        on_compare,
        [rater, compare_prompt],
        [compare_prompt, first, current],
        api_name="compare",
        concurrency_id="compare",
        concurrency_limit=1,  # greedy generation in the generator thread: one at a time anyway
    )
    return WatchTab(timer, admin, refreshers, [load_reward_source])

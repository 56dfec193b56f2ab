"""The Watch tab: live training status, plots per PPO step, first-vs-current comparison, recent ratings, export.

A 2 s timer refreshes the status, plots and table (it only ticks while the browser tab is visible). The plots are
re-sent only when the number of PPO steps changed. Compare runs greedy generation, so it has its own concurrency
group with limit 1 and never delays rating events.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.ui.admin_panel import build_admin_panel
from app.ui.contract import Service
from app.ui.errors import shown
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
)

WATCH_EVENTS: dict[str, Any] = {"concurrency_id": "watch", "concurrency_limit": 4, "show_progress": "hidden"}
EXPORT_FORMATS = {"jsonl": "Ratings as JSONL", "parquet": "Ratings as Parquet", "pairwise": "Pairwise preferences"}


@dataclass
class WatchTab:
    timer: gr.Timer
    admin: gr.Column
    """The admin panel: visible only to admins."""
    refreshers: list[tuple[Any, list[Any], list[Any]]]
    """(handler, inputs, outputs) for each timer refresh, so the page can also run them right after sign-in."""
    loaders: list[tuple[Any, list[Any], list[Any]]]
    """(handler, inputs, outputs) to run once after sign-in."""


def build_watch_tab(service: Service, rater: gr.State) -> WatchTab:
    """Lay out the Watch tab inside the current Blocks context and wire its events."""
    status = gr.Markdown("Loading…", elem_id="dash-status")
    counts = gr.Markdown("", elem_id="dash-counts")
    admin, load_reward_source = build_admin_panel(service, rater)
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
                    x_axis_format="d",
                    y_axis_format="~g",
                    elem_id=f"plot-{m}",
                )
                for m, title in row
            ]
    steps = gr.Markdown("No PPO steps yet.", elem_id="steps-count")
    seen = gr.State(-1)
    with gr.Accordion("Same prompt: first version vs current version", open=False):
        compare_prompt = gr.Textbox(label="Prompt (empty: a prompt from the dataset)", lines=1)
        compare_btn = gr.Button("Compare (greedy)", elem_id="compare-btn")
        with gr.Row():
            first = gr.Textbox(label="First version", interactive=False, lines=5, elem_id="compare-first")
            current = gr.Textbox(label="Current version", interactive=False, lines=5, elem_id="compare-current")
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
    gr.Markdown("**Export from storage**")
    with gr.Row(equal_height=True):
        export_buttons = {fmt: gr.Button(f"⬇ {label}", size="sm") for fmt, label in EXPORT_FORMATS.items()}
    export_file = gr.File(label="Download", interactive=False, visible=False, elem_id="export-file")
    timer = gr.Timer(2.0, active=False)

    def on_status() -> tuple[str, str]:
        d = service.dashboard()
        return dashboard_text(d), counts_text(d.counts)

    def on_history(seen_steps: int) -> tuple[Any, ...]:
        points = service.history()
        if len(points) == seen_steps:
            return tuple(gr.skip() for _ in range(len(plots) + 2))
        frames = [history_frame(points, metric) for metric in PLOT_METRICS]
        return (
            *frames,
            steps_caption(points),
            len(points),
        )

    def on_recent() -> list[list[Any]]:
        return recent_rows(service.recent_ratings(20))

    @shown(3)
    def on_compare(prompt: str) -> tuple[Any, ...]:
        c = service.compare(prompt.strip() or None)
        first_label, current_label = comparison_labels(c)
        return (
            c.prompt,
            gr.Textbox(c.first_response, label=first_label),
            gr.Textbox(c.current_response, label=current_label),
        )

    @shown(1)
    def on_export(fmt: str) -> gr.File:
        return gr.File(value=service.export(fmt), visible=True)

    refreshers: list[tuple[Any, list[Any], list[Any]]] = [
        (on_status, [], [status, counts]),
        (on_history, [seen], [*plots, steps, seen]),
        (on_recent, [], [recent]),
    ]
    for (fn, inputs, outputs), name in zip(refreshers, ("dashboard", "history", "recent")):
        timer.tick(fn, inputs, outputs, api_name=name, **WATCH_EVENTS)
    compare_btn.click(
        on_compare, [compare_prompt], [compare_prompt, first, current], api_name="compare", concurrency_id="compare"
    )
    for fmt, button in export_buttons.items():
        button.click(
            functools.partial(on_export, fmt), None, export_file, api_name=f"export_{fmt}", concurrency_id="export"
        )
    return WatchTab(timer, admin, refreshers, [load_reward_source])

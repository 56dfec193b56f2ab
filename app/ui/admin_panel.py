"""Admin-only controls: start/pause training, the reward source, a checkpoint, exports.

The panel is shown to admins only, and every handler asks the service, which checks the request's identity (the
authenticated user with ``--auth``, else the admin token the browser sends) and raises ``AccessDenied`` for anyone
else: a rater or an anonymous client calling the API directly sees "Refused: ..." and nothing changes. The reward
source is chosen among the sources the operator named on the command line; nothing typed in a browser selects code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from app.ui.contract import Service
from app.ui.errors import error_text, shown
from app.ui.formatting import plain
from app.ui.identity import caller_of

ADMIN_EVENTS: dict[str, Any] = {"concurrency_id": "admin", "concurrency_limit": 2}
EXPORT_FORMATS = {
    "jsonl": "Ratings as JSONL",
    "parquet": "Ratings as Parquet",
    "pairwise": "Pairwise preferences",
    "comparisons": "Comparisons (TRL prompt/chosen/rejected)",
}


def refused(e: Exception, where: str) -> str:
    text = error_text(e, where).removeprefix("Refused: ")
    gr.Warning(text)
    return f"**Refused.** {plain(text)}"


Loader = tuple[Callable[..., Any], list[Any], list[Any]]
"""(handler, inputs, outputs) the page runs once after sign-in."""


def build_admin_panel(service: Service, token: gr.Textbox) -> tuple[gr.Column, Loader]:
    """Lay out the admin panel (initially hidden) inside the current Blocks context; ``token`` is the admin token
    box of the sign-in panel (empty with ``--auth``). Returns the panel and a loader for the reward source box."""
    choices = list(service.reward_choices())
    with gr.Column(visible=False, elem_id="admin-panel") as panel:
        gr.Markdown("#### Admin · training controls")
        with gr.Row(equal_height=True):
            start = gr.Button("▶ Start training", variant="primary", elem_id="start-btn")
            pause = gr.Button("Pause training", variant="stop", elem_id="pause-btn")
            save = gr.Button("Save checkpoint", elem_id="save-btn")
            requeue = gr.Button("Retry failed batches", elem_id="requeue-btn")
        with gr.Row():
            source = gr.Dropdown(
                choices, value=choices[0], label="Reward source", info="the sources set with --reward-choices", scale=4
            )
            apply = gr.Button("Apply reward source", elem_id="apply-reward-btn", scale=1)
        with gr.Row():
            mode = gr.Radio(["single", "pairwise"], value=service.rating_mode(), label="Rating mode", scale=4)
            apply_mode = gr.Button("Apply rating mode", elem_id="apply-mode-btn", scale=1)
        message = gr.Markdown("", elem_id="admin-message")
        gr.Markdown("**Export from storage** (every rating, with rater names)")
        with gr.Row(equal_height=True):
            export_buttons = {fmt: gr.Button(f"⬇ {label}", size="sm") for fmt, label in EXPORT_FORMATS.items()}
        export_file = gr.File(label="Download", interactive=False, visible=False, elem_id="export-file")

    def on_paused(paused: bool, token: str, request: gr.Request) -> str:
        try:
            service.set_paused(caller_of(request, token), paused)
            return "Training paused." if paused else "Training running."
        except Exception as e:
            return refused(e, "pause" if paused else "resume")

    def on_start(token: str, request: gr.Request) -> str:
        return on_paused(False, token, request)

    def on_pause(token: str, request: gr.Request) -> str:
        return on_paused(True, token, request)

    def on_reward(token: str, spec: str, request: gr.Request) -> str:
        try:
            service.set_reward_source(caller_of(request, token), spec)
            return f"Switching the reward source to **{plain(spec)}** (the Watch status shows when it is in use)."
        except Exception as e:
            return refused(e, "set_reward_source")

    def on_mode(token: str, wanted: str, request: gr.Request) -> str:
        try:
            service.set_rating_mode(caller_of(request, token), wanted)
            return f"Rating mode: **{plain(wanted)}** (raters find pairs on the Compare tab)."
        except Exception as e:
            return refused(e, "set_rating_mode")

    def on_save(token: str, request: gr.Request) -> str:
        try:
            return f"Checkpoint **{plain(service.save_checkpoint(caller_of(request, token)))}** saved."
        except Exception as e:
            return refused(e, "save_checkpoint")

    def on_requeue(token: str, request: gr.Request) -> str:
        try:
            n = service.requeue_failed(caller_of(request, token))
            return f"{n} failed batch{'' if n == 1 else 'es'} back in the training queue."
        except Exception as e:
            return refused(e, "requeue_failed")

    @shown(1)
    def on_export(fmt: str, token: str, request: gr.Request) -> gr.File:
        return gr.File(value=service.export(caller_of(request, token), fmt), visible=True)

    def on_load() -> str:
        return service.dashboard().reward_source

    start.click(on_start, [token], message, api_name="start_training", **ADMIN_EVENTS)
    pause.click(on_pause, [token], message, api_name="pause_training", **ADMIN_EVENTS)
    apply.click(on_reward, [token, source], message, api_name="set_reward_source", **ADMIN_EVENTS)
    apply_mode.click(on_mode, [token, mode], message, api_name="set_rating_mode", **ADMIN_EVENTS)
    save.click(on_save, [token], message, api_name="save_checkpoint", **ADMIN_EVENTS)
    requeue.click(on_requeue, [token], message, api_name="requeue_failed", **ADMIN_EVENTS)
    for fmt, button in export_buttons.items():
        button.click(
            _bound(on_export, fmt),
            [token],
            export_file,
            api_name=f"export_{fmt}",
            concurrency_id="export",
            concurrency_limit=1,
        )
    return panel, (on_load, [], [source])


def _bound(fn: Callable[..., Any], fmt: str) -> Callable[..., Any]:
    """``fn`` with its export format fixed: a plain function (no ``__wrapped__``), so Gradio reads this signature
    and passes the ``gr.Request``."""

    def handler(token: str, request: gr.Request) -> Any:
        return fn(fmt, token, request)

    handler.__name__ = f"export_{fmt}"
    return handler

"""Admin-only training controls: start/pause, reward source, save a checkpoint.

The panel is hidden for raters; the service enforces the same rule by raising ``PermissionError``, which the
handlers show as a message (so a rater calling the API directly sees "Admins only: ...", and nothing changes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from app.ui.contract import Service
from app.ui.errors import SERVICE_ERRORS, error_text, need
from app.ui.formatting import plain
from app.views import RaterView

SIGN_IN = "Sign in first."
REWARD_CHOICES = ["human", "vader", "length:40"]
ADMIN_EVENTS: dict[str, Any] = {"concurrency_id": "admin", "concurrency_limit": 2}


def refused(e: Exception) -> str:
    gr.Warning(error_text(e))
    return f"**Refused.** {plain(error_text(e))}"


Loader = tuple[Callable[..., Any], list[Any], list[Any]]
"""(handler, inputs, outputs) the page runs once after sign-in."""


def build_admin_panel(service: Service, rater: gr.State) -> tuple[gr.Column, Loader]:
    """Lay out the admin panel (initially hidden) inside the current Blocks context.

    Returns the panel (the page shows it to admins) and a loader that puts the current reward source in the box.
    """
    with gr.Column(visible=False, elem_id="admin-panel") as panel:
        gr.Markdown("#### Admin · training controls")
        with gr.Row(equal_height=True):
            start = gr.Button("▶ Start training", variant="primary", elem_id="start-btn")
            pause = gr.Button("Pause training", variant="stop", elem_id="pause-btn")
            save = gr.Button("Save checkpoint", elem_id="save-btn")
        with gr.Row():
            source = gr.Dropdown(
                REWARD_CHOICES,
                value="human",
                allow_custom_value=True,
                label="Reward source",
                info="human · vader · length[:N] · a classifier folder · module:function",
                scale=4,
            )
            apply = gr.Button("Apply reward source", elem_id="apply-reward-btn", scale=1)
        message = gr.Markdown("", elem_id="admin-message")

    def on_paused(r: RaterView | None, paused: bool) -> str:
        try:
            service.set_paused(need(r, SIGN_IN).id, paused)
            return "Training paused." if paused else "Training running."
        except SERVICE_ERRORS as e:
            return refused(e)

    def on_reward(r: RaterView | None, spec: str) -> str:
        try:
            service.set_reward_source(need(r, SIGN_IN).id, (spec or "").strip())
            return f"Reward source set to **{plain(spec.strip())}**."
        except SERVICE_ERRORS as e:
            return refused(e)

    def on_save(r: RaterView | None) -> str:
        try:
            return f"Checkpoint saved to **{plain(service.save_checkpoint(need(r, SIGN_IN).id))}**."
        except SERVICE_ERRORS as e:
            return refused(e)

    def on_load() -> str:
        return service.dashboard().reward_source

    start.click(lambda r: on_paused(r, False), [rater], message, api_name="start_training", **ADMIN_EVENTS)
    pause.click(lambda r: on_paused(r, True), [rater], message, api_name="pause_training", **ADMIN_EVENTS)
    apply.click(on_reward, [rater, source], message, api_name="set_reward_source", **ADMIN_EVENTS)
    save.click(on_save, [rater], message, api_name="save_checkpoint", **ADMIN_EVENTS)
    return panel, (on_load, [], [source])

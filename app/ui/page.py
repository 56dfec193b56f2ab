"""The whole page: header, sign-in, the Rate and Watch tabs, page JS/CSS and the queue settings.

Nothing here is module state: ``build_ui(service)`` builds every component, handler and closure afresh, and a
rater's identity lives in the database (``service.login``). ``gr.State`` only caches the signed-in ``RaterView`` for
this browser tab; every handler re-checks it against the request (``service.signed_in``). The name is kept in the
browser's localStorage (``gr.BrowserState``) so a refresh signs the rater straight back in. When the app is launched
with ``auth=``, the login name (``request.username``) is used and the name box is hidden. Without it, the admin
token (from the admin link printed at start-up) is kept in localStorage too and sent with every admin request.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import gradio as gr

from app.ui.compare_tab import CompareTab, build_compare_tab
from app.ui.contract import Service
from app.ui.errors import need, shown
from app.ui.formatting import rater_badge
from app.ui.identity import ADMIN_TOKEN_KEY, FILL_ADMIN_TOKEN, READ_ADMIN_LINK, caller_of
from app.ui.rate_tab import RATE_EVENTS, RateTab, build_rate_tab
from app.ui.watch_tab import WATCH_EVENTS, WatchTab, build_watch_tab
from app.views import RaterView

TITLE = "RLHF Live"
SUBTITLE = "Score the model's answers; every full batch of ratings trains it one PPO step."
NAME_KEY = "rlhf-live-rater-name"


def page_js() -> str:
    """The load-time script (keyboard shortcuts) with the page CSS inlined into it."""
    static = resources.files("app.ui") / "static"
    css = (static / "style.css").read_text(encoding="utf-8")
    return (static / "shortcuts.js").read_text(encoding="utf-8").replace("__CSS__", json.dumps(css))


def build_ui(service: Service) -> gr.Blocks:
    """Build the rating app's Gradio page around ``service`` (the only object its handlers call)."""
    with gr.Blocks(title=TITLE) as demo:
        rater = gr.State(None)
        saved_name = gr.BrowserState("", storage_key=NAME_KEY)
        saved_token = gr.BrowserState("", storage_key=ADMIN_TOKEN_KEY)
        with gr.Row(elem_id="app-header", equal_height=True):
            gr.Markdown(f"# {TITLE}\n{SUBTITLE}", elem_id="app-title", scale=3)
            badge = gr.Markdown(rater_badge(None), elem_id="rater-badge")
            switch = gr.Button("Switch rater", size="sm", visible=False, elem_id="switch-btn", scale=0, min_width=120)
        with gr.Column(elem_id="login-panel") as login_panel:
            name = gr.Textbox(label="Your name", placeholder="e.g. alice", max_lines=1, elem_id="name-box")
            login = gr.Button("Start rating", variant="primary", elem_id="login-btn")
            with gr.Accordion("Admin?", open=False, visible=service.admin_token_login(), elem_id="token-box"):
                token = gr.Textbox(
                    label="Admin token (from the admin link printed when the app started)",
                    type="password",
                    max_lines=1,
                    elem_id="admin-token",
                )
        with gr.Column(visible=False, elem_id="main") as main, gr.Tabs() as tabs:
            with gr.Tab("Rate", id="rate"):
                rate = build_rate_tab(service, rater)
            with gr.Tab("Compare", id="compare", elem_id="compare-tab"):
                compare = build_compare_tab(service, rater)
            with gr.Tab("Watch", id="watch"):
                watch = build_watch_tab(service, rater, token)
        signed_in = [rater, badge, login_panel, main, watch.admin, switch, saved_name, watch.timer]
        after = functools.partial(_then_refresh, rate=rate, watch=watch, rater=rater)
        after = functools.partial(_then_compare, after=after, service=service, compare=compare, tabs=tabs, rater=rater)
        on_login, on_load, on_switch = _sign_in_handlers(service, len(signed_in))
        # The admin token never comes back from the server (a stream joined with this tab's session hash would
        # read it): the browser alone copies it between the URL, the box and localStorage.
        for trigger in (login.click, name.submit):
            trigger(None, [token], [saved_token], js="(t) => t")
        after(login.click(on_login, [name, token], signed_in, api_name="login", **RATE_EVENTS))
        after(name.submit(on_login, [name, token], signed_in, api_visibility="private", **RATE_EVENTS))
        demo.load(None, [saved_token], [token, saved_token], js=FILL_ADMIN_TOKEN)
        after(demo.load(on_load, [saved_name, saved_token], signed_in, js=READ_ADMIN_LINK, api_visibility="private"))
        demo.load(None, js=page_js())
        switch.click(on_switch, None, signed_in, api_visibility="private")
    demo.queue(default_concurrency_limit=8)
    return demo


def _sign_in_handlers(service: Service, n: int) -> tuple[Callable[..., tuple[Any, ...]], ...]:
    """Sign in by typed name (or the auth login), restore a saved name on page load, and switch rater."""

    @shown(n)
    def on_login(typed: str, token: str, request: gr.Request) -> tuple[Any, ...]:
        caller = caller_of(request, token)
        typed = typed if isinstance(typed, str) else ""
        r = service.login(caller.username or need(typed.strip() or None, "Enter your name to start rating."), caller)
        return _signed_in(r, auth=caller.username is not None)

    def on_load(saved: str, token: str, request: gr.Request) -> tuple[Any, ...]:
        if not (request.username or saved):  # nobody to sign in yet
            return tuple(gr.skip() for _ in range(n))
        return on_login(saved, token, request)

    def on_switch() -> tuple[Any, ...]:
        hidden = gr.Column(visible=False)
        return (
            None,
            rater_badge(None),
            gr.Column(visible=True),
            hidden,
            hidden,
            gr.Button(visible=False),
            "",
            gr.Timer(active=False),
        )

    return on_login, on_load, on_switch


def _signed_in(r: RaterView, auth: bool) -> tuple[Any, ...]:
    """Outputs after sign-in, in the order of ``signed_in``: state, badge, panels, switch button, saved name, timer."""
    return (
        r,
        rater_badge(r),
        gr.Column(visible=False),
        gr.Column(visible=True),
        gr.Column(visible=r.is_admin),
        gr.Button(visible=not auth),
        r.name,
        gr.Timer(active=True),
    )


def _then_compare(
    chain: Any, after: Callable[[Any], None], service: Service, compare: CompareTab, tabs: gr.Tabs, rater: gr.State
) -> None:
    """After sign-in: open the tab of the rating mode in force and show the rater's pair, then the rest."""
    assert compare.load_next is not None

    def open_tab() -> gr.Tabs:
        return gr.Tabs(selected="compare" if service.rating_mode() == "pairwise" else "rate")

    after(chain)
    chain.then(open_tab, None, tabs, api_visibility="private", **RATE_EVENTS)
    chain.then(compare.load_next, [rater], compare.outputs, api_visibility="private", **RATE_EVENTS)


def _then_refresh(chain: Any, rate: RateTab, watch: WatchTab, rater: gr.State) -> None:
    """After sign-in: show the rater's sample, then fill the Watch tab without waiting for its first tick."""
    assert rate.load_next is not None
    chain.then(rate.load_next, [rater], rate.outputs, api_visibility="private", **RATE_EVENTS)
    for fn, inputs, outputs in [*watch.refreshers, *watch.loaders]:
        chain.then(fn, inputs, outputs, api_visibility="private", **WATCH_EVENTS)

"""The Rate tab: one prompt and response at a time, quick scores, an exact slider, skip, undo, progress, guidelines.

Every rating event shares the ``rate`` concurrency group with a limit above 1, so a score click never queues behind
another rater's click, a dashboard refresh, generation or a PPO step (the service's ``rate()`` never touches torch).
When the prefetch buffer is empty the page says so and a 1 s timer polls ``next_for`` until a response is ready.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.ui.contract import Service
from app.ui.errors import need, shown
from app.ui.formatting import progress_text, quick_label, quick_scores, response_label, status_text, version_badge
from app.ui.identity import caller_of
from app.views import NextResult, RaterView

SIGN_IN = "Sign in with your name first."
NOTHING = "Nothing to rate yet: wait for the next response."
UNDO_POLL_S = 2.0
RATE_EVENTS: dict[str, Any] = {"concurrency_id": "rate", "concurrency_limit": 16, "show_progress": "hidden"}
KEY_HINT = (
    '<div class="key-hint">Keyboard: <kbd>1</kbd>–<kbd>5</kbd> quick score · <kbd>Enter</kbd> submit slider · '
    "<kbd>s</kbd> skip · <kbd>u</kbd> undo · <kbd>g</kbd> guidelines</div>"
)


@dataclass
class RateTab:
    """The components a NextResult is shown in, in the order ``show`` returns them."""

    sample: gr.State
    prompt: gr.Textbox
    response: gr.Textbox
    version: gr.Markdown
    status: gr.Markdown
    progress: gr.Markdown
    undo: gr.Button
    poll: gr.Timer
    slider: gr.Slider
    controls: list[gr.Button]
    """The score buttons, submit and skip: usable only while a response is shown."""
    load_next: Callable[..., tuple[Any, ...]] | None = None
    """Shows the rater's current or next sample; the page chains it after sign-in."""
    undo_poll: gr.Timer | None = None
    """Keeps Undo's state with the claim: it greys out once the trainer takes the last rating's sample."""

    @property
    def outputs(self) -> list[Any]:
        shown = [self.sample, self.prompt, self.response, self.version, self.status, self.progress]
        polls = [] if self.undo_poll is None else [self.undo_poll]
        return [*shown, self.undo, self.poll, self.slider, *self.controls, *polls]

    def show(self, r: NextResult, middle: float, shown_id: int | None = None) -> tuple[Any, ...]:
        """Every new response starts with the slider in the middle (Enter never resends the last score) and
        the score buttons disabled while there is nothing to rate. The response already on screen (`shown_id`:
        a poll that was in flight when it appeared shows it again) keeps the score the rater is setting."""
        a = r.assignment
        same = a is not None and a.sample_id == shown_id
        label = response_label(None, None) if a is None else response_label(a.policy_version, a.cut_at)
        return (
            None if a is None else a.sample_id,
            "" if a is None else a.prompt,
            gr.Textbox(value="" if a is None else a.response, label=label, placeholder=r.waiting or ""),
            version_badge(None if a is None else a.policy_version),
            status_text(r.notice, r.waiting),
            progress_text(r.progress),
            gr.Button(interactive=r.progress.can_undo),
            gr.Timer(active=a is None),
            gr.skip() if same else middle,
            *(gr.Button(interactive=a is not None) for _ in self.controls),
            *([] if self.undo_poll is None else [gr.Timer(active=True)]),  # signed in: keep Undo's state current
        )


def build_rate_tab(service: Service, rater: gr.State) -> RateTab:
    """Lay out the Rate tab inside the current Blocks context and wire its events."""
    lo, hi = service.score_range()
    with gr.Row(equal_height=True):
        version = gr.Markdown(version_badge(None), elem_id="version-badge")
        progress = gr.Markdown("", elem_id="progress")
    status = gr.Markdown("&nbsp;", elem_id="status-line")
    # Textboxes show model output as text in a <textarea>: markup is displayed, never parsed or executed.
    prompt = gr.Textbox(label="Prompt", interactive=False, lines=1, max_lines=8, elem_id="prompt")
    response = gr.Textbox(label="Response", interactive=False, lines=6, max_lines=30, elem_id="response")
    with gr.Row(elem_id="quick-row"):
        quick = [
            gr.Button(quick_label(i, s), elem_id=f"q{i + 1}", min_width=80) for i, s in enumerate(quick_scores(lo, hi))
        ]
    with gr.Row(equal_height=True):
        slider = gr.Slider(
            lo, hi, value=(lo + hi) / 2, step=(hi - lo) / 100, label="Exact score", scale=4, elem_id="exact-score"
        )
        submit = gr.Button("Submit score", variant="primary", elem_id="submit-btn", scale=1)
    with gr.Row():
        skip = gr.Button("Skip (s)", elem_id="skip-btn", variant="secondary")
        undo = gr.Button("Undo my last rating (u)", elem_id="undo-btn", interactive=False)
    gr.HTML(KEY_HINT)
    with gr.Accordion("Rating guidelines (g)", open=False, elem_id="guidelines"):
        gr.Markdown(service.guidelines())
    controls = [*quick, submit, skip]
    poll = gr.Timer(1.0, active=False)
    undo_poll = gr.Timer(UNDO_POLL_S, active=False)
    shown = (gr.State(None), prompt, response, version, status, progress, undo, poll, slider, controls)
    tab = RateTab(*shown, undo_poll=undo_poll)
    tab.load_next = _wire(service, tab, rater, quick_scores(lo, hi), quick, slider, submit, skip, (lo + hi) / 2)
    return tab


def _wire(
    service: Service,
    tab: RateTab,
    rater: gr.State,
    scores: list[float],
    quick: list[gr.Button],
    slider: gr.Slider,
    submit: gr.Button,
    skip: gr.Button,
    middle: float,
) -> Callable[..., tuple[Any, ...]]:
    """Wire the rating events; returns the "show my next sample" handler for the page to chain after sign-in."""
    n = len(tab.outputs)
    show = functools.partial(tab.show, middle=middle)

    def rater_of(r: RaterView | None, request: gr.Request) -> int:
        """The signed-in rater this request may act as (with --auth: the logged-in user only)."""
        return service.signed_in(caller_of(request), need(r, SIGN_IN)).id

    def rate(r: RaterView | None, sample_id: int | None, score: float, request: gr.Request) -> tuple[Any, ...]:
        return show(service.rate(rater_of(r, request), need(sample_id, NOTHING), float(score)))

    @shown(n)
    def on_rate(r: RaterView | None, sample_id: int | None, score: float, request: gr.Request) -> tuple[Any, ...]:
        return rate(r, sample_id, score, request)

    def quick_rate(score: float) -> Callable[..., tuple[Any, ...]]:
        @shown(n)
        def on_quick(r: RaterView | None, sample_id: int | None, request: gr.Request) -> tuple[Any, ...]:
            return rate(r, sample_id, score, request)

        return on_quick

    @shown(n)
    def on_skip(r: RaterView | None, sample_id: int | None, request: gr.Request) -> tuple[Any, ...]:
        return show(service.skip(rater_of(r, request), need(sample_id, NOTHING)))

    @shown(n)
    def on_undo(r: RaterView | None, request: gr.Request) -> tuple[Any, ...]:
        return show(service.undo(rater_of(r, request)))

    @shown(n)
    def on_next(r: RaterView | None, request: gr.Request, sample_id: int | None = None) -> tuple[Any, ...]:
        if r is None:
            return tuple(gr.skip() for _ in range(n))
        return show(service.next_for(rater_of(r, request)), shown_id=sample_id)

    def on_poll(r: RaterView | None, sample_id: int | None, request: gr.Request) -> tuple[Any, ...]:
        return on_next(r, request, sample_id)

    state = [rater, tab.sample]
    submit.click(on_rate, [*state, slider], tab.outputs, api_name="rate", **RATE_EVENTS)
    for button, score in zip(quick, scores):
        button.click(quick_rate(score), state, tab.outputs, api_visibility="private", **RATE_EVENTS)
    skip.click(on_skip, state, tab.outputs, api_name="skip", **RATE_EVENTS)
    tab.undo.click(on_undo, [rater], tab.outputs, api_name="undo", **RATE_EVENTS)
    tab.poll.tick(on_poll, state, tab.outputs, api_name="next", **RATE_EVENTS)

    def on_undo_state(r: RaterView | None, request: gr.Request) -> Any:
        if r is None:
            return gr.skip()
        return gr.Button(interactive=service.can_undo(rater_of(r, request)))

    if tab.undo_poll is not None:
        tab.undo_poll.tick(on_undo_state, [rater], [tab.undo], api_visibility="private", **RATE_EVENTS)
    return on_next

"""The Compare tab (pairwise mode): two responses to one prompt side by side, and four answers.

A better / B better / Tie / Both bad (keys 1-4), skip (s) and undo (u), as on the Rate tab; the keys act on whichever
tab is showing (static/shortcuts.js clicks the visible button). The events share the Rate tab's ``rate``
concurrency group: an answer is a short database transaction and the Bradley-Terry refit of one prompt, never torch.
In single mode the tab says that pairwise rating is off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.ui.contract import Service
from app.ui.errors import need, shown
from app.ui.formatting import status_text
from app.ui.identity import caller_of
from app.ui.rate_tab import RATE_EVENTS, SIGN_IN
from app.views import PairResult, RaterView

NOTHING = "Nothing to compare yet: wait for the next pair."
ANSWERS = {"a_better": "A better (1)", "b_better": "B better (2)", "tie": "Tie (3)", "both_bad": "Both bad (4)"}
KEY_HINT = (
    '<div class="key-hint">Keyboard: <kbd>1</kbd> A better · <kbd>2</kbd> B better · <kbd>3</kbd> tie · '
    "<kbd>4</kbd> both bad · <kbd>s</kbd> skip · <kbd>u</kbd> undo</div>"
)


@dataclass
class CompareTab:
    pair: gr.State
    prompt: gr.Textbox
    response_a: gr.Textbox
    response_b: gr.Textbox
    status: gr.Markdown
    progress: gr.Markdown
    undo: gr.Button
    poll: gr.Timer
    controls: list[gr.Button]
    """The four answers and skip: usable only while a pair is shown."""
    load_next: Callable[..., tuple[Any, ...]] | None = None

    @property
    def outputs(self) -> list[Any]:
        return [self.pair, self.prompt, self.response_a, self.response_b, self.status, self.progress, self.undo,
                self.poll, *self.controls]  # fmt: skip

    def show(self, r: PairResult) -> tuple[Any, ...]:
        a = r.assignment
        label_a = "Response A" if a is None else f"Response A · model v{a.version_a}"
        label_b = "Response B" if a is None else f"Response B · model v{a.version_b}"
        return (
            None if a is None else a.pair_id,
            "" if a is None else a.prompt,
            gr.Textbox(value="" if a is None else a.response_a, label=label_a),
            gr.Textbox(value="" if a is None else a.response_b, label=label_b),
            status_text(r.notice, r.waiting),
            f"**{r.progress.rated}** compared · {r.progress.skipped} skipped",
            gr.Button(interactive=r.progress.can_undo),
            gr.Timer(active=a is None),
            *(gr.Button(interactive=a is not None) for _ in self.controls),
        )


def build_compare_tab(service: Service, rater: gr.State) -> CompareTab:
    """Lay out the Compare tab inside the current Blocks context and wire its events."""
    status = gr.Markdown("&nbsp;", elem_id="cmp-status")
    progress = gr.Markdown("", elem_id="cmp-progress")
    # Textboxes show model output as text in a <textarea>: markup is displayed, never parsed or executed.
    prompt = gr.Textbox(label="Prompt", interactive=False, lines=1, max_lines=8, elem_id="cmp-prompt")
    with gr.Row(equal_height=True):
        response_a = gr.Textbox(label="Response A", interactive=False, lines=8, max_lines=30, elem_id="cmp-a")
        response_b = gr.Textbox(label="Response B", interactive=False, lines=8, max_lines=30, elem_id="cmp-b")
    with gr.Row():
        answers = {
            k: gr.Button(label, elem_id=f"cmp-{i + 1}", min_width=80) for i, (k, label) in enumerate(ANSWERS.items())
        }
    with gr.Row():
        skip = gr.Button("Skip (s)", elem_id="cmp-skip", variant="secondary")
        undo = gr.Button("Undo my last answer (u)", elem_id="cmp-undo", interactive=False)
    gr.HTML(KEY_HINT)
    poll = gr.Timer(1.0, active=False)
    tab = CompareTab(gr.State(None), prompt, response_a, response_b, status, progress, undo, poll,
                     [*answers.values(), skip])  # fmt: skip
    tab.load_next = _wire(service, tab, rater, answers, skip)
    return tab


def _wire(
    service: Service, tab: CompareTab, rater: gr.State, answers: dict[str, gr.Button], skip: gr.Button
) -> Callable[..., tuple[Any, ...]]:
    n = len(tab.outputs)

    def rater_of(r: RaterView | None, request: gr.Request) -> int:
        return service.signed_in(caller_of(request), need(r, SIGN_IN)).id

    def answer_with(answer: str) -> Callable[..., tuple[Any, ...]]:
        @shown(n)
        def on_answer(r: RaterView | None, pair_id: int | None, request: gr.Request) -> tuple[Any, ...]:
            return tab.show(service.answer_pair(rater_of(r, request), need(pair_id, NOTHING), answer))

        on_answer.__name__ = f"answer_{answer}"
        return on_answer

    @shown(n)
    def on_skip(r: RaterView | None, pair_id: int | None, request: gr.Request) -> tuple[Any, ...]:
        return tab.show(service.skip_pair(rater_of(r, request), need(pair_id, NOTHING)))

    @shown(n)
    def on_undo(r: RaterView | None, request: gr.Request) -> tuple[Any, ...]:
        return tab.show(service.undo_pair(rater_of(r, request)))

    @shown(n)
    def on_next(r: RaterView | None, request: gr.Request) -> tuple[Any, ...]:
        if r is None:
            return tuple(gr.skip() for _ in range(n))
        return tab.show(service.next_pair_for(rater_of(r, request)))

    state = [rater, tab.pair]
    for answer, button in answers.items():
        button.click(answer_with(answer), state, tab.outputs, api_name=f"answer_{answer}", **RATE_EVENTS)
    skip.click(on_skip, state, tab.outputs, api_name="skip_pair", **RATE_EVENTS)
    tab.undo.click(on_undo, [rater], tab.outputs, api_name="undo_pair", **RATE_EVENTS)
    tab.poll.tick(on_next, [rater], tab.outputs, api_name="next_pair", **RATE_EVENTS)
    return on_next

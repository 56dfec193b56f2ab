"""The real page in headless Chromium (Playwright + Debian's /usr/bin/chromium) against the launched app.

Rates a whole batch by clicking and by keyboard, sees the version change and the plot gain a point, checks that
model output containing markup is shown as text (no dialog, no injected element), and saves screenshots under
artifacts/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect
from transformers import AutoTokenizer

from app.access import Caller
from storage.engine import open_database
from storage.prompts import prompts_for_generation
from storage.records import NewSample
from storage.samples import add_samples
from tests.ui.live_app import ADMIN_TOKEN, LiveApp

pytestmark = pytest.mark.browser
PAYLOAD = (
    "Sure! <script>window.__xss = 1; alert('script ran')</script>"
    "<img src=x onerror=\"window.__xss = 2; alert('img ran')\"> <b>bold?</b> **stars**"
)


@pytest.fixture
def dialogs() -> list[str]:
    """Messages of every alert/confirm/prompt the page opened (each is dismissed)."""
    return []


@pytest.fixture
def page(chromium: Any, dialogs: list[str]) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield page
    context.close()


def sign_in(page: Page, live: LiveApp, name: str, admin_link: bool = False) -> None:
    page.goto(f"{live.url}?admin={ADMIN_TOKEN}" if admin_link else live.url)
    page.locator("#name-box").locator("input, textarea").first.fill(name)
    page.click("#login-btn")
    expect(page.locator("#rater-badge")).to_contain_text(name)
    expect(page.locator("#response textarea")).not_to_have_value("")


def admin_caller(live: LiveApp) -> Caller:
    return Caller(admin_token=ADMIN_TOKEN)


def rated(page: Page, n: int) -> None:
    expect(page.locator("#progress")).to_contain_text(f"{n} rated")


def plot_points(page: Page) -> int:
    return page.locator("#plot-mean_score .mark-symbol path").count()


def test_rate_a_batch_by_click_and_keyboard(live: LiveApp, page: Page, dialogs: list[str], screenshots: Path) -> None:
    sign_in(page, live, "alice")
    expect(page.locator("#version-badge")).to_contain_text("v0")
    expect(page.locator("#admin-panel")).to_be_hidden()  # alice is a rater
    page.screenshot(path=screenshots / "rate.png", full_page=True)

    page.click("#q5")
    rated(page, 1)
    page.click("#q1")
    rated(page, 2)
    page.keyboard.press("u")  # undo the last rating: its sample comes back
    rated(page, 1)
    page.keyboard.press("4")
    rated(page, 2)
    page.keyboard.press("2")
    rated(page, 3)
    page.locator("#response textarea").focus()  # read-only text: shortcuts still work there
    page.keyboard.press("3")
    rated(page, 4)

    page.get_by_role("tab", name="Watch").click()
    expect(page.locator("#dash-status")).to_contain_text("Model v1", timeout=60_000)
    expect(page.locator("#plot-mean_score .mark-symbol path")).to_have_count(1, timeout=30_000)
    expect(page.locator("#steps-count")).to_contain_text("1 PPO step ·")
    page.screenshot(path=screenshots / "watch-rater.png", full_page=True)

    page.reload()  # gr.State is gone; the name comes back from localStorage, the progress from the database
    expect(page.locator("#rater-badge")).to_contain_text("alice")
    rated(page, 4)
    assert dialogs == []


KEY_LOG = """() => {
  window.__keys = [];
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    window.__keys.push(`${ev.key}@${t.tagName}${t.type ? ":" + t.type : ""}${t.disabled ? ":disabled" : ""}`);
  }, true);
}"""


def ratings_by(live: LiveApp, name: str) -> list[float]:
    """What the database holds for ``name``, newest first: the truth, not the page's progress line."""
    return [r.score for r in live.service.recent_ratings(100) if r.rater == name]


def test_typing_in_a_field_does_not_trigger_shortcuts(live: LiveApp, page: Page) -> None:
    sign_in(page, live, "dora")
    page.evaluate(KEY_LOG)
    number = page.locator("#exact-score input[type=number]")
    number.fill("")
    number.press_sequentially("0.5")  # "5" here is part of a score being typed, not "Great"
    number.press("u")
    number.press("s")
    expect(number).to_have_value("0.5")
    keys = page.evaluate("() => window.__keys")
    assert all("@INPUT:number" in k for k in keys), f"a key left the number field: {keys}"
    page.wait_for_timeout(500)
    assert ratings_by(live, "dora") == [], f"a shortcut rated while typing; keys: {keys}"
    rated(page, 0)
    expect(page.locator("#progress")).to_contain_text("0 skipped")
    page.locator("#submit-btn").click()  # the typed score is what gets submitted
    rated(page, 1)
    assert ratings_by(live, "dora") == [0.5]


def insert_sample(live: LiveApp, text: str) -> int:
    """A sample whose response is ``text``, at the current version, stored directly through storage."""
    tokenizer = AutoTokenizer.from_pretrained(live.settings.model)
    db = open_database(live.settings.db_url)
    try:
        with db.session_factory.begin() as s:
            prompt = prompts_for_generation(s, 1)[0]
            chat = [{"role": "user", "content": prompt.text}]
            query = tokenizer.encode(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))
            ids = tokenizer.encode(text)
            sample = NewSample(prompt.id, text, list(query), ids, live.service.dashboard().version, [-1.0] * len(ids))
            return add_samples(s, [sample])[0]
    finally:
        db.close()


def test_markup_in_a_response_is_shown_as_text(
    live: LiveApp, page: Page, dialogs: list[str], screenshots: Path
) -> None:
    live.wait_for(lambda d: d.buffer_ready >= d.buffer_target, what="a full buffer")
    insert_sample(live, PAYLOAD)
    sign_in(page, live, "carol", admin_link=True)
    assert "admin=" not in page.url, "the token is taken out of the address bar"
    response = page.locator("#response textarea")
    for _ in range(2 * live.settings.buffer_target):  # newest first: normally the very first sample
        if "<script>" in response.input_value():
            break
        page.keyboard.press("s")
        page.wait_for_timeout(300)
    expect(response).to_have_value(PAYLOAD)  # the rater SEES the markup, as text
    page.screenshot(path=screenshots / "xss-as-text.png", full_page=True)
    page.keyboard.press("3")
    page.get_by_role("tab", name="Watch").click()
    expect(page.locator("#admin-panel")).to_be_visible()  # admin sees the training controls
    expect(page.locator("#recent")).to_contain_text("<img src=x onerror=", timeout=15_000)  # table cell: text too
    page.screenshot(path=screenshots / "watch-admin.png", full_page=True)

    assert dialogs == [], "an alert() fired"
    assert page.evaluate("() => window.__xss") is None, "injected script or handler ran"
    assert page.locator("img[src='x']").count() == 0, "an injected <img> exists in the DOM"
    injected = "() => [...document.querySelectorAll('script')].filter(s => s.textContent.includes('__xss')).length"
    assert page.evaluate(injected) == 0, "an injected <script> exists in the DOM"


def test_the_name_admin_gives_no_controls_and_the_admin_link_does(live: LiveApp, page: Page) -> None:
    sign_in(page, live, "admin")
    page.get_by_role("tab", name="Watch").click()
    expect(page.locator("#dash-status")).to_contain_text("Model v")  # a signed-in user sees the dashboard
    expect(page.locator("#admin-panel")).to_be_hidden()
    page.goto(f"{live.url}?admin=wrong-token")  # the saved name signs the tab back in, with a wrong token
    expect(page.locator("#rater-badge")).to_contain_text("admin · rater")
    page.get_by_role("tab", name="Watch").click()
    expect(page.locator("#admin-panel")).to_be_hidden()

    page.goto(f"{live.url}?admin={ADMIN_TOKEN}")  # the admin link printed at start-up
    expect(page.locator("#rater-badge")).to_contain_text("· admin")
    assert "admin=" not in page.url, "the token is taken out of the address bar"
    page.get_by_role("tab", name="Watch").click()
    page.click("#pause-btn")
    expect(page.locator("#admin-message")).to_contain_text("Training paused.")
    assert live.service.dashboard().training == "paused"
    page.reload()  # the token is remembered by this browser, not by the address bar
    expect(page.locator("#rater-badge")).to_contain_text("· admin")


def test_each_response_starts_with_the_slider_in_the_middle(live: LiveApp, page: Page) -> None:
    sign_in(page, live, "erin")
    slider = page.locator("#exact-score input[type=number]")
    slider.fill("0.8")
    slider.press("Tab")
    first = page.locator("#response textarea").input_value()
    page.click("#submit-btn")
    rated(page, 1)
    expect(page.locator("#response textarea")).not_to_have_value(first)
    expect(slider).to_have_value("0")  # Enter on the next response does not resend 0.8
    assert [r.score for r in live.service.recent_ratings(5)] == [0.8]


def test_score_buttons_are_disabled_while_nothing_can_be_rated(live: LiveApp, page: Page) -> None:
    live.service.set_paused(admin_caller(live), True)
    live.wait_for(lambda d: d.buffer_ready >= d.buffer_target, what="a full buffer")
    sign_in(page, live, "frank")
    for _ in range(3 * live.settings.buffer_target):  # skip everything there is
        if page.locator("#skip-btn").is_disabled():
            break
        page.click("#skip-btn")
        page.wait_for_timeout(150)
    for button in ("#q1", "#q5", "#submit-btn", "#skip-btn"):
        expect(page.locator(button)).to_be_disabled()
    expect(page.locator("#status-line")).to_contain_text("Nothing for you to rate right now")
    page.keyboard.press("3")  # the shortcut of a disabled button does nothing
    assert [r for r in live.service.recent_ratings(5) if r.rater == "frank"] == []

"""What raters see while the model learns (issue 9), in headless Chromium: an answer cut at the token limit says
so, Undo greys out by itself once the trainer takes the last rating, the version badge never goes back, and a plot
of a single PPO step shows a visible marker."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.ui import test_browser
from tests.ui.live_app import LiveApp
from tests.ui.test_browser import rated, sign_in

pytestmark = pytest.mark.browser
page, dialogs = test_browser.page, test_browser.dialogs  # the same fixtures: a fresh Chromium page, dialogs caught


def badge_version(page: Page) -> int:
    match = re.search(r"v(\d+)", page.locator("#version-badge").text_content() or "")
    assert match is not None
    return int(match.group(1))


def test_cut_answers_are_marked_undo_follows_the_claim_and_the_badge_never_goes_back(live: LiveApp, page: Page) -> None:
    sign_in(page, live, "gina")
    # the tiny random model almost never says end-of-text within 8 tokens: its answers are cut, and marked
    expect(page.locator("#response")).to_contain_text(f"cut at {live.settings.max_new_tokens} tokens")
    seen = []
    batch = live.settings.batch_size
    for n in range(1, batch + 1):
        seen.append(badge_version(page))
        page.click("#q4")
        rated(page, n)
    live.wait_for(lambda d: d.version >= 1, what="the first step")
    expect(page.locator("#undo-btn")).to_be_disabled(timeout=10_000)  # no click: its state follows the claim
    for n in range(batch + 1, 2 * batch):  # fewer than a batch: nothing is claimed, each one can be undone
        expect(page.locator("#q4")).to_be_enabled(timeout=60_000)
        seen.append(badge_version(page))
        page.click("#q4")
        rated(page, n)
        expect(page.locator("#undo-btn")).to_be_enabled()
    assert seen == sorted(seen) and seen[-1] >= 1, seen


def test_a_plot_of_one_step_shows_its_point(live: LiveApp, page: Page) -> None:
    sign_in(page, live, "hugo")
    for n in range(1, live.settings.batch_size + 1):
        page.click("#q5")
        rated(page, n)
    live.wait_for(lambda d: d.version >= 1, what="the first step")
    live.service.set_paused(test_browser.admin_caller(live), True)  # one step only
    page.get_by_role("tab", name="Watch").click()
    expect(page.locator("#steps-count")).to_contain_text("1 PPO step ", timeout=30_000)
    point = page.locator("#plot-mean_score .mark-symbol path")
    expect(point).to_have_count(1)
    assert point.evaluate("p => getComputedStyle(p).opacity") == "1"
    box = point.bounding_box()
    assert box is not None and box["width"] >= 4 and box["height"] >= 4  # a dot, not a zero-size symbol
    expect(page.locator("#plot-kl")).to_contain_text("never negative")

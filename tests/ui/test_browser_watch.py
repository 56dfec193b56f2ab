"""The Watch tab tells the story in headless Chromium: the first-vs-current comparison is open above the plots, the
mean human score per version gains a point once people rate the new version, and the counts say how many of their
ratings the model was trained on."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.ui import test_browser
from tests.ui.live_app import LiveApp
from tests.ui.test_browser import rated, sign_in

pytestmark = pytest.mark.browser
page, dialogs = test_browser.page, test_browser.dialogs  # the same fixtures: a fresh Chromium page, dialogs caught
VERSION_POINTS = "#plot-versions .mark-symbol path"


def top(page: Page, selector: str) -> float:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not laid out"
    return float(box["y"])


def test_compare_is_open_above_the_plots_and_each_rated_version_gets_a_point(
    live: LiveApp, page: Page, screenshots: Path
) -> None:
    sign_in(page, live, "alice")
    batch = live.settings.batch_size
    for n in range(1, batch + 1):  # one whole batch of v0 samples: the trainer makes v1 from it
        page.click("#q4")
        rated(page, n)

    page.get_by_role("tab", name="Watch").click()
    expect(page.locator("#compare-btn")).to_be_visible()  # no click on the accordion needed
    expect(page.locator("#compare-first textarea")).to_be_visible()
    assert top(page, "#dash-counts") < top(page, "#compare-btn") < top(page, "#plot-mean_score")
    expect(page.locator(VERSION_POINTS)).to_have_count(1, timeout=30_000)  # v0 only
    expect(page.locator("#dash-status")).to_contain_text("Model v1", timeout=60_000)
    expect(page.locator("#dash-counts")).to_contain_text(f"{batch} of {batch} human ratings trained (100%)")

    page.get_by_role("tab", name="Rate").click()
    for n in range(batch + 1, 3 * batch + 2):  # older responses still in the buffer come first
        if "v1" in (page.locator("#version-badge").text_content() or ""):
            break
        page.click("#skip-btn")
        expect(page.locator("#progress")).to_contain_text(f"{n - batch} skipped")
    expect(page.locator("#version-badge")).to_contain_text("v1")
    page.click("#q5")
    rated(page, batch + 1)

    page.get_by_role("tab", name="Watch").click()
    expect(page.locator(VERSION_POINTS)).to_have_count(2, timeout=30_000)  # v0 and v1
    expect(page.locator("#dash-counts")).to_contain_text(f"{batch} of {batch + 1} human ratings trained")
    page.screenshot(path=screenshots / "watch-versions.png", full_page=True)

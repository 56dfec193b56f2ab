"""The Compare tab in headless Chromium against the real app in pairwise mode (tiny model): sign in, the Compare tab
opens with two responses side by side, and keys 1-4 and u answer and undo; the database holds exactly the answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from storage.engine import open_database
from storage.schema import PairComparison, Rater
from tests.ui.live_app import LiveApp, serve, tiny_settings

pytestmark = pytest.mark.browser


@pytest.fixture
def live_pairwise(tiny_model: Path, prompts_file: Path, tmp_path: Path) -> Iterator[LiveApp]:
    with serve(tiny_settings(tiny_model, prompts_file, tmp_path / "data", mode="pairwise")) as app:
        yield app


def answers_of(live: LiveApp, name: str) -> list[str]:
    db = open_database(live.settings.db_url)
    try:
        with db.read_session_factory.begin() as s:
            stmt = (
                select(PairComparison.answer)
                .join(Rater, Rater.id == PairComparison.rater_id)
                .where(Rater.name == name)
                .order_by(PairComparison.id)
            )
            return list(s.scalars(stmt))
    finally:
        db.close()


def compared(page: Page, n: int) -> None:
    expect(page.locator("#cmp-progress")).to_contain_text(f"{n} compared", timeout=30_000)


def test_compare_pairs_with_keys_1_to_4(live_pairwise: LiveApp, chromium: object, screenshots: Path) -> None:
    live = live_pairwise
    live.wait_for(lambda d: d.buffer_ready >= 6, what="three pairs' worth of responses")
    page: Page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()  # type: ignore[attr-defined]
    page.set_default_timeout(30_000)
    page.goto(live.url)
    page.locator("#name-box").locator("input, textarea").first.fill("gina")
    page.click("#login-btn")
    a, b = page.locator("#cmp-a textarea"), page.locator("#cmp-b textarea")
    expect(page.locator("#rater-badge")).to_contain_text("gina", timeout=30_000)
    expect(a).not_to_have_value("", timeout=30_000)  # pairwise mode: the Compare tab is open, with a pair in it
    expect(b).not_to_have_value("")
    expect(page.locator("#rate-tab, #q1").first).to_be_hidden()
    page.screenshot(path=screenshots / "compare.png", full_page=True)
    first = (a.input_value(), b.input_value())

    page.keyboard.press("1")
    compared(page, 1)
    page.keyboard.press("u")  # undo: the same pair comes back
    compared(page, 0)
    expect(a).to_have_value(first[0])
    expect(b).to_have_value(first[1])
    for n, key in enumerate("234", start=1):
        page.keyboard.press(key)
        compared(page, n)
    assert answers_of(live, "gina") == ["b_better", "tie", "both_bad"]
    page.context.close()

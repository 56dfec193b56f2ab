"""The README's pictures, taken in headless Chromium from a running app (sign in as a rater through the admin link).

    python -m app --data-dir runs/r3-human-learned/data --reward human+learned --admin-token TOKEN &
    .venv/bin/python bench/screenshots.py --url http://127.0.0.1:7860 --admin-token TOKEN          # rate, watch
    python -m app ... --mode pairwise &
    .venv/bin/python bench/screenshots.py --url http://127.0.0.1:7860 --admin-token TOKEN --compare  # compare

Nothing is clicked that changes data: the rater signs in and looks. The last stdout line is `RESULT {json}` with the
files written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 120_000  # a response can be minutes away on a busy CPU


def sign_in(page: Page, url: str, token: str, name: str) -> None:
    page.goto(f"{url.rstrip('/')}/?admin={token}")
    page.locator("#name-box").locator("input, textarea").first.fill(name)
    page.click("#login-btn")
    expect(page.locator("#rater-badge")).to_contain_text(name, timeout=WAIT_MS)


def rate_and_watch(page: Page, out: Path) -> list[Path]:
    expect(page.locator("#response textarea")).not_to_have_value("", timeout=WAIT_MS)
    rate = out / "rate.png"
    page.screenshot(path=rate, full_page=True)
    page.get_by_role("tab", name="Watch").click()
    page.click("#compare-btn")  # v0 against the live version on one prompt: reads, writes nothing
    expect(page.locator("#compare-current textarea")).not_to_have_value("", timeout=WAIT_MS)
    page.wait_for_timeout(3000)  # the dashboard's refresh and its plots
    watch = out / "watch.png"
    page.screenshot(path=watch, full_page=True)
    return [rate, watch]


def compare(page: Page, out: Path) -> list[Path]:
    expect(page.locator("#cmp-a textarea")).not_to_have_value("", timeout=WAIT_MS)
    expect(page.locator("#cmp-b textarea")).not_to_have_value("", timeout=WAIT_MS)
    path = out / "compare.png"
    page.screenshot(path=path, full_page=True)
    return [path]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:7860")
    p.add_argument("--admin-token", required=True)
    p.add_argument("--name", default="alice", help="the rater who signs in")
    p.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    p.add_argument("--compare", action="store_true", help="the Compare tab of an app in pairwise mode")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        sign_in(page, args.url, args.admin_token, args.name)
        written = compare(page, args.out) if args.compare else rate_and_watch(page, args.out)
        browser.close()
    sys.stdout.write("RESULT " + json.dumps({"files": [str(f) for f in written]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

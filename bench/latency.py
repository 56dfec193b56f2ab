"""Rater latency: score click -> next response visible, in a real headless Chromium against the real app.

    .venv/bin/python bench/latency.py                 # SmolLM2-135M-Instruct (the app's default model), CPU
    .venv/bin/python bench/latency.py --model tiny    # a tiny random model: a quick run (~1 min)

The app runs in this process exactly as `python -m app` builds it (FeedbackService + build_ui, SQLite in a temp
folder); Playwright drives Debian's /usr/bin/chromium. Each measurement clicks a quick-score button from inside the
page and waits, polling every animation frame, until the rater's progress and the response text have changed:
`performance.now()` from the click to that frame.

Two phases. Idle: training paused, the generator keeps the prefetch buffer filled (each click waits until a
next sample exists, so an empty buffer is never measured). During a step: training resumed with the idle phase's
ratings scored, so PPO steps run back to back; a click counts only when the dashboard shows a claimed batch (a step
in progress) both before and after it. Log to stderr; the last stdout line is `RESULT {json}` with `p50_ms`, `p95_ms`,
`p95_ms_during_step`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import Page, sync_playwright

from app.access import Caller
from app.service import FeedbackService
from app.ui.contract import Service
from app.views import Dashboard
from tests.ui.live_app import ADMIN_TOKEN, LiveApp, serve, tiny_model_folder, tiny_settings, write_prompts

LOG = logging.getLogger("bench.latency")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Click a button and resolve with the ms until the next response is on screen (progress and text both changed;
# if a new sample happens to have the same text, 300 ms after the progress changed).
CLICK_AND_WAIT = """
async (id) => {
  const text = () => document.querySelector('#response textarea').value;
  const progress = () => document.querySelector('#progress').textContent;
  const [text0, progress0] = [text(), progress()];
  const t0 = performance.now();
  document.getElementById(id).click();
  return await new Promise((resolve, reject) => {
    let progressAt = null;
    const check = (now) => {
      if (progressAt === null && progress() !== progress0) progressAt = now;
      if (progressAt !== null && text() !== '' && (text() !== text0 || now - progressAt > 300)) {
        resolve(performance.now() - t0);
      } else if (now - t0 > 30000) {
        reject(new Error('no next response within 30 s'));
      } else {
        requestAnimationFrame(check);
      }
    };
    requestAnimationFrame(check);
  });
}
"""


class TimedService:
    """The real service as the page sees it, logging every call slower than ``slow_ms`` (to explain outliers)."""

    def __init__(self, slow_ms: float = 250.0) -> None:
        self._service: FeedbackService | None = None
        self._slow_ms = slow_ms
        self.slow: list[tuple[str, float]] = []

    def wrap(self, service: FeedbackService) -> Service:
        self._service = service
        return cast(Service, self)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._service, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                ms = (time.perf_counter() - start) * 1000
                if ms > self._slow_ms and name != "compare":
                    LOG.warning("slow service call: %s took %.0f ms", name, ms)
                    self.slow.append((name, ms))

        return timed


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def step_running(d: Dashboard) -> bool:
    return d.counts.get("claimed", 0) > 0


def rate_once(page: Page, live: LiveApp, rng: random.Random) -> tuple[float, bool]:
    """One measured click; returns (ms, whether a PPO step ran before and after the click)."""
    # The sample on screen plus at least one more: the storage count, not the generator's buffer_ready, which is
    # only refreshed between generation batches and over-reports while one is being generated.
    live.wait_for(lambda d: d.counts["unrated"] >= 2, timeout=600, what="a next sample")
    before = step_running(live.service.dashboard())
    try:
        ms = float(page.evaluate(CLICK_AND_WAIT, f"q{rng.randint(1, 5)}"))
        if ms > 1000:
            LOG.warning("slow click: %.0f ms; status line %r", ms, page.inner_text("#status-line"))
    except Exception:
        LOG.error("status line: %r; dashboard: %s", page.inner_text("#status-line"), live.service.dashboard())
        page.screenshot(path="bench-latency-failure.png", full_page=True)
        raise
    after = step_running(live.service.dashboard())
    page.wait_for_timeout(rng.uniform(100, 300))  # a (very fast) rater reading the next response
    return ms, before and after


def measure(live: LiveApp, page: Page, n_idle: int, n_step: int, max_s: float) -> dict[str, Any]:
    rng = random.Random(0)
    admin = Caller(admin_token=live.service.access.admin_token or "")
    live.service.set_paused(admin, True)
    idle: list[float] = []
    for _ in range(n_idle):
        ms, _ = rate_once(page, live, rng)
        idle.append(ms)
    LOG.info("idle: %d clicks, p50 %.0f ms, p95 %.0f ms", len(idle), percentile(idle, 50), percentile(idle, 95))
    live.service.set_paused(admin, False)  # the scored idle-phase samples become back-to-back PPO steps
    during: list[float] = []
    deadline, clicks = time.monotonic() + max_s, 0
    while len(during) < n_step and time.monotonic() < deadline and clicks < 4 * n_step:
        clicks += 1
        ms, in_step = rate_once(page, live, rng)
        if in_step:
            during.append(ms)
    d = live.service.dashboard()
    LOG.info("during steps: %d clicks; version now %d, last step %.1f s", len(during), d.version, d.last_step_s or 0)
    return {
        "p50_ms": percentile(idle, 50),
        "p95_ms": percentile(idle, 95),
        "p50_ms_during_step": percentile(during, 50),
        "p95_ms_during_step": percentile(during, 95),
        "n": len(idle),
        "n_during_step": len(during),
        "max_ms": max(idle + during),
        "last_step_s": d.last_step_s,
        "version": d.version,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="'tiny', a registry name or a model folder")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--clicks", type=int, default=40, help="measured clicks per phase (default: 40)")
    p.add_argument("--max-step-phase-s", type=float, default=300.0, help="give up collecting step clicks after")
    p.add_argument("--screenshots", type=Path, default=None, help="save rate/watch screenshots here")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    n = args.clicks
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        root = Path(tmp)
        # "tiny" is wider than the unit tests' model so that a PPO step lasts long enough to click during it.
        model = tiny_model_folder(root / "model", n_layer=4, n_embd=256) if args.model == "tiny" else args.model
        settings = tiny_settings(Path(model), write_prompts(root / "prompts.jsonl"), root / "data")
        settings = replace(
            settings,
            model=str(model),
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            ppo_epochs=4,
            threads=None,
            buffer=n + 2 * args.batch_size,  # enough ready samples that the idle phase never waits on generation
        )
        started = time.monotonic()
        timed = TimedService()
        with serve(settings, timed.wrap) as live, sync_playwright() as pw:
            LOG.info("app up in %.1f s at %s", time.monotonic() - started, live.url)
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{live.url}?admin={ADMIN_TOKEN}")  # the admin link: the Watch tab shows the training controls
            page.locator("#name-box").locator("input, textarea").first.fill("admin")
            page.click("#login-btn")
            live.wait_for(lambda d: d.buffer_ready >= d.buffer_target, timeout=1800, what="a full prefetch buffer")
            page.wait_for_function("() => (document.querySelector('#response textarea')?.value ?? '') !== ''")
            result = measure(live, page, n, n, args.max_step_phase_s)
            result["slow_service_calls"] = [f"{name} {ms:.0f} ms" for name, ms in timed.slow]
            if args.screenshots:
                save_screenshots(page, args.screenshots)
            browser.close()
    result.update(model=args.model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device="cpu")
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    return 0


def save_screenshots(page: Page, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=folder / "rate-smollm2.png", full_page=True)
    page.get_by_role("tab", name="Watch").click()
    page.wait_for_timeout(3000)
    page.screenshot(path=folder / "watch-smollm2.png", full_page=True)


if __name__ == "__main__":
    sys.exit(main())

"""Launch the real app in-process for the UI tests and the latency benchmark: the real ``FeedbackService`` (tiny
model or SmolLM2, SQLite in a given folder) behind ``build_ui(service)``, served on a free port, always stopped.

Mirrors ``app.__main__.serve`` (build the page, start the service, launch), without its signal handling.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr

from app.__main__ import launch_options
from app.bootstrap import build_service
from app.service import FeedbackService
from app.settings import AppSettings
from app.ui import build_ui
from app.ui.contract import Service
from app.views import Dashboard

log = logging.getLogger(__name__)

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
"""The admin token of the test apps (no --auth): what the admin link printed at start-up carries."""

PROMPTS = [
    "Tell me a happy story about a cat.",
    "Write a short poem about the sea.",
    "How do I bake bread?",
    "What is the capital of France?",
    "Explain the moon landing to a six year old.",
    "Say something kind.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_model_folder(folder: Path, **config: Any) -> Path:
    """A tiny random GPT-2 (``tiny_causal_lm(**config)``) with a ChatML tokenizer, saved."""
    from ppo_core.tiny import save_tiny_model

    return save_tiny_model(folder, "gpt2", **config)


def write_prompts(path: Path) -> Path:
    path.write_text("".join(json.dumps({"query": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return path


def tiny_settings(model: Path, prompts: Path, data_dir: Path, **overrides: Any) -> AppSettings:
    """Small and quick: batch 4, 8 new tokens, one PPO epoch, two torch threads."""
    base = AppSettings(
        model=str(model),
        dataset=str(prompts),
        data_dir=data_dir,
        batch_size=4,
        ppo_epochs=1,
        max_new_tokens=8,
        threads=2,
        admin_token=ADMIN_TOKEN,
        poll_seconds=0.1,
        checkpoint_every=1000,
    )
    return replace(base, **overrides)


@dataclass
class LiveApp:
    url: str
    service: FeedbackService
    settings: AppSettings
    demo: gr.Blocks

    def wait_for(self, check: Callable[[Dashboard], bool], timeout: float = 60.0, what: str = "condition") -> Dashboard:
        """Poll the service's dashboard until ``check`` holds (or fail with the last dashboard)."""
        start = time.monotonic()
        next_log = start + 10.0
        while True:
            d = self.service.dashboard()
            if check(d):
                return d
            now = time.monotonic()
            if now > start + timeout:
                raise TimeoutError(f"timed out waiting for {what}; dashboard: {d}")
            if now > next_log:
                log.info("still waiting for %s after %.0f s: %s", what, now - start, d)
                next_log = now + 10.0
            time.sleep(0.1)


@contextmanager
def serve(
    settings: AppSettings, page_service: Callable[[FeedbackService], Service] | None = None, **launch: Any
) -> Iterator[LiveApp]:
    """Build service and page, start them, yield the running app; stop the server and the service after.

    ``page_service`` may wrap the service the page talks to (the benchmark times its calls).
    """
    port = free_port()
    settings = replace(settings, port=port)
    service = build_service(settings)
    try:
        demo = build_ui(page_service(service) if page_service else service)
        service.start()
        demo.launch(**{**launch_options(replace(settings, host="127.0.0.1")), **launch})
        try:
            yield LiveApp(f"http://127.0.0.1:{port}/", service, settings, demo)
        finally:
            demo.close()
    finally:
        service.stop()

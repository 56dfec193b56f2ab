"""Fixtures for the app tests: a tiny model folder, a small prompt file, settings and services in tmp_path.

The database is SQLite under the settings' data_dir, or with RLHF_TEST_DB=postgresql a fresh PostgreSQL database
per test (``app_db_url``; ``make test`` runs a few service test files that way too)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.bootstrap import build_service
from app.roles import TrainerProcess, build_front_end, build_trainer_process
from app.service import FeedbackService
from app.settings import AppSettings
from tests.conftest import app_backend

PROMPTS = [
    "Tell me a happy story about a cat.",
    "Write a short poem about the sea.",
    "How do I bake bread?",
    "What is the capital of France?",
    "Explain the moon landing to a six year old.",
    "Say something kind.",
    "Describe a lovely day.",
    "What makes a good friend?",
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama and a ChatML tokenizer saved like a real model folder (loadable with --model)."""
    from ppo_core.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"), "llama", n_layer=2, n_embd=64)


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"query": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return path


@pytest.fixture
def app_db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """``AppSettings.db`` for this test: None (SQLite in data_dir), or a fresh PostgreSQL database, dropped after."""
    if app_backend() == "sqlite":
        yield None
        return
    cluster = request.getfixturevalue("postgres_cluster")
    url = cluster.fresh_url("app")
    yield url
    cluster.drop(url)


@pytest.fixture
def make_settings(
    tiny_model: Path, prompt_file: Path, tmp_path: Path, app_db_url: str | None
) -> Callable[..., AppSettings]:
    def make(**overrides: Any) -> AppSettings:
        base = AppSettings(
            model=str(tiny_model),
            dataset=str(prompt_file),
            data_dir=tmp_path / "data",
            db=app_db_url,
            batch_size=2,
            buffer=4,
            ppo_epochs=2,
            max_new_tokens=6,
            threads=2,
            checkpoint_every=1000,
            poll_seconds=0.05,
        )
        return replace(base, **overrides)

    return make


@pytest.fixture
def make_service(make_settings: Callable[..., AppSettings]) -> Iterator[Callable[..., FeedbackService]]:
    """Services built here are stopped at the end of the test (threads joined), started or not."""
    built: list[FeedbackService] = []

    def make(**overrides: Any) -> FeedbackService:
        service = build_service(make_settings(**overrides))
        built.append(service)
        return service

    yield make
    for service in built:
        service.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def build_role(make_settings: Callable[..., AppSettings]) -> Iterator[Callable[..., Any]]:
    """build_role(role, **overrides): a `serve` front-end service or a `train` trainer process, not started; all
    stopped at the end (last built first)."""
    built: list[FeedbackService | TrainerProcess] = []

    def make(role: str, **overrides: Any) -> Any:
        settings = make_settings(**overrides)
        made = build_front_end(settings) if role == "serve" else build_trainer_process(settings)
        built.append(made)
        return made

    yield make
    for made in reversed(built):
        made.stop()

"""Fixtures for the feedback-store tests: a real SQLite file per test, helpers to fill it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not put the repo root on sys.path
    sys.path.insert(0, str(REPO_ROOT))

import storage  # noqa: E402
from storage import Database  # noqa: E402


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = storage.open_database(tmp_path / "feedback.db")
    yield database
    database.close()

"""Fixtures for the feedback-store tests: every test that opens a database runs twice, on a real SQLite file in
tmp_path and on a fresh database in a throwaway PostgreSQL server (``tests/pg.py``), plus helpers to fill it.

A test that only makes sense on one backend says so with ``@pytest.mark.parametrize("backend", ["sqlite"])``,
which overrides the ``backend`` fixture for it and for the fixtures below.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) does not put the repo root on sys.path
    sys.path.insert(0, str(REPO_ROOT))

import storage  # noqa: E402
from storage import Database  # noqa: E402
from tests.pg import BACKENDS, PostgresCluster  # noqa: E402


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """``new_db_url()``: the URL of a new, empty database on this test's backend; as many as the test needs."""
    made: list[str] = []
    cluster: PostgresCluster | None = None
    if backend == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")  # skips (locally) or fails (CI) without PostgreSQL

    def make() -> str:
        if cluster is None:
            url = f"sqlite:///{tmp_path / ('feedback.db' if not made else f'feedback{len(made)}.db')}"
        else:
            url = cluster.fresh_url()
        made.append(url)
        return url

    yield make
    if cluster is not None:
        for url in made:
            cluster.drop(url)


@pytest.fixture
def db_url(new_db_url: Callable[[], str]) -> str:
    return new_db_url()


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = storage.open_database(db_url)
    yield database
    database.close()

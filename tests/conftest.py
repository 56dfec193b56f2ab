"""Fixtures shared by every test folder: the throwaway PostgreSQL cluster (started once per session, on demand).

The storage suite runs on SQLite and PostgreSQL always. The app suite runs on SQLite unless RLHF_TEST_DB=postgresql
(``make test`` runs a few app service tests that way too). Without PostgreSQL binaries the PostgreSQL tests skip
locally and fail in CI (env CI set), as the browser tests do without Chromium.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pg import BACKENDS, PostgresCluster, find_bin_dir, missing_reason

APP_DB_ENV = "RLHF_TEST_DB"


def app_backend() -> str:
    """The database the app tests use: RLHF_TEST_DB, sqlite by default."""
    backend = os.environ.get(APP_DB_ENV, "sqlite").strip().lower() or "sqlite"
    if backend not in BACKENDS:
        raise pytest.UsageError(f"{APP_DB_ENV}={backend!r}: expected one of {', '.join(BACKENDS)}")
    return backend


def require_postgres() -> None:
    """Skip (locally) or fail (in CI) a test that needs PostgreSQL when it is not installed."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must install PostgreSQL (.ci/run does) and the `postgres` extra")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    require_postgres()
    bin_dir = find_bin_dir()
    assert bin_dir is not None
    cluster = PostgresCluster.start(bin_dir)
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database (a schema of its own) in the session's cluster, dropped after the test."""
    url = postgres_cluster.fresh_url()
    yield url
    postgres_cluster.drop(url)

"""Engine set-up (SQLite pragmas, our BEGIN), portability of the schema, and the package's import layering."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable
from storage_helpers import in_tx, rater, seed

import storage
from storage import Database
from storage.schema import Base

STORAGE_DIR = Path(storage.__file__).resolve().parent


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_connections_get_wal_foreign_keys_and_busy_timeout(db: Database) -> None:
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_not_durable_mode_skips_the_fsync_per_commit(tmp_path: Path) -> None:
    with storage.open_database(tmp_path / "fb.db", durable=False) as db, db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(sa.exc.IntegrityError), db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO ratings (sample_id, rater_id, source, score, created_at, updated_at) "
            "VALUES (999, 999, 'human', 0.5, '2030-01-01', '2030-01-01')"
        )


def test_a_plain_path_creates_the_folder(tmp_path: Path) -> None:
    with storage.open_database(tmp_path / "deep" / "er" / "fb.db") as db:
        assert Path(db.url.removeprefix("sqlite:///")).exists()
        assert db.schema_version == storage.SCHEMA_VERSION


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused(url: str) -> None:
    with pytest.raises(storage.InvalidInput, match="in-memory"):
        storage.open_database(url)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_write_transactions_take_the_write_lock_at_begin(db: Database) -> None:
    """BEGIN IMMEDIATE: a second writer waits for the first instead of failing halfway through."""
    seed(db, prompts=1, samples_per_prompt=1)
    first_has_lock, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with db.session_factory.begin() as s:
            s.execute(sa.select(sa.literal(1)))  # only a read, yet it holds the write lock
            first_has_lock.set()
            release.wait(5)
            order.append("first")

    thread = threading.Thread(target=first)
    thread.start()
    first_has_lock.wait(5)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    with db.session_factory.begin() as s:
        storage.get_or_create_rater(s, "second")
        order.append("second")
    thread.join()
    assert order == ["first", "second"]


def test_read_sessions_do_not_block_writers(db: Database) -> None:
    run = in_tx(db)
    _, (sid,) = seed(db, prompts=1, samples_per_prompt=1)
    alice = rater(db, "alice")
    with db.read_session_factory.begin() as reader:
        assert storage.counts(reader).ratings == 0
        run(storage.record_rating, sid, alice, 0.5)  # a writer commits while the read is open
        assert storage.counts(reader).ratings == 0  # the reader keeps its snapshot
    with db.read_session_factory.begin() as reader:
        assert storage.counts(reader).ratings == 1


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("durable", [True, False])
def test_postgresql_sessions_get_a_lock_timeout_and_the_durability_asked_for(db_url: str, durable: bool) -> None:
    with storage.open_database(db_url, durable=durable, busy_timeout_s=7) as db, db.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "7s"
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == ("on" if durable else "off")
        assert conn.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_postgresql_writer_waits_on_a_row_lock_no_longer_than_the_busy_timeout(db_url: str) -> None:
    with storage.open_database(db_url, busy_timeout_s=0.3) as db:
        alice = rater(db, "alice")
        with db.session_factory.begin() as holder:
            storage.set_rater_role(holder, alice, "admin")
            holder.flush()  # the UPDATE: holds alice's row lock until the end of this block
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="lock timeout"), db.session_factory.begin() as s:
                storage.set_rater_role(s, alice, "admin")  # a change from what it reads (committed: "rater")
            assert 0.25 < time.monotonic() - started < 5
        with db.read_session_factory.begin() as s:
            assert storage.get_rater(s, alice).role == "admin"


@pytest.mark.parametrize("backend", ["postgresql"])
def test_postgresql_read_sessions_refuse_writes(db: Database) -> None:
    with pytest.raises(sa.exc.InternalError, match="read-only transaction"), db.read_session_factory.begin() as s:
        storage.get_or_create_rater(s, "alice")


def test_threads_opening_a_new_database_at_once_create_it_once(db_url: str) -> None:
    """Four connections find an empty database together (processes starting at once): each opens it, none fails
    creating the tables."""
    start, errors = threading.Barrier(4), []

    def open_it() -> None:
        start.wait(10)
        try:
            storage.open_database(db_url).close()
        except Exception as err:  # shown in the assertion below
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with storage.open_database(db_url) as db, db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1


def test_schema_compiles_for_postgresql() -> None:
    """Nothing SQLite-only in the tables: every table and index compiles for PostgreSQL."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    for table in Base.metadata.sorted_tables:
        assert "CREATE TABLE" in str(CreateTable(table).compile(dialect=dialect))
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=dialect))


def _code_words(path: Path) -> set[str]:
    """Identifiers and string literals of a module, docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    words: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value.lower())
        elif isinstance(node, ast.Name):
            words.add(node.id.lower())
        elif isinstance(node, ast.Attribute):
            words.add(node.attr.lower())
    return words


def test_repository_code_has_no_sqlite_specific_sql() -> None:
    """Only engine.py and migrate.py may speak SQLite; the repository functions use portable SQLAlchemy."""
    allowed = {"engine.py", "migrate.py"}
    checked = 0
    for path in sorted(STORAGE_DIR.glob("*.py")):
        if path.name in allowed:
            continue
        code = " ".join(_code_words(path))
        for word in ("pragma", "sqlite", "exec_driver_sql", "begin immediate"):
            assert word not in code, f"{path.name} uses {word!r}"
        checked += 1
    assert checked >= 10


def test_storage_never_imports_torch_gradio_ppo_core_or_app() -> None:
    forbidden = {"torch", "gradio", "ppo_core", "app", "transformers"}
    for path in sorted(STORAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.relative_to(STORAGE_DIR)} imports {name}"

"""One engine per process, a session per operation per thread.

``open_database(url)`` creates or upgrades the schema and returns a ``Database`` holding the engine and two
session factories. Use them as ``with db.session_factory.begin() as s:`` (commit on success, rollback on
error) around each repository call; never share a session between threads.

SQLite (the default, a file) gets, on every new connection: WAL journal (readers never block the writer),
``foreign_keys=ON``, a busy timeout and ``synchronous=FULL`` (a committed rating survives a crash of the
process and a power cut; ``durable=False`` selects ``NORMAL``: one fsync less per commit, and a power cut may
lose the last commits, though never consistency). We also take over BEGIN from the ``sqlite3`` driver
(its documented recipe, see SQLAlchemy's "Enabling Non-Legacy SQLite Transactional Modes"): write sessions start with
``BEGIN IMMEDIATE``, which takes SQLite's single write lock up front. Two writers then queue on the busy
timeout instead of both reading and one failing with ``SQLITE_BUSY_SNAPSHOT`` when it tries to write, and
every read-then-write in a repository function (claim a batch, lease a sample) is serialised. Other
databases get none of this; the repository code relies on conditional UPDATEs with rowcount checks and
unique constraints for correctness there (see batches.py).

PostgreSQL keeps its default READ COMMITTED for sessions that write: a conditional UPDATE waits for a competing
transaction's row lock and re-checks its WHERE clause on the committed row, which is what the compare-and-sets
need. Its counterparts of the SQLite settings: ``lock_timeout`` = the busy timeout (a writer waiting longer on a
row lock fails instead of hanging), ``durable`` = ``synchronous_commit`` on / off (off: a server crash may lose
the last commits, never consistency), read sessions = ``REPEATABLE READ READ ONLY`` (one snapshot for a whole export,
never blocking writers), and schema creation or upgrade under a transaction-level advisory lock, so processes
opening a new database at once create it once.

``upsert`` is the one statement that has no portable SQLAlchemy spelling (``INSERT ... ON CONFLICT DO UPDATE``);
it lives here with the other dialect-specific code, so repository modules stay portable.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.pool import NullPool

from storage.errors import InvalidInput
from storage.migrate import ensure_schema

log = logging.getLogger(__name__)

READ_ONLY_OPTION = "storage_read_only"
# Any fixed 64-bit key: the transaction-level advisory lock that serialises schema creation and upgrades.
SCHEMA_LOCK_KEY = 0x726C6866_6C697665  # "rlhflive"


@dataclass(frozen=True)
class Database:
    """The process's engine and its session factories."""

    url: str
    engine: Engine
    session_factory: sessionmaker[Session]
    """Sessions for reads and writes (``BEGIN IMMEDIATE`` on SQLite)."""
    read_session_factory: sessionmaker[Session]
    """Sessions for long reads (exports, dashboards): a plain deferred BEGIN on SQLite, i.e. a WAL snapshot
    that never blocks raters or the trainer; ``REPEATABLE READ READ ONLY`` on PostgreSQL, the same snapshot
    for the whole transaction, where a write is refused. Do not write through them."""
    schema_version: str

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def database_url(url: str | os.PathLike[str] | URL) -> URL:
    """A SQLAlchemy URL; a plain path (no ``://``) means a SQLite file, whose folder is created."""
    if isinstance(url, URL):
        return url
    if isinstance(url, os.PathLike) or "://" not in url:
        path = Path(url).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return make_url(f"sqlite:///{path}")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.query):
            # Each connection would get its own empty database: the trainer thread would never see a rating.
            raise InvalidInput("an in-memory SQLite database is invisible to other connections; use a file")
        Path(parsed.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    return parsed


def install_sqlite_hooks(
    engine: Engine, *, busy_timeout_s: float, durable: bool = True, foreign_keys: bool = True
) -> None:
    """Pragmas on connect and our own BEGIN; a no-op for other databases."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver stops emitting BEGIN; _on_begin does it
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def install_postgresql_schema_lock(engine: Engine) -> None:
    """Every transaction of ``engine`` starts by taking the schema advisory lock (released at its end); a no-op
    for other databases. Two processes opening a new database at once then create its tables once."""
    if engine.dialect.name != "postgresql":
        return

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")


def postgresql_options(url: URL, *, busy_timeout_s: float, durable: bool) -> dict[str, Any]:
    """libpq connect arguments giving PostgreSQL sessions the SQLite settings' counterparts (module docstring).
    Options given in the URL (``?options=-csearch_path%3Dmine``) are kept and come last, so they win."""
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in ("psycopg", "psycopg2"):
        return {}  # libpq's `options` is for the libpq drivers; others keep the server's settings
    # Both ways explicitly, as on SQLite: durable means durable whatever the server's default.
    settings = [f"-c lock_timeout={int(busy_timeout_s * 1000)}", f"-c synchronous_commit={'on' if durable else 'off'}"]
    given = url.query.get("options")
    settings += [given] if isinstance(given, str) else list(given or ())
    return {"options": " ".join(settings)}


def create_storage_engine(
    url: str | os.PathLike[str] | URL, *, busy_timeout_s: float = 30.0, durable: bool = True, echo: bool = False
) -> Engine:
    """The engine ``open_database`` uses, without touching the schema."""
    parsed = database_url(url)
    connect_args: dict[str, Any] = postgresql_options(parsed, busy_timeout_s=busy_timeout_s, durable=durable)
    if parsed.get_backend_name() == "sqlite":
        connect_args["timeout"] = busy_timeout_s
    engine = create_engine(parsed, echo=echo, connect_args=connect_args, pool_pre_ping=True)
    install_sqlite_hooks(engine, busy_timeout_s=busy_timeout_s, durable=durable)
    return engine


def open_database(
    url: str | os.PathLike[str] | URL,
    *,
    upgrade: bool = True,
    busy_timeout_s: float = 30.0,
    durable: bool = True,
    echo: bool = False,
) -> Database:
    """Open (creating or upgrading the schema) the feedback store at ``url``.

    ``url`` is a SQLAlchemy URL (``sqlite:///data/feedback.db``, ``postgresql+psycopg://...``) or a plain
    file path for SQLite. A database at an older schema revision is upgraded with Alembic, or refused with
    ``SchemaVersionError`` when ``upgrade`` is False; one at a revision this code does not know (written by
    newer code) or holding our tables without a revision is always refused.
    """
    parsed = database_url(url)
    schema_engine = create_engine(
        parsed, poolclass=NullPool, connect_args={"timeout": busy_timeout_s} if _is_sqlite(parsed) else {}
    )
    # Migrations run with foreign keys off (SQLite's table-rebuild ALTERs need it) and check them at the end.
    install_sqlite_hooks(schema_engine, busy_timeout_s=busy_timeout_s, foreign_keys=False)
    install_postgresql_schema_lock(schema_engine)
    try:
        version = ensure_schema(schema_engine, upgrade=upgrade)
    finally:
        schema_engine.dispose()
    engine = create_storage_engine(parsed, busy_timeout_s=busy_timeout_s, durable=durable, echo=echo)
    read_options: dict[str, Any] = {READ_ONLY_OPTION: True}
    if parsed.get_backend_name() == "postgresql":
        read_options.update(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    read_engine = engine.execution_options(**read_options)
    log.info("feedback store open at %s (schema %s)", parsed.render_as_string(hide_password=True), version)
    return Database(
        url=parsed.render_as_string(hide_password=False),
        engine=engine,
        session_factory=sessionmaker(bind=engine, expire_on_commit=False),
        read_session_factory=sessionmaker(bind=read_engine, expire_on_commit=False),
        schema_version=version,
    )


def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def upsert(s: Session, table: type[Any], key: InstrumentedAttribute[Any], values: dict[str, Any]) -> None:
    """Insert the row `values`, or update it in place where `key` (a unique column) already holds its value.

    One statement on both backends (``ON CONFLICT DO UPDATE``): two writers at the same moment both succeed, the
    later commit wins, and neither fails on the unique constraint as a read-then-insert would."""
    insert = postgresql_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    update = {name: value for name, value in values.items() if name != key.key}
    stmt = insert(table).values(**values)
    s.execute(stmt.on_conflict_do_update(index_elements=[key], set_=update))

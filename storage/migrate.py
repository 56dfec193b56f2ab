"""Schema versioning with Alembic, driven from code (no alembic.ini in the working directory needed).

The revision scripts live in ``storage/migrations/versions``; ``schema.SCHEMA_VERSION`` names the head. A new
database is created from the ORM metadata and stamped at the head (a test checks the migrations build the
very same schema). An existing one is upgraded in place, or refused with a ``SchemaVersionError`` that says
why: never read with a schema it was not written with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from storage.errors import SchemaVersionError
from storage.schema import POSTGRESQL_ONLY_INDEXES, SCHEMA_VERSION, Base

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def include_object_for(dialect: str) -> Callable[..., bool]:
    """Alembic's `include_object` for a database of this dialect: leaves out the schema's PostgreSQL-only indexes
    elsewhere, so comparing a SQLite database with the schema does not ask for them."""

    def include(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
        return not (type_ == "index" and dialect != "postgresql" and name in POSTGRESQL_ONLY_INDEXES)

    return include


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the packaged migrations; ``connection`` is used by env.py when given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head != SCHEMA_VERSION:  # a revision was added without bumping schema.py (or the reverse)
        raise RuntimeError(f"migrations head {head!r} != schema.SCHEMA_VERSION {SCHEMA_VERSION!r}")
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def ensure_schema(engine: Engine, *, upgrade: bool) -> str:
    """Create, check or upgrade the schema in one transaction; returns the revision now in the database.

    On SQLite the transaction starts with BEGIN IMMEDIATE, so two processes opening a new file at once
    cannot both create it.
    """
    head = head_revision()
    with engine.begin() as conn:
        current = current_revision(conn)
        if current is None:
            _create(conn)
            return head
        if current == head:
            return head
        if current not in known_revisions():
            raise SchemaVersionError(
                f"the database is at schema revision {current!r}, which this code does not know (it knows up to "
                f"{head!r}); it was probably written by a newer version of rlhf-live, so upgrade the code"
            )
        if not upgrade:
            raise SchemaVersionError(
                f"the database is at schema revision {current!r}, older than this code's {head!r}; "
                "open it with upgrade=True to migrate it (back the file up first)"
            )
        log.warning("upgrading feedback store schema from %s to %s", current, head)
        command.upgrade(alembic_config(conn), "head")
        _check_foreign_keys(conn)
        return head


def _create(conn: Connection) -> None:
    existing = set(inspect(conn).get_table_names()) & set(Base.metadata.tables)
    if existing:
        raise SchemaVersionError(
            f"the database has feedback-store tables {sorted(existing)} but no schema revision "
            "(alembic_version); refusing to guess which version wrote them"
        )
    Base.metadata.create_all(conn)
    command.stamp(alembic_config(conn), "head")
    log.info("created feedback store schema %s", SCHEMA_VERSION)


def _check_foreign_keys(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":
        return
    problems = conn.execute(text("PRAGMA foreign_key_check")).fetchall()
    if problems:
        raise SchemaVersionError(f"schema upgrade left {len(problems)} broken foreign keys: {problems[:5]}")

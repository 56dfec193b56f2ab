"""Schema versioning: migrations build the ORM's schema, an old database is upgraded with its data intact,
a newer or unversioned one is refused. Each test runs on SQLite and on PostgreSQL (``new_db_url``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from storage_helpers import in_tx

import storage
from storage.migrate import alembic_config, current_revision, include_object_for
from storage.schema import Base

OLD_ROWS = [
    "INSERT INTO raters (id, name, role, created_at) VALUES (1, 'alice', 'rater', '2024-05-01 10:00:00.000000')",
    "INSERT INTO prompts (id, text, source, row, sample_count, created_at) "
    "VALUES (1, 'Tell me a joke', 'seed', 0, 2, '2024-05-01 10:00:00.000000')",
    "INSERT INTO samples (id, prompt_id, response_text, query_ids, response_ids, behaviour_logprobs, "
    "policy_version, generation_settings, created_at) VALUES "
    "(1, 1, 'Why did the chicken...', '[1, 2]', '[3, 4]', '[-0.5, -1.0]', 0, '{}', '2024-05-01 10:01:00.000000'),"
    "(2, 1, 'Knock knock', '[1, 2]', '[5]', '[-0.1]', 0, '{}', '2024-05-01 10:01:00.000000')",
    "UPDATE samples SET human_n = 1 WHERE id = 1",
    "INSERT INTO ratings (id, sample_id, rater_id, source, score, created_at) "
    "VALUES (1, 1, 1, 'human', 0.75, '2024-05-01 10:02:00.000000')",
]


def _old_database(url: str) -> str:
    """A database as revision 0001 of the code left it, with a rating in it."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
        for statement in OLD_ROWS:
            conn.exec_driver_sql(statement)
        if conn.dialect.name == "postgresql":  # explicit ids do not move PostgreSQL's sequences; the app's would
            for table in ("raters", "prompts", "samples", "ratings"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
    engine.dispose()
    return url


def _columns(url: str, table: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def test_new_database_is_stamped_at_the_current_version(db_url: str) -> None:
    with storage.open_database(db_url) as db, db.engine.connect() as conn:
        assert current_revision(conn) == storage.SCHEMA_VERSION == db.schema_version


def test_migrations_build_exactly_the_orm_schema(new_db_url: Callable[[], str]) -> None:
    migrated = sa.create_engine(new_db_url())
    with migrated.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    with migrated.connect() as conn:
        opts = {"compare_type": True, "compare_server_default": True}
        opts["include_object"] = include_object_for(conn.dialect.name)
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, Base.metadata) == []
        migrated_indexes = _index_sql(conn)
    migrated.dispose()
    with storage.open_database(new_db_url()) as db, db.engine.connect() as conn:
        assert _index_sql(conn) == migrated_indexes  # same indexes, column order and DESC included
    assert len(migrated_indexes) >= 5


def _index_sql(conn: sa.Connection) -> dict[str, str]:
    if conn.dialect.name == "postgresql":
        query = (  # the schema's name left out: the two databases compared are two schemas here
            "SELECT indexname, replace(indexdef, current_schema() || '.', '') FROM pg_indexes"
            " WHERE schemaname = current_schema()"
        )
    else:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    return {name: " ".join(sql.replace('"', "").split()) for name, sql in conn.exec_driver_sql(query)}


def test_old_database_is_upgraded_with_its_data_intact(db_url: str) -> None:
    url = _old_database(db_url)
    assert "updated_at" not in _columns(url, "ratings")
    with storage.open_database(url) as db:
        assert db.schema_version == storage.SCHEMA_VERSION
        run = in_tx(db)
        (rating,) = run(storage.ratings_for_sample, 1)
        assert (rating.score, rating.rater_name, rating.source) == (0.75, "alice", "human")
        assert rating.updated_at == rating.created_at  # backfilled by revision 0002
        sample = run(storage.get_sample, 1)
        assert (sample.response_ids, sample.behaviour_logprobs, sample.human_ratings) == ((3, 4), (-0.5, -1.0), 1)
        run(storage.record_rating, 1, 1, -0.25)  # uses rating_history, new in 0002
        assert [r.score for r in run(storage.ratings_for_sample, 1)] == [-0.25]
        assert run(storage.claim_next_batch, 1, "trainer").samples[0].score == -0.25
    assert {"rating_history", "comparison_history"} <= set(sa.inspect(sa.create_engine(url)).get_table_names())


def test_old_database_is_refused_when_upgrading_is_not_allowed(db_url: str) -> None:
    url = _old_database(db_url)
    with pytest.raises(storage.SchemaVersionError, match="older than this code"):
        storage.open_database(url, upgrade=False)
    assert "updated_at" not in _columns(url, "ratings")  # untouched


def test_database_from_newer_code_is_refused(db_url: str) -> None:
    with storage.open_database(db_url) as db, db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(storage.SchemaVersionError, match="newer version"):
        storage.open_database(db_url)


def test_tables_without_a_version_are_refused(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    Base.metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(storage.SchemaVersionError, match="no schema revision"):
        storage.open_database(db_url)


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    url = _old_database(db_url)
    storage.open_database(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    engine.dispose()
    assert "updated_at" not in _columns(url, "ratings")
    with storage.open_database(url) as db:
        assert [r.score for r in in_tx(db)(storage.ratings_for_sample, 1)] == [0.75]

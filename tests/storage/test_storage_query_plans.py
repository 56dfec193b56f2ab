"""PostgreSQL walks an index in order for the rater queue and the batch claim, rather than sorting the open pool.

Before the partial indexes of migration 0006 both queries gathered every open sample and sorted them on each call
(`bench/storage.py --plan`): fine with a few hundred open samples, not with tens of thousands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text
from storage_helpers import rater, seed

import storage
from storage import Database

pytestmark = pytest.mark.parametrize("backend", ["postgresql"])

TRAINED = 20_000
OPEN = 3_000


def _fill(db: Database) -> None:
    """TRAINED samples in one finished batch, OPEN open ones scored by a reward model, all at a few versions."""
    prompt_ids, _ = seed(db, prompts=4, samples_per_prompt=1)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO training_batches (status, size, attempts, max_attempts, created_at)"
                " VALUES ('done', :n, 1, 3, now())"
            ),
            {"n": TRAINED},
        )
        batch = conn.execute(text("SELECT max(id) FROM training_batches")).scalar_one()
        insert = (
            "INSERT INTO samples (prompt_id, response_text, query_ids, response_ids, behaviour_logprobs,"
            " policy_version, generation_settings, created_at, human_n, auto_n, stale, batch_id)"
            " SELECT :prompt, 'r', '[1]', '[2]', '[-0.5]', i % 5, '{}', now(), 0, :auto, false, :batch"
            " FROM generate_series(1, :n) AS i"
        )
        conn.execute(text(insert), {"prompt": prompt_ids[0], "auto": 1, "batch": batch, "n": TRAINED})
        conn.execute(text(insert), {"prompt": prompt_ids[1], "auto": 1, "batch": None, "n": OPEN})
        conn.execute(text("ANALYZE"))


def _plans(db: Database, call: Callable[[Any], Any]) -> list[str]:
    """EXPLAIN of every SELECT the call runs, as SQLAlchemy sent it."""
    captured: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        if not executemany and " ".join(statement.split()).upper().startswith("SELECT SAMPLES.ID FROM SAMPLES"):
            captured.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        with db.session_factory.begin() as s:
            call(s)
    finally:
        event.remove(db.engine, "before_cursor_execute", grab)
    with db.engine.connect() as conn:
        return ["\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {q}", p).all()) for q, p in captured]


def _queue_plan(plans: list[str], index: str) -> str:
    matching = [p for p in plans if index in p]
    assert matching, "\n\n".join(plans)
    return matching[0]


def test_the_rater_queue_walks_the_open_queue_index(db: Database) -> None:
    _fill(db)
    someone = rater(db, "someone")
    plan = _queue_plan(_plans(db, lambda s: storage.next_sample_for_rater(s, someone)), "ix_samples_open_queue")
    assert "Sort" not in plan, plan


def test_the_batch_claim_walks_the_open_claim_index(db: Database) -> None:
    _fill(db)
    plan = _queue_plan(_plans(db, lambda s: storage.claim_next_batch(s, 8, "plan-test")), "ix_samples_open_claim")
    assert "Sort" not in plan, plan

"""Helpers shared by the feedback-store tests (a uniquely named module, importable from any test file)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import storage
from storage import Database, NewSample


def new_sample(prompt_id: int, version: int = 0, text: str = "a response", n_tokens: int = 3) -> NewSample:
    return NewSample(
        prompt_id=prompt_id,
        response_text=text,
        query_ids=[1, 2, 3],
        response_ids=list(range(10, 10 + n_tokens)),
        policy_version=version,
        behaviour_logprobs=[-0.5] * n_tokens,
        generation_settings={"temperature": 1.0, "max_new_tokens": 16},
    )


def seed(
    db: Database, *, prompts: int = 2, samples_per_prompt: int = 2, version: int = 0
) -> tuple[list[int], list[int]]:
    """Prompts p0..pN and samples for each; returns (prompt ids, sample ids)."""
    with db.session_factory.begin() as s:
        storage.add_prompts(s, [f"prompt {i}" for i in range(prompts)], source="test")
        prompt_ids = [p.id for p in storage.prompts_for_generation(s, prompts)]
        sample_ids = storage.add_samples(
            s,
            [new_sample(pid, version, f"response {pid}.{j}") for pid in prompt_ids for j in range(samples_per_prompt)],
        )
    return prompt_ids, sample_ids


def rater(db: Database, name: str, role: str = "rater") -> int:
    with db.session_factory.begin() as s:
        return storage.get_or_create_rater(s, name, role).id


def in_tx(db: Database) -> Callable[..., Any]:
    """run(fn, *args, **kw): call a repository function in its own transaction, as the app does."""

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with db.session_factory.begin() as s:
            return fn(s, *args, **kwargs)

    return run


def snapshot(db: Database) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table: equal snapshots before and after a refused call mean nothing was written."""
    from sqlalchemy import text

    from storage.schema import Base

    with db.engine.connect() as conn:
        return {
            name: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {name} ORDER BY 1")).all()]
            for name in Base.metadata.tables
        }

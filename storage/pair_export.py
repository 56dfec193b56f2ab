"""Preference pairs straight from the comparisons: one row per decisive answer, (prompt, chosen, rejected), the
explicit-prompt preference format TRL's RewardTrainer and DPOTrainer read (``prompt``/``chosen``/``rejected``
columns of plain text).

Only ``a_better`` and ``b_better`` answers make rows: a tie and a both-bad answer say nothing about which response
is preferred, so a (chosen, rejected) row from them would teach noise (they still shape the Bradley-Terry rewards
PPO trains on, app/bradley_terry.py). Each rater's answer is its own row, so a pair two raters agreed on appears
twice, and one they disagreed on appears both ways: that is the data the raters gave. Extra columns (ids, rater,
answer, time) identify the row; TRL ignores columns it does not use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from storage.schema import Pair, PairComparison, Prompt, Rater, Sample

if TYPE_CHECKING:
    import datasets

COMPARISON_COLUMNS: dict[str, str] = {
    "prompt": "string",
    "chosen": "string",
    "rejected": "string",
    "prompt_id": "int64",
    "chosen_sample_id": "int64",
    "rejected_sample_id": "int64",
    "chosen_version": "int64",
    "rejected_version": "int64",
    "rater": "string",
    "answer": "string",
    "comparison_id": "int64",
    "created_at": "string",
}
DECISIVE = ("a_better", "b_better")


def iter_comparison_pairs(s: Session, *, chunk_size: int = 1000) -> Iterator[dict[str, Any]]:
    """One row per decisive comparison, oldest first."""
    a, b = aliased(Sample), aliased(Sample)
    stmt = (
        select(PairComparison, Pair, Prompt.text, Rater.name, a, b)
        .join(Pair, Pair.id == PairComparison.pair_id)
        .join(Prompt, Prompt.id == Pair.prompt_id)
        .join(Rater, Rater.id == PairComparison.rater_id)
        .join(a, a.id == Pair.sample_a_id)
        .join(b, b.id == Pair.sample_b_id)
        .where(PairComparison.answer.in_(DECISIVE))
        .order_by(PairComparison.id)
        .execution_options(yield_per=chunk_size)
    )
    for comparison, pair, prompt, rater, sample_a, sample_b in s.execute(stmt).tuples():
        chosen, rejected = (sample_a, sample_b) if comparison.answer == "a_better" else (sample_b, sample_a)
        yield {
            "prompt": prompt,
            "chosen": chosen.response_text,
            "rejected": rejected.response_text,
            "prompt_id": pair.prompt_id,
            "chosen_sample_id": chosen.id,
            "rejected_sample_id": rejected.id,
            "chosen_version": chosen.policy_version,
            "rejected_version": rejected.policy_version,
            "rater": rater,
            "answer": comparison.answer,
            "comparison_id": comparison.id,
            "created_at": comparison.created_at.isoformat(),
        }


def comparisons_dataset(s: Session) -> datasets.Dataset:
    """The decisive comparisons as a ``datasets.Dataset`` (columns: ``COMPARISON_COLUMNS``)."""
    import datasets

    columns: dict[str, list[Any]] = {name: [] for name in COMPARISON_COLUMNS}
    for row in iter_comparison_pairs(s):
        for name in COMPARISON_COLUMNS:
            columns[name].append(row[name])
    features = datasets.Features({name: datasets.Value(dtype) for name, dtype in COMPARISON_COLUMNS.items()})
    return datasets.Dataset.from_dict(columns, features=features)


def export_comparisons(s: Session, path: str | os.PathLike[str]) -> int:
    """Write the decisive comparisons as JSON lines to ``path`` (atomically: a temp file renamed); the count."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in iter_comparison_pairs(s):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(target)
    return n

"""Give a team its data back: one row per rating (JSONL, parquet, ``datasets.Dataset``), and a pairwise view
(prompt, chosen, rejected) in the shape TRL's RewardTrainer and DPOTrainer take.

Use a read session (``db.read_session_factory``) for big exports: on SQLite it reads a WAL snapshot and
never blocks raters or the trainer. ``datasets`` and ``pyarrow`` are imported only when needed.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from storage.errors import InvalidInput
from storage.schema import HUMAN_SOURCE, Prompt, Rater, Rating, Sample, TrainingBatch

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

# Column name -> Arrow type of the per-rating export (JSONL writes times as ISO 8601 strings).
RATING_COLUMNS: dict[str, str] = {
    "rating_id": "int64",
    "sample_id": "int64",
    "prompt_id": "int64",
    "prompt": "string",
    "response": "string",
    "score": "float64",
    "rater": "string",
    "source": "string",
    "policy_version": "int64",
    "created_at": "timestamp[us, tz=UTC]",
    "updated_at": "timestamp[us, tz=UTC]",
    "training_score": "float64",
    "batch_id": "int64",
    "batch_status": "string",
    "stale": "bool",
}
PAIR_COLUMNS: dict[str, str] = {
    "prompt": "string",
    "chosen": "string",
    "rejected": "string",
    "score_chosen": "float64",
    "score_rejected": "float64",
    "prompt_id": "int64",
    "chosen_sample_id": "int64",
    "rejected_sample_id": "int64",
}


def iter_ratings(s: Session, *, chunk_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Every rating with its prompt, response, rater and the sample's training state, oldest first."""
    stmt = (
        select(
            Rating.id,
            Rating.sample_id,
            Sample.prompt_id,
            Prompt.text,
            Sample.response_text,
            Rating.score,
            Rater.name,
            Rating.source,
            Sample.policy_version,
            Rating.created_at,
            Rating.updated_at,
            Sample.train_score,
            Sample.batch_id,
            TrainingBatch.status,
            Sample.stale,
        )
        .join(Sample, Sample.id == Rating.sample_id)
        .join(Prompt, Prompt.id == Sample.prompt_id)
        .join(Rater, Rater.id == Rating.rater_id)
        .outerjoin(TrainingBatch, TrainingBatch.id == Sample.batch_id)
        .order_by(Rating.id)
        .execution_options(yield_per=chunk_size)
    )
    names = list(RATING_COLUMNS)
    for row in s.execute(stmt):
        yield dict(zip(names, row, strict=True))


def export_jsonl(s: Session, path: str | os.PathLike[str]) -> int:
    """Write one JSON object per rating to ``path`` (atomically: a temp file renamed); returns the count."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for row in iter_ratings(s):
            f.write(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(target)
    return n


def to_dataset(s: Session) -> datasets.Dataset:
    """All ratings as a ``datasets.Dataset`` (columns: ``RATING_COLUMNS``)."""
    return _dataset(_columns(iter_ratings(s), RATING_COLUMNS), RATING_COLUMNS)


def export_parquet(s: Session, path: str | os.PathLike[str]) -> int:
    """Write all ratings to a parquet file; returns the count."""
    import pyarrow.parquet as pq

    table = _arrow_table(_columns(iter_ratings(s), RATING_COLUMNS), RATING_COLUMNS)
    pq.write_table(table, os.fspath(path))
    return table.num_rows


def pairwise_dataset(
    s: Session,
    *,
    use_auto_scores: bool = True,
    min_margin: float = 0.0,
    max_pairs_per_prompt: int | None = None,
) -> datasets.Dataset:
    """Preference pairs from samples of the same prompt with different training scores.

    Each sample's score is the mixed-mode mean of all its ratings now (scoring.py). For every prompt, every
    pair whose scores differ by more than ``min_margin`` gives one row: the higher-scored response is
    ``chosen``. Columns ``prompt``/``chosen``/``rejected`` are TRL's explicit-prompt preference format.
    """
    if min_margin < 0:
        raise InvalidInput(f"min_margin must be >= 0, got {min_margin!r}")
    return _dataset(_columns(_pairs(s, use_auto_scores, min_margin, max_pairs_per_prompt), PAIR_COLUMNS), PAIR_COLUMNS)


def _pairs(s: Session, use_auto_scores: bool, min_margin: float, max_pairs: int | None) -> Iterator[dict[str, Any]]:
    by_prompt: dict[int, list[tuple[float, int, str]]] = defaultdict(list)
    for sample_id, prompt_id, response, score in _scored_samples(s, use_auto_scores):
        by_prompt[prompt_id].append((score, sample_id, response))
    prompts = dict(s.execute(select(Prompt.id, Prompt.text).where(Prompt.id.in_(by_prompt))).tuples().all())
    for prompt_id in sorted(by_prompt):
        ranked = sorted(by_prompt[prompt_id], key=lambda item: (-item[0], item[1]))
        made = 0
        for i, (hi, hi_id, chosen) in enumerate(ranked):
            for lo, lo_id, rejected in ranked[i + 1 :]:
                if max_pairs is not None and made >= max_pairs:
                    break
                if hi - lo > min_margin:
                    made += 1
                    yield {
                        "prompt": prompts[prompt_id],
                        "chosen": chosen,
                        "rejected": rejected,
                        "score_chosen": hi,
                        "score_rejected": lo,
                        "prompt_id": prompt_id,
                        "chosen_sample_id": hi_id,
                        "rejected_sample_id": lo_id,
                    }


def _scored_samples(s: Session, use_auto_scores: bool) -> Iterator[tuple[int, int, str, float]]:
    human = func.avg(case((Rating.source == HUMAN_SOURCE, Rating.score)))
    auto = func.avg(case((Rating.source != HUMAN_SOURCE, Rating.score)))
    means = select(Rating.sample_id, human.label("human"), auto.label("auto")).group_by(Rating.sample_id).subquery()
    stmt = (
        select(Sample.id, Sample.prompt_id, Sample.response_text, means.c.human, means.c.auto)
        .join(means, means.c.sample_id == Sample.id)
        .order_by(Sample.id)
    )
    for sample_id, prompt_id, response, human_mean, auto_mean in s.execute(stmt).tuples():
        score = human_mean if human_mean is not None else (auto_mean if use_auto_scores else None)
        if score is not None:
            yield sample_id, prompt_id, response, float(score)


def _columns(rows: Iterator[dict[str, Any]], schema: dict[str, str]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {name: [] for name in schema}
    for row in rows:
        for name in schema:
            columns[name].append(row[name])
    return columns


def _arrow_table(columns: dict[str, list[Any]], schema: dict[str, str]) -> pa.Table:
    import pyarrow as pa

    fields = [pa.field(name, _arrow_type(dtype)) for name, dtype in schema.items()]
    return pa.Table.from_pydict(columns, schema=pa.schema(fields))


def _dataset(columns: dict[str, list[Any]], schema: dict[str, str]) -> datasets.Dataset:
    import datasets

    features = datasets.Features({name: datasets.Value(dtype) for name, dtype in schema.items()})
    return datasets.Dataset.from_dict(columns, features=features)


def _arrow_type(dtype: str) -> pa.DataType:
    import pyarrow as pa

    if dtype.startswith("timestamp"):
        return pa.timestamp("us", tz="UTC")
    return {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_()}[dtype]


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot export {type(value).__name__}")

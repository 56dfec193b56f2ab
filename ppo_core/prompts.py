"""The shipped prompt set and loading of any prompt dataset into a `query` column."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_PROMPTS = Path(__file__).parent / "data" / "prompts.jsonl"
_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_prompts(
    source: str | os.PathLike[str] | None = None, query_column: str = "query", split: str = "train"
) -> Any:
    """A `datasets.Dataset` with a `query` column, from a csv/json/jsonl/parquet file or a hub dataset name.

    Defaults to the prompts shipped with the package. Raises ValueError for a missing file or column.
    """
    from datasets import load_dataset

    path = Path(source) if source is not None else DEFAULT_PROMPTS
    suffix = path.suffix.lower()
    if suffix in _FILE_BUILDERS:
        if not path.is_file():
            raise ValueError(f"prompt file not found: {path}")
        dataset = load_dataset(_FILE_BUILDERS[suffix], data_files=str(path), split=split)
    else:
        dataset = load_dataset(str(source), split=split)
    if query_column not in dataset.column_names:
        raise ValueError(f"column {query_column!r} not in the dataset; columns are {dataset.column_names}")
    if query_column != "query":
        if "query" in dataset.column_names:
            dataset = dataset.remove_columns("query")
        dataset = dataset.rename_column(query_column, "query")
    return dataset


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a prompt: through the chat template for instruct models, plain encoding otherwise."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    return [int(i) for i in tokenizer.encode(text)]

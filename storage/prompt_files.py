"""Read one text column from a prompt file: .txt (a prompt per line), .csv, .json, .jsonl, .parquet.

Each reader returns ``(row, value)`` pairs; ``row`` is the position in the file (for .txt and .jsonl the
0-based line number, so blank lines do not shift later rows), which with the source makes re-imports
idempotent. Values are returned as found; ``prompts.add_prompts`` validates them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from storage.errors import InvalidPrompt

Rows = list[tuple[int, object]]


def read_prompt_file(path: Path, column: str) -> Rows:
    readers: dict[str, Callable[[Path, str], Rows]] = {
        ".txt": _read_txt,
        ".csv": _read_csv,
        ".json": _read_json,
        ".jsonl": _read_jsonl,
        ".parquet": _read_parquet,
    }
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise InvalidPrompt(f"unsupported prompt file type {path.suffix!r}; use one of {sorted(readers)}")
    if not path.is_file():
        raise InvalidPrompt(f"prompt file {path} does not exist")
    return reader(path, column)


def _read_txt(path: Path, column: str) -> Rows:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(i, line) for i, line in enumerate(lines) if line.strip()]


def _read_csv(path: Path, column: str) -> Rows:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise InvalidPrompt(f"{path} has no column {column!r} (columns: {reader.fieldnames})")
        return [(i, record[column]) for i, record in enumerate(reader)]


def _read_jsonl(path: Path, column: str) -> Rows:
    rows: Rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            rows.append((i, _field(_parse(line, path, i), column, path, i)))
    return rows


def _read_json(path: Path, column: str) -> Rows:
    data = _parse(path.read_text(encoding="utf-8"), path, 0)
    if isinstance(data, dict):  # {"prompt": [...]} column layout
        values = data.get(column)
        if not isinstance(values, list):
            raise InvalidPrompt(f"{path}: expected a list under key {column!r}")
        return list(enumerate(values))
    if isinstance(data, list):  # [{"prompt": ...}, ...] record layout
        return [(i, _field(record, column, path, i)) for i, record in enumerate(data)]
    raise InvalidPrompt(f"{path}: expected a JSON list of records or an object of columns")


def _read_parquet(path: Path, column: str) -> Rows:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if column not in names:
        raise InvalidPrompt(f"{path} has no column {column!r} (columns: {names})")
    return list(enumerate(pq.read_table(path, columns=[column]).column(column).to_pylist()))


def _parse(raw: str, path: Path, line: int) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise InvalidPrompt(f"{path}:{line + 1}: invalid JSON: {err}") from err


def _field(record: object, column: str, path: Path, row: int) -> object:
    if not isinstance(record, dict) or column not in record:
        raise InvalidPrompt(f"{path}: row {row} has no field {column!r}")
    return record[column]

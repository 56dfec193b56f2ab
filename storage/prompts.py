"""Prompts: idempotent import (from a list, a ``datasets.Dataset`` or a file) and picking what to generate for."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from storage.conversions import prompt_record
from storage.errors import InvalidPrompt
from storage.prompt_files import read_prompt_file
from storage.records import PromptImport, PromptRecord
from storage.schema import Prompt, utcnow
from storage.validation import MAX_PROMPT_CHARS, check_int, check_text

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)


def add_prompts(
    s: Session,
    texts: Iterable[object],
    *,
    source: str,
    rows: Iterable[int] | None = None,
    max_chars: int = MAX_PROMPT_CHARS,
) -> PromptImport:
    """Add prompts from ``source`` (a dataset or file name); ``rows`` defaults to 0, 1, 2, ...

    Idempotent: a (source, row) already stored is left as it is, so re-importing on every start adds only
    new rows. Every text is validated before anything is written (``InvalidPrompt`` names the first bad row).
    """
    source = check_text(source, "prompt source", InvalidPrompt, max_chars=500)
    values = list(texts)
    row_ids = list(range(len(values))) if rows is None else list(rows)
    row_ids = [check_int(r, "prompt row", InvalidPrompt) for r in row_ids]
    if len(row_ids) != len(values) or len(set(row_ids)) != len(row_ids):
        raise InvalidPrompt("rows must be unique, one per prompt")
    checked = [(row, _check_prompt(value, source, row, max_chars)) for row, value in zip(row_ids, values)]
    existing = dict(s.execute(select(Prompt.row, Prompt.text).where(Prompt.source == source)).tuples().all())
    new = [(row, text) for row, text in checked if row not in existing]
    changed = sum(1 for row, text in checked if row in existing and existing[row] != text)
    if changed:
        log.warning("%d prompts of %s changed text since import; the stored text is kept", changed, source)
    if new:
        now = utcnow()
        s.execute(
            insert(Prompt),
            [{"text": t, "source": source, "row": r, "sample_count": 0, "created_at": now} for r, t in new],
        )
    return PromptImport(source=source, added=len(new), existing=len(checked) - len(new), changed=changed)


def add_prompts_from_dataset(
    s: Session,
    dataset: datasets.Dataset,
    column: str = "prompt",
    *,
    source: str | None = None,
    max_chars: int = MAX_PROMPT_CHARS,
) -> PromptImport:
    """Add one text column of a ``datasets.Dataset``; source defaults to ``<dataset name>:<split>``."""
    if column not in dataset.column_names:
        raise InvalidPrompt(f"dataset has no column {column!r} (columns: {dataset.column_names})")
    if source is None:
        name = dataset.info.dataset_name
        if not name:
            raise InvalidPrompt("this dataset has no name; pass source='...' so re-imports are recognised")
        source = f"{name}:{dataset.split}" if dataset.split is not None else name
    return add_prompts(s, list(dataset[column]), source=source, max_chars=max_chars)


def add_prompts_from_file(
    s: Session,
    path: str | os.PathLike[str],
    column: str = "prompt",
    *,
    source: str | None = None,
    max_chars: int = MAX_PROMPT_CHARS,
) -> PromptImport:
    """Add prompts from a .txt/.csv/.json/.jsonl/.parquet file; source defaults to its absolute path."""
    file = Path(path).expanduser().resolve()
    pairs = read_prompt_file(file, column)
    return add_prompts(
        s, [v for _, v in pairs], rows=[r for r, _ in pairs], source=source or str(file), max_chars=max_chars
    )


def prompts_for_generation(s: Session, n: int) -> list[PromptRecord]:
    """The ``n`` prompts with the fewest samples (ties: oldest first): round robin over the prompt set."""
    stmt = select(Prompt).order_by(Prompt.sample_count, Prompt.id).limit(check_int(n, "n", minimum=1))
    return [prompt_record(p) for p in s.scalars(stmt)]


def count_prompts(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(Prompt)) or 0


def _check_prompt(value: object, source: str, row: int, max_chars: int) -> str:
    try:
        return check_text(value, "prompt", InvalidPrompt, max_chars=max_chars)
    except InvalidPrompt as err:
        raise InvalidPrompt(f"{source} row {row}: {err}") from None

"""Start-up steps that can fail on bad options, each turned into a one-line `StartupError` for the CLI."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from app.checkpoints import ResumePoint
from app.errors import StartupError
from app.settings import AppSettings
from ppo_core.prompts import DEFAULT_PROMPTS, load_prompts
from storage.engine import Database, open_database
from storage.errors import StorageError
from storage.history import newest_version
from storage.prompts import add_prompts
from storage.records import PromptImport

log = logging.getLogger(__name__)


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:400]


def open_store(settings: AppSettings) -> Database:
    try:
        return open_database(settings.db_url)
    except (SQLAlchemyError, StorageError, OSError, ValueError) as err:
        raise StartupError(f"cannot open the database {settings.db_url!r}: {first_line(err)}") from err


@dataclass(frozen=True)
class PromptSet:
    source: str
    imported: PromptImport
    first_prompt: str


def dataset_source(settings: AppSettings) -> str:
    """A stable name for the prompt set, so re-imports on every start add only new rows."""
    if settings.dataset is None:
        label = f"ppo_core:{DEFAULT_PROMPTS.name}"
    elif os.path.exists(settings.dataset):
        label = str(Path(settings.dataset).resolve())
    else:
        label = settings.dataset
    return f"{label}[{settings.query_column}]"[-500:]


def import_prompts(db: Database, settings: AppSettings) -> PromptSet:
    """Load the dataset's prompt column and add it to storage idempotently."""
    try:
        dataset = load_prompts(settings.dataset, settings.query_column)
    except ValueError as err:
        raise StartupError(first_line(err)) from err
    except Exception as err:  # datasets raises many kinds (FileNotFoundError, DatasetNotFoundError, ...)
        raise StartupError(f"cannot load the dataset {settings.dataset!r}: {first_line(err)}") from err
    rows = [(i, text) for i, text in enumerate(dataset["query"]) if isinstance(text, str) and text.strip()]
    if not rows:
        raise StartupError(f"the dataset has no text in column {settings.query_column!r}")
    if len(rows) < len(dataset):
        log.warning("%d rows without text in column %r skipped", len(dataset) - len(rows), settings.query_column)
    source = dataset_source(settings)
    try:
        with db.session_factory.begin() as s:
            imported = add_prompts(s, [t for _, t in rows], rows=[i for i, _ in rows], source=source)
    except StorageError as err:
        raise StartupError(f"cannot import the prompts: {first_line(err)}") from err
    log.info("prompts from %s: %d new, %d already stored", source, imported.added, imported.existing)
    return PromptSet(source, imported, rows[0][1])


def resume_version(db: Database, resume: ResumePoint | None) -> int:
    """The version number of the weights we start with.

    Normally the checkpoint's. If storage knows of newer versions (steps that no checkpoint holds, recorded or
    already retired to `lost_steps` by app.recovery), those steps' weights are gone: we resume the checkpoint's
    weights under a fresh number above every version ever produced, so that a version number never names two
    different sets of weights. The answer is the same before and after `recover_training`.
    """
    with db.read_session_factory.begin() as s:
        newest = newest_version(s)
    start = resume.state.version if resume is not None else 0
    if newest <= start:
        return start
    log.warning(
        "storage has steps up to version %d but the newest checkpoint is version %d: the steps in between were "
        "lost in a crash; continuing from the checkpoint's weights as version %d",
        newest,
        start,
        newest + 1,
    )
    return newest + 1

"""Published policy versions (revision 0005): the trainer's announcements to the rating front-ends.

The trainer writes each new version's weights to the shared weights folder (renamed into place and fsynced), then
calls ``announce_version`` in a transaction of its own; front-ends poll ``newest_published`` and load what is
new. Versions only grow: announcing a version at or below the newest is refused (``InvalidInput``), so a
front-end never goes back to older weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.errors import InvalidInput
from storage.queries import resolve_now
from storage.schema import PublishedVersion
from storage.validation import MAX_NAME_CHARS, check_int, check_text

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PublishedRecord:
    version: int
    path: str
    sha256: str
    published_by: str
    published_at: datetime


def _record(row: PublishedVersion) -> PublishedRecord:
    return PublishedRecord(row.version, row.path, row.sha256, row.published_by, row.published_at)


def announce_version(
    s: Session, version: int, path: str, sha256: str, published_by: str, *, now: datetime | None = None
) -> PublishedRecord:
    version = check_int(version, "version", minimum=0)
    path = check_text(path, "path", InvalidInput, max_chars=1000)
    published_by = check_text(published_by, "published_by", InvalidInput, max_chars=MAX_NAME_CHARS)
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InvalidInput("sha256 must be 64 lowercase hex digits")
    newest = s.scalar(select(func.max(PublishedVersion.version)))
    if newest is not None and version <= newest:
        raise InvalidInput(f"version {version} is not newer than the published version {newest}")
    row = PublishedVersion(
        version=version, path=path, sha256=sha256, published_by=published_by, published_at=resolve_now(now)
    )
    s.add(row)
    s.flush()
    return _record(row)


def newest_published(s: Session) -> PublishedRecord | None:
    row = s.scalars(select(PublishedVersion).order_by(PublishedVersion.version.desc()).limit(1)).first()
    return None if row is None else _record(row)


def list_published(s: Session) -> list[PublishedRecord]:
    """Every announced version, oldest first."""
    return [_record(r) for r in s.scalars(select(PublishedVersion).order_by(PublishedVersion.version))]


def forget_published(s: Session, keep: int) -> list[PublishedRecord]:
    """Forget all but the newest ``keep`` versions (their files may then be deleted); returns the forgotten."""
    keep = check_int(keep, "keep", minimum=1)
    rows = s.scalars(select(PublishedVersion).order_by(PublishedVersion.version.desc()).offset(keep)).all()
    old = [_record(r) for r in rows]
    if old:
        s.execute(delete(PublishedVersion).where(PublishedVersion.version.in_([r.version for r in old])))
    return old

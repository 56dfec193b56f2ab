"""Admin switches shared by every process of a deployment (revision 0008).

An admin switches the rating mode or the reward source on one front-end; that process applies it at once and
writes it here, and every other process (the other front-ends, the trainer) follows on its next poll
(app.shared_switches). One row per switch holds the latest value, who set it and when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.engine import upsert
from storage.errors import InvalidInput
from storage.queries import resolve_now
from storage.schema import AdminSwitch
from storage.validation import MAX_NAME_CHARS, MAX_SOURCE_CHARS, check_text

RATING_MODE: Final = "rating_mode"
REWARD_SOURCE: Final = "reward_source"
SWITCHES: Final = (RATING_MODE, REWARD_SOURCE)


@dataclass(frozen=True)
class SwitchRecord:
    name: str
    value: str
    changed_by: str
    changed_at: datetime


def set_switch(s: Session, name: str, value: str, changed_by: str, *, now: datetime | None = None) -> SwitchRecord:
    """Record `value` as the switch's latest (InvalidInput for an unknown switch or bad text; nothing written).

    One statement, insert or update (`ON CONFLICT DO UPDATE` on both backends): two admins switching at the same
    moment both succeed, and the later commit is the value every process follows."""
    if name not in SWITCHES:
        raise InvalidInput(f"unknown switch {name!r}; known: {', '.join(SWITCHES)}")
    value = check_text(value, "value", InvalidInput, max_chars=MAX_SOURCE_CHARS)
    changed_by = check_text(changed_by, "changed_by", InvalidInput, max_chars=MAX_NAME_CHARS)
    record = SwitchRecord(name, value, changed_by, resolve_now(now))
    latest = {"name": name, "value": record.value, "changed_by": record.changed_by, "changed_at": record.changed_at}
    upsert(s, AdminSwitch, AdminSwitch.name, latest)
    return record


def read_switches(s: Session) -> dict[str, SwitchRecord]:
    """Every switch an admin has set, by name (an empty dict before the first)."""
    rows = s.scalars(select(AdminSwitch)).all()
    return {r.name: SwitchRecord(r.name, r.value, r.changed_by, r.changed_at) for r in rows}

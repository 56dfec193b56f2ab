"""Raters: people (role "rater" or "admin") and reward models (role "model", named ``reward:<source>``)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.conversions import rater_record
from storage.errors import InvalidInput, UnknownRater
from storage.records import RaterRecord
from storage.schema import HUMAN_SOURCE, MODEL_RATER_PREFIX, ROLES, Rater, utcnow
from storage.validation import MAX_NAME_CHARS, MAX_SOURCE_CHARS, check_id, check_text

log = logging.getLogger(__name__)


def get_or_create_rater(s: Session, name: str, role: str = "rater") -> RaterRecord:
    """The rater called ``name``, created if new; an existing person's role is set to ``role``."""
    name = check_text(name, "rater name", InvalidInput, max_chars=MAX_NAME_CHARS).strip()
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {ROLES}, got {role!r}")
    if (role == "model") != name.startswith(MODEL_RATER_PREFIX):
        raise InvalidInput(f"reward-model raters, and only they, are named '{MODEL_RATER_PREFIX}<source>'")
    rater = s.scalars(select(Rater).where(Rater.name == name)).one_or_none()
    if rater is None:
        rater = Rater(name=name, role=role, created_at=utcnow())
        s.add(rater)
        s.flush()
    elif rater.role != role:  # the caller's settings (e.g. the app's admin list) are the source of truth
        log.info("rater %r: role %r -> %r", name, rater.role, role)
        rater.role = role
    return rater_record(rater)


def get_or_create_model_rater(s: Session, source: str) -> RaterRecord:
    """The rater row a reward model's scores are stored under: ``reward:<source>``, role "model"."""
    source = check_model_source(source)
    return get_or_create_rater(s, MODEL_RATER_PREFIX + source, role="model")


def set_rater_role(s: Session, rater_id: int, role: str) -> RaterRecord:
    """Change a person's role between "rater" and "admin"."""
    rater = load_rater(s, rater_id)
    if role not in ("rater", "admin") or rater.role == "model":
        raise InvalidInput(f"only people change role, to 'rater' or 'admin' (got {role!r} for {rater.name!r})")
    rater.role = role
    return rater_record(rater)


def get_rater(s: Session, rater_id: int) -> RaterRecord:
    return rater_record(load_rater(s, rater_id))


def list_raters(s: Session) -> list[RaterRecord]:
    return [rater_record(r) for r in s.scalars(select(Rater).order_by(Rater.id))]


def load_rater(s: Session, rater_id: int) -> Rater:
    """The live row, for repository code; raises ``UnknownRater``."""
    rater = s.get(Rater, check_id(rater_id, "rater_id", UnknownRater))
    if rater is None:
        raise UnknownRater(f"no rater with id {rater_id}")
    return rater


def check_model_source(source: object) -> str:
    source = check_text(source, "reward model source", InvalidInput, max_chars=MAX_SOURCE_CHARS).strip()
    if source == HUMAN_SOURCE:
        raise InvalidInput(f"{HUMAN_SOURCE!r} is the source of people's ratings, not a reward model name")
    return source


def expected_source(rater: Rater) -> str:
    """The only ``source`` a rater's ratings may carry: "human" for people, the model name for models."""
    if rater.role == "model":
        return rater.name.removeprefix(MODEL_RATER_PREFIX)
    return HUMAN_SOURCE

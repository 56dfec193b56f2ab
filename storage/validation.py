"""Input checks shared by the record types and the repository functions.

Each check raises the named ``ValueError`` subclass from ``storage.errors`` and returns the value in the
plain form that is stored (``int``/``float``/``list``), so numpy scalars and tuples are accepted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import Any

from storage.errors import InvalidInput, InvalidScore

DEFAULT_SCORE_RANGE: tuple[float, float] = (-1.0, 1.0)
MAX_PROMPT_CHARS = 20_000
MAX_RESPONSE_CHARS = 100_000
MAX_NAME_CHARS = 200
MAX_SOURCE_CHARS = 190  # fits the rater name reward:<source> in 200
MAX_SQL_INT = 2**31 - 1  # the largest value of SQL's INTEGER on every backend (4 bytes on PostgreSQL, where ids
# and versions are INTEGER; SQLite's is 8): beyond it the database or its driver fails with an overflow error


def is_real(value: object) -> bool:
    """A real number that is not a bool (``True`` is an ``int`` in Python, never a score)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def finite_float(value: object) -> float | None:
    """``value`` as a finite float; None for a non-number, a bool, NaN, an infinity, or a number too large for a
    float (``float(10**400)`` raises OverflowError, which is no ValueError)."""
    if not is_real(value):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None


def check_score_range(score_range: tuple[float, float]) -> tuple[float, float]:
    bounds = [finite_float(v) for v in score_range] if isinstance(score_range, tuple | list) else []
    if len(bounds) != 2 or bounds[0] is None or bounds[1] is None:
        raise InvalidScore(f"score_range must be two finite numbers, got {score_range!r}")
    lo, hi = bounds[0], bounds[1]
    if lo >= hi:
        raise InvalidScore(f"score_range must have low < high, got {score_range!r}")
    return lo, hi


def check_score(score: object, score_range: tuple[float, float]) -> float:
    """A finite real number inside ``score_range`` (inclusive), as a float."""
    lo, hi = check_score_range(score_range)
    if not is_real(score):
        raise InvalidScore(f"score must be a number, got {type(score).__name__} {score!r}")
    value = finite_float(score)
    if value is None:
        raise InvalidScore(f"score must be a finite number, got {_short(score)}")
    if not lo <= value <= hi:
        raise InvalidScore(f"score {value!r} is outside the configured range [{lo}, {hi}]")
    return value


def check_int(value: object, what: str, error: type[InvalidInput] = InvalidInput, *, minimum: int = 0) -> int:
    """An int (not bool) >= ``minimum`` (and at most ``MAX_SQL_INT``): counts, limits, versions."""
    if not isinstance(value, Integral) or isinstance(value, bool) or not minimum <= int(value) <= MAX_SQL_INT:
        raise error(f"{what} must be an int >= {minimum}, got {_short(value)}")
    return int(value)


def check_id(value: object, what: str, error: type[InvalidInput] = InvalidInput) -> int:
    """A database id: an int (not bool), positive, at most ``MAX_SQL_INT``."""
    if not isinstance(value, Integral) or isinstance(value, bool) or not 1 <= int(value) <= MAX_SQL_INT:
        raise error(f"{what} must be a positive integer id, got {_short(value)}")
    return int(value)


def check_int_list(values: object, what: str, error: type[InvalidInput], *, allow_empty: bool = False) -> list[int]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise error(f"{what} must be a sequence of ints, got {type(values).__name__}")
    if not values and not allow_empty:
        raise error(f"{what} must not be empty")
    out: list[int] = []
    for i, v in enumerate(values):
        if not isinstance(v, Integral) or isinstance(v, bool) or int(v) < 0:
            raise error(f"{what}[{i}] must be a non-negative int, got {v!r}")
        out.append(int(v))
    return out


def check_float_list(values: object, what: str, error: type[InvalidInput]) -> list[float]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise error(f"{what} must be a sequence of floats, got {type(values).__name__}")
    out: list[float] = []
    for i, v in enumerate(values):
        number = finite_float(v)
        if number is None:
            raise error(f"{what}[{i}] must be a finite number, got {_short(v)}")
        out.append(number)
    return out


def check_json_dict(value: object, what: str, error: type[InvalidInput]) -> dict[str, Any]:
    """A mapping with str keys that round-trips through strict JSON (no NaN, no objects)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise error(f"{what} must be a mapping with str keys, got {type(value).__name__}")
    try:
        return dict(json.loads(json.dumps(dict(value), allow_nan=False)))
    except (TypeError, ValueError) as err:
        raise error(f"{what} must be plain JSON data (str/number/bool/list/dict, finite): {err}") from err


def check_number_dict(
    value: object, what: str, error: type[InvalidInput], *, non_negative: bool = False
) -> dict[str, float]:
    """A mapping of str to finite floats (training stats, durations)."""
    if not isinstance(value, Mapping):
        raise error(f"{what} must be a mapping of str to numbers, got {type(value).__name__}")
    out: dict[str, float] = {}
    for key, v in value.items():
        if not isinstance(key, str):
            raise error(f"{what} keys must be str, got {key!r}")
        number = finite_float(v)
        if number is None:
            raise error(f"{what}[{key!r}] must be a finite number, got {_short(v)}")
        if non_negative and number < 0:
            raise error(f"{what}[{key!r}] must be >= 0, got {v!r}")
        out[key] = number
    return out


def check_text(value: object, what: str, error: type[InvalidInput], *, max_chars: int) -> str:
    """Non-empty (after stripping) text of at most ``max_chars`` characters that every backend can store (no NUL
    character, which PostgreSQL's text refuses; no lone surrogate, which is not UTF-8); returned unchanged."""
    if not isinstance(value, str):
        raise error(f"{what} must be text, got {type(value).__name__} {_short(value)}")
    if not value.strip():
        raise error(f"{what} must not be empty")
    if len(value) > max_chars:
        raise error(f"{what} is {len(value)} characters long; the limit is {max_chars}")
    if "\x00" in value:
        raise error(f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise error(f"{what} is not valid Unicode text (a lone surrogate at {err.start})") from None
    return value


def _short(value: object) -> str:
    """A value for an error message, cut short (the repr of a 400-digit number is not worth reading)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."

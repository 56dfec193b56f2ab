"""Property-based checks of storage's validators and of the repository functions that use them: any input either
validates to the documented form or raises the documented ``ValueError`` subclass, never anything else, and a
refused call writes nothing (the refused transaction is committed, then every table is compared)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_helpers import rater, seed, snapshot

import storage
from storage import Database
from storage.errors import InvalidInput, InvalidPrompt, InvalidScore, UnknownRater, UnknownSample
from storage.validation import (
    MAX_NAME_CHARS,
    MAX_SOURCE_CHARS,
    MAX_SQL_INT,
    check_id,
    check_int,
    check_score,
    check_score_range,
    check_text,
)

# The database fixture is shared by a test's examples on purpose: each example checks its own before/after.
DB_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),  # too large for a float
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=32).map(np.float32),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.fractions(),
    st.decimals(allow_nan=True, allow_infinity=True),
)
anything = st.one_of(
    numbers,
    st.none(),
    st.booleans(),
    st.text(),
    st.binary(),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.floats()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
texts = st.one_of(
    st.text(),
    st.sampled_from(["", " \t\n", "human", " human ", "vader", " reward:x ", "reward:", "a\x00b", "a\ud800b"]),
    st.text(st.characters(codec=None, exclude_categories=[]), max_size=8),  # NUL, lone surrogates
    st.text(min_size=185, max_size=260),
    anything,
)


Errors = type[BaseException] | tuple[type[BaseException], ...]


def _one_of(error: type[BaseException], fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn's value, or None when it raised ``error``; any other exception fails the test."""
    try:
        return fn(*args, **kwargs)
    except error:
        return None


def _refused_writes_nothing(db: Database, error: Errors, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a repository function in its own transaction; if it raises ``error`` the transaction is still
    committed, and no table may have changed. Returns its value, or None when refused."""
    before = snapshot(db)
    with db.session_factory.begin() as s:
        try:
            return fn(s, *args)
        except error:
            pass
    assert snapshot(db) == before
    return None


# -------------------------------------------------------------------------------------------- pure validators
@given(anything)
def test_scores_are_finite_floats_in_range_or_invalid_score(value: object) -> None:
    got = _one_of(InvalidScore, check_score, value, (-1.0, 1.0))
    if got is not None:
        assert type(got) is float and -1.0 <= got <= 1.0 and got == float(value)  # type: ignore[arg-type]
        assert not isinstance(value, bool | str | bytes)


@given(st.tuples(anything, anything) | st.lists(anything, max_size=3).map(tuple))
def test_score_ranges_are_two_increasing_finite_numbers_or_invalid_score(bounds: tuple[Any, ...]) -> None:
    got = _one_of(InvalidScore, check_score_range, bounds)
    if got is not None:
        lo, hi = got
        assert type(lo) is float and type(hi) is float and lo < hi and (lo, hi) == tuple(float(b) for b in bounds)


@given(anything)
def test_ids_are_positive_ints_or_the_named_error(value: object) -> None:
    got = _one_of(UnknownSample, check_id, value, "sample_id", UnknownSample)
    if got is not None:
        assert type(got) is int and 1 <= got <= MAX_SQL_INT and got == value and not isinstance(value, bool)


@given(anything, st.integers(-3, 3))
def test_counts_are_ints_at_least_the_minimum_or_invalid_input(value: object, minimum: int) -> None:
    got = _one_of(InvalidInput, check_int, value, "limit", minimum=minimum)
    if got is not None:
        assert type(got) is int and minimum <= got <= MAX_SQL_INT and got == value and not isinstance(value, bool)


@given(texts, st.integers(1, 300))
def test_texts_are_returned_unchanged_when_non_blank_and_short_enough(value: object, limit: int) -> None:
    got = _one_of(InvalidPrompt, check_text, value, "prompt", InvalidPrompt, max_chars=limit)
    if got is not None:
        assert got is value and isinstance(got, str) and got.strip() and len(got) <= limit and "\x00" not in got


@given(texts)
def test_model_sources_are_stripped_names_other_than_human(value: object) -> None:
    got = _one_of(InvalidInput, storage.raters.check_model_source, value)
    if got is not None:
        assert isinstance(value, str) and got == value.strip() and got != "human" and 0 < len(got) <= MAX_SOURCE_CHARS


# ------------------------------------------------------------------------------------- repository functions
@DB_SETTINGS
@given(score=anything)
def test_record_rating_stores_the_score_or_refuses_and_writes_nothing(db: Database, score: object) -> None:
    if not snapshot(db)["samples"]:
        seed(db, prompts=1, samples_per_prompt=1)
        rater(db, "alice")
    got = _refused_writes_nothing(db, InvalidScore, storage.record_rating, 1, 1, score)
    if got is not None:
        assert got.score == float(score)  # type: ignore[arg-type]
        assert [r.score for r in storage_ratings(db)] == [got.score]


def storage_ratings(db: Database) -> list[storage.RatingRecord]:
    with db.read_session_factory.begin() as s:
        return storage.ratings_for_sample(s, 1)


@DB_SETTINGS
@given(first=st.sampled_from([-1.0, 0.0, 0.5, 1.0]), second=st.sampled_from([-1.0, 0.0, 0.5, 1.0]))
def test_a_different_score_without_replace_is_refused_and_writes_nothing(
    db: Database, first: float, second: float
) -> None:
    if not snapshot(db)["samples"]:
        seed(db, prompts=1, samples_per_prompt=1)
        rater(db, "alice")
    with db.session_factory.begin() as s:
        stored = storage.record_rating(s, 1, 1, first)  # replace=True: whatever it was, now `first`
    got = _refused_writes_nothing(db, storage.AlreadyRated, _rate_once, second)
    assert (got is None) == (second != first)
    assert [r.score for r in storage_ratings(db)] == [first] and (got is None or got.id == stored.id)


def _rate_once(s: Any, score: float) -> storage.RatingRecord:
    return storage.record_rating(s, 1, 1, score, replace=False)


@DB_SETTINGS
@given(name=texts, role=st.sampled_from(["rater", "admin", "model", "superuser", ""]))
def test_rater_names_are_stored_stripped_or_refused_writing_nothing(db: Database, name: object, role: str) -> None:
    got = _refused_writes_nothing(db, InvalidInput, storage.get_or_create_rater, name, role)
    if got is not None:
        assert isinstance(name, str) and got.name == name.strip() and 0 < len(got.name) <= MAX_NAME_CHARS
        assert got.role == role and (role == "model") == got.name.startswith("reward:")


@DB_SETTINGS
@given(prompts=st.lists(texts, min_size=1, max_size=3))
def test_prompts_are_stored_as_given_or_refused_writing_nothing(db: Database, prompts: list[object]) -> None:
    got = _refused_writes_nothing(db, InvalidPrompt, _add_prompts, prompts)
    if got is not None:
        assert got.added + got.existing == len(prompts)
        assert all(isinstance(p, str) and p.strip() for p in prompts)


def _add_prompts(s: Any, prompts: list[object]) -> storage.PromptImport:
    return storage.add_prompts(s, prompts, source="properties", max_chars=250)


@DB_SETTINGS
@given(sample_id=anything | st.integers(-2, 4), rater_id=anything | st.integers(-2, 4) | st.just(MAX_SQL_INT + 1))
def test_offer_sample_takes_ids_or_refuses_writing_nothing(db: Database, sample_id: object, rater_id: object) -> None:
    if not snapshot(db)["samples"]:
        seed(db, prompts=1, samples_per_prompt=2)
        rater(db, "alice")
    got = _refused_writes_nothing(db, (UnknownSample, UnknownRater), storage.offer_sample, rater_id, sample_id)
    if got is not None:
        assert got.id == sample_id and rater_id == 1


@DB_SETTINGS
@given(sample_id=st.integers(-1, 3) | anything, source=texts, reason=texts)
def test_quarantine_takes_a_sample_source_and_reason_or_refuses_writing_nothing(
    db: Database, sample_id: object, source: object, reason: object
) -> None:
    if not snapshot(db)["samples"]:
        seed(db, prompts=1, samples_per_prompt=2)
    got = _refused_writes_nothing(db, InvalidInput, storage.quarantine_sample, sample_id, source, reason)
    if got is not None:
        with db.read_session_factory.begin() as s:
            assert storage.quarantine_reasons(s, source)[sample_id]  # type: ignore[arg-type,index]


def test_numbers_beyond_what_a_float_or_the_database_holds_are_refused() -> None:
    assert check_score(Fraction(1, 4), (-1, 1)) == 0.25 and type(check_score(np.float32(0.5), (-1, 1))) is float
    with pytest.raises(InvalidScore):
        check_score(10**400, (-1, 1))  # was an OverflowError from float()
    with pytest.raises(UnknownSample):
        check_id(2**63, "sample_id", UnknownSample)  # was an OverflowError from the SQLite driver
    with pytest.raises(UnknownSample):
        check_id(2**31, "sample_id", UnknownSample)  # out of range for PostgreSQL's INTEGER
    with pytest.raises(InvalidInput):
        check_int(2**63, "limit")


@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b"])
def test_text_no_backend_can_store_is_refused(db: Database, text: str) -> None:
    with pytest.raises(InvalidPrompt):  # was psycopg's DataError on PostgreSQL, UnicodeEncodeError on SQLite
        _refused_writes_nothing(db, (), _add_prompts, [text])
    with pytest.raises(InvalidInput):
        _refused_writes_nothing(db, (), storage.get_or_create_rater, text, "rater")

"""`AppSettings` validation, property-based: any values either build settings or raise ValueError with one line
that names the option; the exposure, admin and token rules hold for every host, name and token; and every valid
settings survives the round trip through the command line."""

from __future__ import annotations

import dataclasses
import ipaddress
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.cli import parse_settings
from app.settings import AppSettings, is_loopback

FIELDS = {f.name: f for f in dataclasses.fields(AppSettings)}

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.builds(Path, st.text()),
    st.lists(st.text(), max_size=3).map(tuple),
    st.lists(st.tuples(st.text(), st.text()), max_size=3).map(tuple),
    st.sampled_from(["auto", "cpu", "cuda", "127.0.0.1", "0.0.0.0", "::1", "admin", "a" * 16]),
)
"""Values of every type a field has (and of the types it does not), and a few of its favourite strings."""


@given(st.fixed_dictionaries({}, optional=dict.fromkeys(FIELDS, ANY_VALUE)))
@settings(suppress_health_check=[HealthCheck.too_slow])  # the first draw of unicode text builds a table (~1 s)
def test_any_values_build_settings_or_raise_one_line_naming_the_option(kwargs: dict[str, Any]) -> None:
    try:
        AppSettings(**kwargs)
    except ValueError as err:
        message = str(err)
        assert message and "\n" not in message and "\r" not in message
        assert message.startswith(("--", "refusing ")), message


@given(st.ip_addresses())
def test_without_auth_only_loopback_addresses_are_served(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    loopback = address in ipaddress.ip_network("127.0.0.0/8") or address == ipaddress.IPv6Address("::1")
    assert is_loopback(str(address)) == loopback
    try:
        AppSettings(host=str(address))
    except ValueError as err:
        assert not loopback and str(err).startswith(f"refusing to serve on {address} without --auth")
    else:
        assert loopback
    assert AppSettings(host=str(address), auth=(("admin", "pw"),)).host == str(address)
    assert AppSettings(host=str(address), insecure_no_auth=True).host == str(address)


NAMES = st.text(string.ascii_lowercase, min_size=1, max_size=3)


@given(st.lists(NAMES, min_size=1, max_size=4, unique=True), st.lists(NAMES, max_size=4))
def test_with_auth_the_admins_must_be_auth_users(users: list[str], admins: list[str]) -> None:
    auth = tuple((user, "pw") for user in users)
    try:
        settings = AppSettings(auth=auth, admins=tuple(admins))
    except ValueError as err:
        strangers = [name for name in admins if name not in users]
        assert strangers and str(err).startswith(f"--admins {strangers[0]!r}")
    else:
        assert set(settings.admins) <= set(users)
    assert AppSettings(admins=tuple(admins)).admins == tuple(admins)  # without --auth, any names


@given(st.text(max_size=40))
def test_an_admin_token_is_16_url_safe_characters_and_never_shown(token: str) -> None:
    url_safe = len(token) >= 16 and set(token) <= set(string.ascii_letters + string.digits + "-_")
    try:
        AppSettings(admin_token=token)
    except ValueError as err:
        assert not url_safe and str(err) == (  # the length, never the token
            f"--admin-token must be at least 16 URL-safe characters (A-Z a-z 0-9 - _), got {len(token)} characters"
        )
    else:
        assert url_safe


def test_each_rule_says_which_option_is_wrong_and_never_shows_a_password() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"admins": ("admin", "")}, "--admins names must be non-empty"),
        ({"admins": (" bob",)}, "without surrounding spaces"),
        ({"reward_choices": ("human", " ")}, "--reward-choices names an empty reward source"),
        ({"auth": (("alice", "pw"), ("alice", "pw2")), "admins": ("alice",)}, "--auth names a user twice: 'alice'"),
        ({"auth": (("alice", ""),), "admins": ("alice",)}, "--auth entries must be user:password"),
        ({"retry_backoff_s": 10.0, "max_backoff_s": 5.0}, "--retry-backoff-s (10.0) must not exceed"),
        ({"query_column": 5}, "--query-column must be str, got 5"),
        ({"auth": "alice:hunter2"}, "--auth must be a tuple of"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as err_info:
            AppSettings(**kwargs)
        assert message in str(err_info.value), kwargs
        assert "hunter2" not in str(err_info.value)
    assert AppSettings(reward_choices=()).reward_choices == ()


CLI_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=8)
CLI_NAMES = st.lists(CLI_TEXT.map(str.strip).filter(lambda t: t and "," not in t), max_size=3).map(tuple)
CLI_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(0, 2**32),
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "str": CLI_TEXT,
    "Path": CLI_TEXT.map(Path),
    "bool": st.booleans(),
    "tuple[str, ...]": CLI_NAMES,
    "device": st.sampled_from(["auto", "cpu", "cuda"]),
    "mode": st.sampled_from(["single", "pairwise"]),
    "host": st.sampled_from(["127.0.0.1", "::1", "localhost"]),
    "auth": st.lists(
        st.tuples(NAMES, CLI_TEXT.filter(lambda t: "," not in t)), max_size=2, unique_by=lambda p: p[0]
    ).map(tuple),
    "admin_token": st.text(string.ascii_letters + string.digits + "-_", min_size=16, max_size=20),
}


def cli_values(name: str) -> st.SearchStrategy[Any]:
    kind = str(FIELDS[name].type).removesuffix(" | None")
    return CLI_VALUES[name] if name in CLI_VALUES else CLI_VALUES[kind]


def argv_for(kwargs: dict[str, Any]) -> list[str]:
    argv = []
    for name, value in kwargs.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif name == "auth":
            argv.append(f"{flag}={','.join(f'{user}:{password}' for user, password in value)}")
        elif isinstance(value, tuple):
            argv.append(f"{flag}={','.join(value)}")
        else:
            argv.append(f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}")
    return argv


@given(st.fixed_dictionaries({}, optional={name: cli_values(name) for name in FIELDS}))
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])  # most random mixes are invalid
def test_valid_settings_survive_the_round_trip_through_the_command_line(kwargs: dict[str, Any]) -> None:
    try:
        settings = AppSettings(**kwargs)
    except ValueError:
        assume(False)
    assert parse_settings(argv_for(kwargs), env={}) == settings


def test_max_batch_size_defaults_to_twice_the_batch_and_is_checked() -> None:
    assert AppSettings(batch_size=8).effective_max_batch_size == 16
    assert AppSettings(batch_size=8, max_batch_size=8).effective_max_batch_size == 8
    for bad in ({"max_batch_size": 4}, {"mini_batch_size": 4, "max_batch_size": 18}, {"max_batch_size": 0}):
        with pytest.raises(ValueError, match="--max-batch-size"):
            AppSettings(batch_size=8, **bad)  # type: ignore[arg-type]

"""The command line, derived from `AppSettings`: `python -m app --help`.

One option per field (`batch_size` -> `--batch-size`); its help is the field's docstring, its default the field's
default, its form the field's type (`int`, `float`, `str`, `Path`, `bool` -> `--x/--no-x`, `X | None`, `Literal` ->
choices, `tuple[str, ...]` -> `a,b`, `auth` -> `user:pass[,user:pass]`). Every option can also come from an
environment variable `RLHF_LIVE_<OPTION>` (e.g. `RLHF_LIVE_BATCH_SIZE=4`); the command line overrides it, and an
empty variable counts as unset. Only the options given (on the command line or in the environment) reach
`AppSettings(...)`: every other value is the dataclass's own default, so there is no second copy of it here."""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import os
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import Field, fields
from pathlib import Path
from typing import Any, Literal

from app.settings import SECRET_FIELDS, AppSettings, field_types, option

ENV_PREFIX = "RLHF_LIVE_"

GROUPS = {
    "model": "model and data",
    "batch_size": "PPO",
    "max_new_tokens": "generation",
    "device": "runtime",
    "host": "server",
}
"""The first field of each group of options; `AppSettings` lists its fields group by group."""

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """One option per `AppSettings` field. Defaults are suppressed (an option not given is absent from the parsed
    namespace); `--help` shows the dataclass default, or the environment's value when one is set."""
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="rlhf-live",
        usage="%(prog)s [serve | train] [options]  (--help lists them)",
        description="Rate a language model's responses in the browser; every full batch of scores becomes a PPO "
        "step and the new weights go live. `serve` runs a rating front-end only, `train` the trainer only, on a "
        "shared --db and --weights-dir (docs/deployment.md); with neither, everything runs in one process.",
        epilog=f"Every option can also be set as {ENV_PREFIX}<OPTION> (e.g. {ENV_PREFIX}BATCH_SIZE=4); the command "
        "line overrides it. Serving beyond loopback (or --share) needs --auth.",
        argument_default=argparse.SUPPRESS,
    )
    group: argparse._ActionsContainer = parser
    for f in fields(AppSettings):
        if f.name in GROUPS:
            group = parser.add_argument_group(GROUPS[f.name])
        hint = field_types()[f.name]
        text = _help(f, env)
        if hint is bool:
            group.add_argument(option(f.name), action=argparse.BooleanOptionalAction, help=text)
        else:
            _, metavar = _form(f.name, hint)
            choices = _choices(hint)
            group.add_argument(option(f.name), metavar=None if choices else metavar, choices=choices, help=text)
    return parser


def parse_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> AppSettings:
    """Command line (and environment) -> settings; a bad value exits with status 2 and one line, like argparse."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    given = vars(parser.parse_args(argv))
    try:
        return AppSettings(**_values(given, env))
    except ValueError as err:
        parser.error(str(err))


def _values(given: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The fields set on the command line or else in the environment, converted to their types."""
    values: dict[str, Any] = {}
    for name, hint in field_types().items():
        if name in given:
            raw, source = given[name], option(name)
        elif env.get(ENV_PREFIX + name.upper()):
            raw, source = env[ENV_PREFIX + name.upper()], ENV_PREFIX + name.upper()
        else:
            continue
        if isinstance(raw, bool):  # --x / --no-x
            values[name] = raw
            continue
        try:
            values[name] = _form(name, hint)[0](raw)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    return values


def parse_auth(text: str | None) -> tuple[tuple[str, str], ...]:
    """`alice:pw1,bob:pw2` -> (("alice", "pw1"), ("bob", "pw2")). Errors never show a password."""
    if not text:
        return ()
    items = text.split(",")
    pairs = []
    for number, item in enumerate(items, 1):
        user, sep, password = item.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(
                f"entries must be user:password; entry {number} of {len(items)} is not (a password cannot hold a comma)"
            )
        pairs.append((user.strip(), password))
    return tuple(pairs)


def parse_names(text: str) -> tuple[str, ...]:
    """`alice, bob,` -> ("alice", "bob")."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _parse_bool(text: str) -> bool:
    """The environment's spelling of a flag: 1/0, true/false, yes/no, on/off."""
    word = text.strip().lower()
    if word not in _TRUE + _FALSE:
        raise ValueError(f"expected one of {'/'.join(_TRUE + _FALSE)}, got {text!r}")
    return word in _TRUE


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


_FORMS: dict[Any, tuple[Callable[[str], Any], str | None]] = {
    int: (_parse_int, "N"),
    float: (_parse_float, "X"),
    str: (str, None),  # argparse's metavar: the option's name
    Path: (Path, "PATH"),
    bool: (_parse_bool, None),
    tuple[str, ...]: (parse_names, "A,B,..."),
    tuple[tuple[str, str], ...]: (parse_auth, "USER:PASS[,USER:PASS]"),
}
"""How a value of each annotated type is written: its parser (text -> value) and its metavar."""


def _form(name: str, hint: Any) -> tuple[Callable[[str], Any], str | None]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None: the option is X; not giving it leaves None
        (hint,) = (arg for arg in args if arg is not type(None))
    if typing.get_origin(hint) is Literal:
        return str, None
    if hint not in _FORMS:
        raise TypeError(f"AppSettings.{name}: no command-line form for {hint}; add one to app/cli.py _FORMS")
    return _FORMS[hint]


def _choices(hint: Any) -> tuple[str, ...] | None:
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def _help(f: Field[Any], env: Mapping[str, str]) -> str:
    """The field's docstring and its default: the environment's value, else the dataclass's; never a secret's."""
    variable = ENV_PREFIX + f.name.upper()
    if f.name in SECRET_FIELDS:
        shown = f" (set by {variable})" if env.get(variable) else ""
    elif env.get(variable):
        shown = f" (default: {env[variable]}, from {variable})"
    else:
        shown = f" (default: {_show(f.default)})" if f.default is not None else ""
    return (field_docs()[f.name] + shown).replace("%", "%%")


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


@functools.cache
def field_docs() -> dict[str, str]:
    """Each field's docstring (the string literal under it), read from the source of `AppSettings`."""
    cls = ast.parse(textwrap.dedent(inspect.getsource(AppSettings))).body[0]
    assert isinstance(cls, ast.ClassDef)
    docs: dict[str, str] = {}
    for node, after in zip(cls.body, cls.body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    missing = [f.name for f in fields(AppSettings) if f.name not in docs]
    if missing:
        raise TypeError(f"AppSettings fields without a docstring (their --help): {', '.join(missing)}")
    return docs

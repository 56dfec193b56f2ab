"""The command line: options, environment defaults, and one-line errors (exit status 2, no traceback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import types
import typing
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

import pytest

from app.__main__ import main
from app.cli import build_parser, field_docs, parse_settings
from app.settings import AppSettings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and the error line (stderr may also hold progress bars, never a traceback)."""
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "rlhf-live: error:" in line]
    assert len(lines) == (1 if code else 0), err
    return code, lines[0] if lines else ""


def parse_error(capsys: pytest.CaptureFixture[str], *args: str, env: dict[str, str] | None = None) -> str:
    """The one error line of a command line that exits with status 2 (no environment unless given)."""
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(list(args), env=env or {})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = (line for line in err.splitlines() if not line.startswith("usage:"))
    return line


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--model", "--dataset", "--query-column", "--db", "--data-dir", "--reward", "--batch-size",
        "--mini-batch-size", "--ppo-epochs", "--learning-rate", "--init-kl-coef", "--max-new-tokens",
        "--temperature", "--top-p", "--buffer", "--max-staleness", "--checkpoint-every", "--host", "--port",
        "--auth", "--admins", "--device", "--threads", "--seed", "--share",
    ):  # fmt: skip
        assert option in text


def test_defaults_environment_and_command_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    defaults = parse_settings([])
    assert (defaults.model, defaults.batch_size, defaults.reward, defaults.port) == (
        "smollm2-135m-instruct", 8, "human", 7860,
    )  # fmt: skip
    assert defaults.db_url == f"sqlite:///{(Path('data') / 'feedback.db').resolve()}"
    assert defaults.buffer_target == 16 and defaults.admins == () and not defaults.share
    monkeypatch.setenv("RLHF_LIVE_BATCH_SIZE", "4")
    monkeypatch.setenv("RLHF_LIVE_AUTH", "alice:pw,admin:secret")
    monkeypatch.setenv("RLHF_LIVE_SHARE", "false")
    settings = parse_settings(["--admins", "alice, admin", "--data-dir", str(tmp_path)])
    assert settings.batch_size == 4 and settings.auth == (("alice", "pw"), ("admin", "secret"))
    assert settings.admins == ("alice", "admin") and settings.checkpoint_dir == tmp_path / "checkpoints"
    assert parse_settings(["--batch-size", "6"]).batch_size == 6  # the command line wins


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--batch-size", "8", "--mini-batch-size", "3"], "must be a multiple of --mini-batch-size"),
        (["--auth", "alice"], "--auth: entries must be user:password; entry 1 of 1 is not"),
        (["--batch-size", "x"], "--batch-size: expected an integer, got 'x'"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--auth", "alice:pw", "--admins", "alice,bob"], "--admins 'bob': not --auth users ('alice')"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    ],
)
def test_bad_option_values_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_port_in_use_is_reported_before_loading_anything(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = run_main(capsys, "--port", str(port), "--data-dir", str(tmp_path))
    assert code == 2 and f"port {port}" in err and "in use" in err
    assert not (tmp_path / "feedback.db").exists()


def test_a_missing_column_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    csv = tmp_path / "prompts.csv"
    csv.write_text("text\nhello\n", encoding="utf-8")
    code, err = run_main(
        capsys, "--dataset", str(csv), "--query-column", "prompt", "--port", str(free_port()),
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    assert code == 2 and "column 'prompt' not in the dataset" in err and "['text']" in err


def test_a_model_that_cannot_load_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run_main(
        capsys, "--model", str(tmp_path / "no-model"), "--port", str(free_port()), "--data-dir", str(tmp_path)
    )
    assert code == 2 and "model folder not found" in err
    (tmp_path / "empty").mkdir()
    code, err = run_main(
        capsys, "--model", str(tmp_path / "empty"), "--port", str(free_port()), "--data-dir", str(tmp_path)
    )
    assert code == 2 and "cannot load model" in err


def test_a_bad_database_url_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run_main(capsys, "--db", "nosuchdb://x/y", "--port", str(free_port()), "--data-dir", str(tmp_path))
    assert code == 2 and "cannot open the database" in err


@pytest.mark.slow
def test_the_module_entry_point_exits_2_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "--dataset", str(tmp_path / "missing.jsonl"), "--port", str(free_port()),
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "rlhf-live: error: prompt file not found" in result.stderr and "Traceback" not in result.stderr


def test_the_parser_is_built_without_torch() -> None:
    assert build_parser().prog == "rlhf-live"
    code = "import sys, app.__main__; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


# --- the options are derived from AppSettings: one per field, with its docstring, default and type ---------------

LOOPBACK_HOSTS = ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"]
EXPOSED_HOSTS = ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "example.org", "::ffff:127.0.0.1"]


def written(name: str, hint: Any, default: object) -> tuple[list[str], object]:
    """A value other than the default for each field, as the command line writes it, and the value it means."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = (arg for arg in typing.get_args(hint) if arg is not type(None))
    if name == "host":
        return ["--host", "localhost"], "localhost"
    if name == "max_batch_size":  # at least --batch-size (8)
        return ["--max-batch-size", "24"], 24
    if hint is bool:  # --share needs a login; every other flag stands alone
        extra = ["--auth", "admin:pw"] if name == "share" else []
        return [*extra, "--" + ("no-" if default else "") + name.replace("_", "-")], not default
    if hint is int:
        value: object = (default if isinstance(default, int) else 1) + 1
    elif hint is float:
        value = float(default) / 2 if isinstance(default, float) else 0.5
    elif hint is str:
        value = f"value-of-{name}"
    elif hint is Path:
        value = Path("value") / name
    elif typing.get_origin(hint) is typing.Literal:
        value = typing.get_args(hint)[-1]
    elif hint == tuple[str, ...]:
        return ["--" + name.replace("_", "-"), " a, b:2 ,"], ("a", "b:2")
    elif hint == tuple[tuple[str, str], ...]:
        return ["--" + name.replace("_", "-"), "admin:p:w,bob: x y"], (("admin", "p:w"), ("bob", " x y"))
    else:
        raise AssertionError(f"the test does not know how to write {name}: {hint}")
    return ["--" + name.replace("_", "-"), str(value)], value


@pytest.mark.parametrize("field", fields(AppSettings), ids=lambda f: f.name)
def test_every_field_is_an_option_with_its_docstring_default_and_type(
    field: Field[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [v for v in os.environ if v.startswith("RLHF_LIVE_")]:
        monkeypatch.delenv(variable)
    actions = {a.dest: a for a in build_parser()._actions}
    action = actions[field.name]
    flag = "--" + field.name.replace("_", "-")
    assert flag in action.option_strings
    doc = " ".join(field_docs()[field.name].split())
    assert doc and doc.replace("%", "%%") in (action.help or "")
    if field.default is not None and field.name not in ("auth", "admin_token"):
        shown = ",".join(field.default) if isinstance(field.default, tuple) else str(field.default)
        shown = {"True": "on", "False": "off", "": "none"}.get(shown, shown)
        assert f"(default: {shown})" in (action.help or "")
    assert getattr(parse_settings([]), field.name) == field.default
    argv, value = written(field.name, typing.get_type_hints(AppSettings)[field.name], field.default)
    parsed = getattr(parse_settings(argv), field.name)
    assert parsed == value and type(parsed) is type(value)


def test_the_environment_sets_every_kind_of_option_and_the_command_line_overrides_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {
        "RLHF_LIVE_LEARNING_RATE": "0.001",
        "RLHF_LIVE_DATA_DIR": str(tmp_path),
        "RLHF_LIVE_DEVICE": "cpu",
        "RLHF_LIVE_HOST": "0.0.0.0",
        "RLHF_LIVE_INSECURE_NO_AUTH": "yes",
        "RLHF_LIVE_REWARD_CHOICES": "human,vader",
        "RLHF_LIVE_ADMIN_TOKEN": "A" * 20,
        "RLHF_LIVE_MINI_BATCH_SIZE": "",  # empty: unset
    }
    settings = parse_settings([], env=env)
    assert (settings.learning_rate, settings.data_dir, settings.device) == (0.001, tmp_path, "cpu")
    assert settings.insecure_no_auth and settings.host == "0.0.0.0" and settings.reward_choices == ("human", "vader")
    assert settings.admin_token == "A" * 20 and settings.mini_batch_size is None
    override = parse_settings(["--learning-rate", "0.5", "--no-insecure-no-auth", "--host", "::1"], env=env)
    assert (override.learning_rate, override.insecure_no_auth, override.host) == (0.5, False, "::1")


def test_a_bad_environment_value_names_its_variable_unless_the_command_line_overrides_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse_error(capsys, env={"RLHF_LIVE_SEED": "one"}) == (
        "rlhf-live: error: RLHF_LIVE_SEED: expected an integer, got 'one'"
    )
    assert parse_error(capsys, env={"RLHF_LIVE_SHARE": "maybe"}) == (
        "rlhf-live: error: RLHF_LIVE_SHARE: expected one of 1/true/yes/on/0/false/no/off, got 'maybe'"
    )
    assert parse_settings(["--seed", "3"], env={"RLHF_LIVE_SEED": "one"}).seed == 3


def test_help_shows_the_environment_but_never_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"RLHF_LIVE_AUTH": "admin:hunter2-pass", "RLHF_LIVE_ADMIN_TOKEN": "tok-" * 5, "RLHF_LIVE_BATCH_SIZE": "4"}
    with pytest.raises(SystemExit):
        parse_settings(["--help"], env=env)
    text = " ".join(capsys.readouterr().out.split())
    assert "hunter2" not in text and "tok-tok" not in text
    assert "(set by RLHF_LIVE_AUTH)" in text and "(set by RLHF_LIVE_ADMIN_TOKEN)" in text
    assert "(default: 4, from RLHF_LIVE_BATCH_SIZE)" in text
    assert repr(parse_settings([], env=env)).count("hunter2") == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--auth", "alice:pw,hunter2"],  # a password with a comma, split in two
        ["--auth", "alice:pw", "--admins", "alice", "--admin-token", "hunter2"],
        ["--auth", " :hunter2"],
    ],
)
def test_errors_never_show_a_secret(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    err = parse_error(capsys, *args)
    assert err.startswith("rlhf-live: error: --") and "hunter2" not in err


@pytest.mark.parametrize("host", EXPOSED_HOSTS)
def test_serving_beyond_loopback_without_auth_is_refused(capsys: pytest.CaptureFixture[str], host: str) -> None:
    assert parse_error(capsys, "--host", host) == (
        f"rlhf-live: error: refusing to serve on {host} without --auth: anyone who can reach it could rate, read the "
        "dashboard and export; add --auth user:pass (and --admins), or --insecure-no-auth"
    )
    assert parse_settings(["--host", host, "--auth", "admin:pw"], env={}).auth == (("admin", "pw"),)
    assert parse_settings(["--host", host, "--insecure-no-auth"], env={}).host == host


def test_share_without_auth_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(capsys, "--share")
    assert err.startswith("rlhf-live: error: refusing --share without --auth: anyone with the link")
    assert parse_settings(["--share", "--auth", "root:pw", "--admins", "root"], env={}).share
    assert parse_settings(["--share", "--insecure-no-auth"], env={}).share


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_needs_no_auth(host: str) -> None:
    assert parse_settings(["--host", host], env={}).host == host

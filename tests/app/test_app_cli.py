"""The command line: options, environment defaults, and one-line errors (exit status 2, no traceback)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.__main__ import main
from app.cli import build_parser, parse_settings

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
    assert defaults.buffer_target == 16 and defaults.admins == ("admin",) and not defaults.share
    monkeypatch.setenv("RLHF_LIVE_BATCH_SIZE", "4")
    monkeypatch.setenv("RLHF_LIVE_AUTH", "alice:pw,admin:secret")
    monkeypatch.setenv("RLHF_LIVE_SHARE", "false")
    settings = parse_settings(["--admins", "alice,bob", "--data-dir", str(tmp_path)])
    assert settings.batch_size == 4 and settings.auth == (("alice", "pw"), ("admin", "secret"))
    assert settings.admins == ("alice", "bob") and settings.checkpoint_dir == tmp_path / "checkpoints"
    assert parse_settings(["--batch-size", "6"]).batch_size == 6  # the command line wins


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--batch-size", "8", "--mini-batch-size", "3"], "must be a multiple of --mini-batch-size"),
        (["--auth", "alice"], "--auth entries must be user:password"),
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

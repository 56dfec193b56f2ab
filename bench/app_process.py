"""The real app as a subprocess, simulated raters through gradio_client, and read-only looks at its database.

Shared by bench/load.py, bench/crash.py and tests/app/test_app_crash_short.py. Nothing here imports `app`: the
app runs exactly as `python -m app ...` in its own process (its own session, so a kill -9 reaches every thread
and child), serving on 127.0.0.1 only, with its log in a file next to its data.

A shown sample is identified by what a rater sees: (prompt, response, policy version) -- the page's outputs carry
no sample id. `SampleKey`s are resolved to sample ids from the database afterwards (`sample_keys`); a key that two
samples share (a tiny random model sometimes stops at once and answers "") is ambiguous, and callers say how they
treat it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG = logging.getLogger("bench.app_process")

ROOT = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)
"""The app runs on the interpreter running the bench or test (the repository's .venv)."""
RESULT_PREFIX = "RESULT "
READY_LINE = "Running on "
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"
PROMPTS = [
    "Tell me a happy story about a cat.",
    "Write a short poem about the sea.",
    "How do I bake bread?",
    "What is the capital of France?",
    "Explain the moon landing to a six year old.",
    "Say something kind.",
    "Describe a lovely day.",
    "What makes a good friend?",
]
VERSION_RE = re.compile(r"\*\*v(\d+)\*\*")


# ----------------------------------------------------------------------------------------------------- set-up
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_model(folder: Path, **config: Any) -> Path:
    """A tiny random GPT-2 with a ChatML tokenizer (ppo_core.tiny), saved in a subprocess so that this process
    never imports torch (20 rater threads share its two cores with the app)."""
    config_json = json.dumps(config)
    code = (
        "import json, sys; from ppo_core.tiny import save_tiny_model; "
        f"save_tiny_model(sys.argv[1], 'gpt2', **json.loads({config_json!r}))"
    )
    subprocess.run([str(PYTHON), "-c", code, str(folder)], cwd=ROOT, check=True, timeout=300)
    return folder


def write_prompts(path: Path, prompts: Sequence[str] = PROMPTS) -> Path:
    path.write_text("".join(json.dumps({"query": p}) + "\n" for p in prompts), encoding="utf-8")
    return path


@dataclass(frozen=True)
class AppConfig:
    """The options of one `python -m app` run (the tiny, quick settings the benches use)."""

    model: Path
    dataset: Path
    data_dir: Path
    batch_size: int = 4
    max_new_tokens: int = 8
    ppo_epochs: int = 1
    checkpoint_every: int = 10
    threads: int = 2
    poll_seconds: float = 0.2

    def argv(self, port: int) -> list[str]:
        options = {
            "model": self.model,
            "dataset": self.dataset,
            "data-dir": self.data_dir,
            "host": "127.0.0.1",
            "port": port,
            "batch-size": self.batch_size,
            "max-new-tokens": self.max_new_tokens,
            "ppo-epochs": self.ppo_epochs,
            "checkpoint-every": self.checkpoint_every,
            "threads": self.threads,
            "poll-seconds": self.poll_seconds,
        }
        return [str(PYTHON), "-m", "app", *(x for k, v in options.items() for x in (f"--{k}", str(v)))]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "feedback.db"

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"


# -------------------------------------------------------------------------------------------------- the process
class AppProcess:
    """One run of `python -m app`: started in its own session, stdout watched for "Running on", stdout and
    stderr kept in `log_path`. `kill()` is kill -9 of the whole session; `stop()` is SIGTERM (the app finishes its
    step and checkpoints), then kill -9 after a time limit."""

    def __init__(self, config: AppConfig, log_path: Path, port: int | None = None) -> None:
        self.config = config
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        self.ready = threading.Event()
        self.started = time.monotonic()
        self.ready_s: float | None = None
        env = {**os.environ, "RLHF_LIVE_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONUNBUFFERED": "1"}
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a", encoding="utf-8")
        self._log.write(f"=== {time.strftime('%H:%M:%S')} {' '.join(config.argv(self.port))}\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            config.argv(self.port),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_stdout, name="app-stdout", daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            if line.startswith(READY_LINE) and not self.ready.is_set():
                self.ready_s = time.monotonic() - self.started
                self.ready.set()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from start to "Running on"; raises `StartupFailed` (with the log's tail) on exit or timeout."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.proc.poll() is not None:
                raise StartupFailed(f"the app exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise StartupFailed(f"no {READY_LINE.strip()!r} within {timeout:.0f} s:\n{self.log_tail()}")
        assert self.ready_s is not None
        return self.ready_s

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) the app process has used so far, from /proc; None where there is none."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """kill -9 of the app's whole session (it is our own child's session, nothing else's), then reap it."""
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close()

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM and wait (a clean shutdown checkpoints); kill -9 after `timeout`. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("the app did not stop within %.0f s of SIGTERM; killing it", timeout)
                self.kill()
        self._close()
        return int(self.proc.returncode)

    def _close(self) -> None:
        self._reader.join(timeout=10)
        if not self._log.closed:
            self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]


class StartupFailed(RuntimeError):
    """The app did not print "Running on" in time, or exited first."""


# ----------------------------------------------------------------------------------------------------- raters
@dataclass(frozen=True)
class SampleKey:
    """What a rater sees of a sample; None for "nothing to rate yet"."""

    prompt: str
    response: str
    version: int


@dataclass(frozen=True)
class Shown:
    """The outputs of /next, /rate, /skip, /undo by meaning (tests/ui/test_client_e2e.py `shown`)."""

    key: SampleKey | None
    status: str
    progress: str
    refused: bool
    """Every output was `gr.skip()`: the handler refused the call (a toast the client does not see)."""


def parse_shown(out: Sequence[Any]) -> Shown:
    """The first five outputs; what follows them (timer, slider, buttons) changes as the page grows."""
    prompt, response, version, status, progress = out[:5]
    if isinstance(prompt, dict) and isinstance(status, dict):  # {"__type__": "update"}: gr.skip() everywhere
        return Shown(None, "", "", refused=True)
    text = response.get("value") if isinstance(response, dict) else response
    match = VERSION_RE.search(version if isinstance(version, str) else "")
    key = SampleKey(prompt, text or "", int(match.group(1))) if prompt and match else None
    return Shown(key, str(status), str(progress), refused=False)


def signed_in_client(url: str, name: str) -> Any:
    """A gradio_client Client (one browser tab) signed in as `name` (no token: a plain rater)."""
    from gradio_client import Client

    client = Client(url, verbose=False, download_files=False)
    badge, saved, *_ = client.predict(name, "", api_name="/login")
    if saved != name:
        raise RuntimeError(f"sign-in as {name!r} failed: {badge!r}")
    return client


@dataclass
class Call:
    """One rater call: what, when (monotonic seconds), how long, and how it ended."""

    rater: str
    endpoint: str
    start: float
    ms: float
    outcome: str
    """"ok", "refused", "unexpected: <status>" or "error: <exception>"."""


@dataclass
class RaterLog:
    """What one simulated rater saw and was told, for the checks."""

    name: str
    calls: list[Call] = field(default_factory=list)
    acknowledged: list[tuple[SampleKey, float]] = field(default_factory=list)
    """Ratings the server confirmed ("Rating saved") minus those it confirmed undoing, in order."""
    intervals: list[tuple[float, float, SampleKey]] = field(default_factory=list)
    """(first seen, last certainly held, sample): received after the server leased it, and before this rater
    sent anything that could end the lease."""


EXPECTED_STATUS = {
    "/rate": ("Rating saved",),
    "/skip": ("Skipped",),
    "/undo": ("Undone", "Cannot undo", "Nothing to undo"),
}


class SimulatedRater:
    """One rater in one browser tab (a gradio_client Client), keeping the books the checks need.

    Holding intervals: a sample shown in an answer was leased to this rater before the server answered, and the
    lease can only end by this rater's next rate/skip/undo (or by expiry: --lease-seconds, 300 s by default, far
    beyond any think time here). So [answer received, next rate/skip/undo sent] lies inside the server's lease.
    A /next that shows the same sample again continues the interval; one that shows another closes it at its send.
    """

    def __init__(self, url: str, name: str) -> None:
        self.log = RaterLog(name)
        start = time.monotonic()
        self.client = signed_in_client(url, name)
        self.log.calls.append(Call(name, "/login", start, (time.monotonic() - start) * 1000, "ok"))
        self.current: SampleKey | None = None
        self._since: float | None = None

    def call(self, endpoint: str, *args: Any) -> Shown | None:
        """Call /next, /rate (score), /skip or /undo; None when the call raised."""
        shown_before, sent = self.current, time.monotonic()
        if endpoint != "/next":
            self._close(sent)
        try:
            out = self.client.predict(*args, api_name=endpoint)
        except Exception as err:
            self._record(endpoint, sent, f"error: {type(err).__name__}: {err}"[:300])
            self._close(sent)
            self.current = None
            return None
        received, shown = time.monotonic(), parse_shown(out)
        self._record(endpoint, sent, self._outcome(endpoint, shown))
        if shown.refused:  # the page keeps what it showed; the lease is unknown: resynchronise with /next
            self._close(sent)
            self.current = None
            return shown
        if not (endpoint == "/next" and shown.key == self.current and self._since is not None):
            self._close(sent)
            self.current, self._since = shown.key, (received if shown.key is not None else None)
        self._book(endpoint, args, shown, shown_before)
        return shown

    def finish(self) -> RaterLog:
        self._close(time.monotonic())
        return self.log

    def _book(self, endpoint: str, args: tuple[Any, ...], shown: Shown, rated: SampleKey | None) -> None:
        if endpoint == "/rate" and "Rating saved" in shown.status and rated is not None:
            self.log.acknowledged.append((rated, float(args[0])))
        elif endpoint == "/undo" and "Undone" in shown.status and self.log.acknowledged:
            self.log.acknowledged.pop()

    def _outcome(self, endpoint: str, shown: Shown) -> str:
        if shown.refused:
            return "refused"
        expected = EXPECTED_STATUS.get(endpoint)
        if expected is not None and not any(word in shown.status for word in expected):
            return f"unexpected: {shown.status}"[:300]
        return "ok"

    def _record(self, endpoint: str, sent: float, outcome: str) -> None:
        self.log.calls.append(Call(self.log.name, endpoint, sent, (time.monotonic() - sent) * 1000, outcome))

    def _close(self, at: float) -> None:
        if self._since is not None and self.current is not None:
            self.log.intervals.append((self._since, at, self.current))
        self._since = None


# ----------------------------------------------------------------------------------------------- the database
@contextmanager
def read_db(path: Path, timeout: float = 30.0) -> Iterator[sqlite3.Connection]:
    """A read-only SQLite connection (WAL: it never blocks the app's writers, and never checkpoints the WAL)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout, check_same_thread=False)
    with closing(conn):
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        yield conn


def sample_keys(conn: sqlite3.Connection) -> dict[SampleKey, list[int]]:
    """Every sample's key -> the ids of the samples that look like that (usually one)."""
    rows = conn.execute(
        "SELECT s.id, p.text, s.response_text, s.policy_version FROM samples s JOIN prompts p ON p.id = s.prompt_id"
    )
    keys: dict[SampleKey, list[int]] = defaultdict(list)
    for sample_id, prompt, response, version in rows:
        keys[SampleKey(prompt, response, int(version))].append(int(sample_id))
    return dict(keys)


def human_ratings(conn: sqlite3.Connection) -> dict[str, list[tuple[SampleKey, float]]]:
    """Rater name -> (sample key, score) of every stored human rating."""
    rows = conn.execute(
        "SELECT r.name, p.text, s.response_text, s.policy_version, g.score FROM ratings g "
        "JOIN raters r ON r.id = g.rater_id JOIN samples s ON s.id = g.sample_id JOIN prompts p ON p.id = s.prompt_id "
        "WHERE g.source = 'human'"
    )
    out: dict[str, list[tuple[SampleKey, float]]] = defaultdict(list)
    for name, prompt, response, version, score in rows:
        out[name].append((SampleKey(prompt, response, int(version)), float(score)))
    return dict(out)


def missing_ratings(logs: Sequence[RaterLog], stored: dict[str, list[tuple[SampleKey, float]]]) -> list[str]:
    """Acknowledged ratings not in the database with their score (as a multiset per rater), described."""
    missing = []
    for log in logs:
        left = list(stored.get(log.name, []))
        for key, score in log.acknowledged:
            hit = next((i for i, (k, s) in enumerate(left) if k == key and abs(s - score) < 1e-9), None)
            if hit is None:
                missing.append(f"{log.name}: {score:+.2f} for v{key.version} {key.prompt[:30]!r} -> {key.response!r}")
            else:
                left.pop(hit)
    return missing


def count(conn: sqlite3.Connection, sql: str, *params: Any) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def emit_result(result: dict[str, Any]) -> None:
    """The bench convention: `RESULT {json}` as the last stdout line."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()

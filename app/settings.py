"""`AppSettings`: everything the app is configured with, built once at start-up (app/cli.py) and passed down."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

SCORE_RANGE: tuple[float, float] = (-1.0, 1.0)
"""The rating scale (the slider's bounds); storage validates every score against it."""


@dataclass(frozen=True)
class AppSettings:
    """Settings of one run of the app. `__post_init__` validates; derived values are properties."""

    model: str = "smollm2-135m-instruct"
    """A registry name, a local model folder, or a hub id (needs a network)."""
    dataset: str | None = None
    """Prompts: a csv/json/jsonl/parquet file or a hub dataset name; None = the prompts shipped with ppo_core."""
    query_column: str = "query"
    """The dataset column holding the prompt text."""
    data_dir: Path = Path("data")
    """Where the SQLite file, checkpoints and exports go."""
    db: str | None = None
    """A SQLAlchemy URL; None = `sqlite:///<data_dir>/feedback.db`."""
    reward: str = "human"
    """`human`, or an automatic reward: `vader`, `length[:N]`, a classifier folder[#LABEL], `module:function`."""
    batch_size: int = 8
    """Scored samples per PPO step."""
    mini_batch_size: int | None = None
    """Samples per forward/backward pass; None = batch_size."""
    ppo_epochs: int = 4
    """Passes over each batch."""
    learning_rate: float = 1.41e-5
    """Adam learning rate."""
    init_kl_coef: float = 0.2
    """Initial KL penalty coefficient (adaptive controller)."""
    max_new_tokens: int = 48
    """Response length limit."""
    temperature: float = 0.7
    """Sampling temperature of the generator."""
    top_p: float = 1.0
    """Nucleus sampling threshold of the generator."""
    buffer: int | None = None
    """Unrated samples the generator keeps ready; None = 2 x batch_size."""
    max_staleness: int = 2
    """Samples generated more than this many versions ago are never trained."""
    checkpoint_every: int = 10
    """Save a checkpoint every N steps (and on shutdown)."""
    host: str = "127.0.0.1"
    """Interface the web server listens on (0.0.0.0 for every interface)."""
    port: int = 7860
    """Port of the web server."""
    auth: tuple[tuple[str, str], ...] = ()
    """(user, password) pairs for Gradio's login page; empty = no login, raters just type a name."""
    admins: tuple[str, ...] = ("admin",)
    """Rater names with the admin role (pause, reward source, checkpoints)."""
    device: str = "auto"
    """`auto` (CUDA when available), `cpu` or `cuda`."""
    threads: int | None = None
    """Torch CPU threads in total, split between generator and trainer; None = all cores."""
    seed: int = 0
    """Seed of torch/numpy/random (set once when the trainer is built)."""
    share: bool = False
    """Ask Gradio for a public share link."""
    insecure_no_auth: bool = False
    """Serve beyond loopback (or with --share) without --auth: anyone who reaches the page can rate and watch."""
    admin_token: str | None = None
    """Without --auth, the admin's secret (opened as `/?admin=TOKEN`); None = a random one printed at start-up."""
    reward_choices: tuple[str, ...] = ("human", "vader", "length:40")
    """Reward sources an admin may switch to on the page (with --reward); only the command line names them."""
    keep_checkpoints: int = 3
    """Checkpoint folders kept (the newest); older ones are deleted."""
    pause_after_failures: int = 5
    """Consecutive failed steps after which the trainer pauses itself until an admin resumes it."""
    retry_backoff_s: float = 2.0
    """Wait before retrying a failed step; doubles with each consecutive failure."""
    max_backoff_s: float = 120.0
    """The longest wait between retries of a failed step."""
    reward_timeout_s: float = 30.0
    """Time limit of one call of an automatic reward; a sample it hangs or fails on is quarantined."""
    max_prompt_tokens: int = 512
    """Prompts longer than this (after the chat template) keep their last tokens."""
    lease_seconds: float = 300.0
    """How long a sample shown to a rater stays reserved for them."""
    poll_seconds: float = 0.5
    """How often idle workers look for work (they are also woken by ratings)."""

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "ppo_epochs",
            "max_new_tokens",
            "checkpoint_every",
            "max_prompt_tokens",
            "keep_checkpoints",
            "pause_after_failures",
        ):
            _positive_int(name, getattr(self, name))
        for name in ("mini_batch_size", "buffer", "threads"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.batch_size % self.effective_mini_batch_size:
            raise ValueError(
                f"--batch-size ({self.batch_size}) must be a multiple of --mini-batch-size ({self.mini_batch_size})"
            )
        if isinstance(self.max_staleness, bool) or not isinstance(self.max_staleness, int) or self.max_staleness < 0:
            raise ValueError(f"--max-staleness must be an int >= 0, got {self.max_staleness!r}")
        for name in (
            "learning_rate",
            "temperature",
            "lease_seconds",
            "poll_seconds",
            "retry_backoff_s",
            "max_backoff_s",
            "reward_timeout_s",
        ):
            _positive_float(name, getattr(self, name))
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not (math.isfinite(self.init_kl_coef) and self.init_kl_coef >= 0):
            raise ValueError(f"--init-kl-coef must be >= 0, got {self.init_kl_coef}")
        if not 0 < self.port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {self.port}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if not self.query_column.strip():
            raise ValueError("--query-column must not be empty")
        if not self.reward.strip():
            raise ValueError("--reward must not be empty")

    @property
    def db_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data folder."""
        return self.db or f"sqlite:///{(self.data_dir / 'feedback.db').resolve()}"

    @property
    def buffer_target(self) -> int:
        return self.buffer if self.buffer is not None else 2 * self.batch_size

    @property
    def effective_mini_batch_size(self) -> int:
        return self.mini_batch_size or self.batch_size

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def export_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def human_only(self) -> bool:
        return self.reward == "human"


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")


def _positive_float(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"--{name.replace('_', '-')} must be a number > 0, got {value!r}")

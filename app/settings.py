"""`AppSettings`: everything the app is configured with, built once at start-up (app/cli.py) and passed down.

The command line is derived from this dataclass (app/cli.py): one option per field, its help the field's docstring,
its default the field's default. A field's error messages name it as its option (`--batch-size`)."""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SCORE_RANGE: tuple[float, float] = (-1.0, 1.0)
"""The rating scale (the slider's bounds); storage validates every score against it."""

Device = Literal["auto", "cpu", "cuda"]
RatingModeName = Literal["single", "pairwise"]

_URL_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")  # the alphabet of secrets.token_urlsafe
_MAX_SEED = 2**32 - 1  # numpy's seed range


@dataclass(frozen=True)
class AppSettings:
    """Settings of one run of the app. `__post_init__` validates; derived values are properties.

    Fields are grouped (model and data, PPO, generation, runtime, server) in the order `--help` lists them. A field
    with `repr=False` is a secret: it is left out of the repr and its value is never shown by `--help`."""

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
    weights_dir: Path | None = None
    """Where `rlhf-live train` publishes each new policy version for the `serve` front-ends (a folder they all
    read, e.g. on shared disk); None = `<data_dir>/weights`."""
    reward: str = "human"
    """`human`, or an automatic reward: `vader`, `length[:N]`, a classifier folder[#LABEL], `module:function`."""
    reward_choices: tuple[str, ...] = ("human", "vader", "length:40")
    """Reward sources an admin may switch to on the page (with --reward); only the command line names them."""
    mode: RatingModeName = "single"
    """`single`: raters score one response on a scale. `pairwise`: they compare two responses to one prompt (A better,
    B better, tie, both bad) and PPO trains on Bradley-Terry rewards fitted to the answers (docs/pairwise.md). An
    admin can switch it on the page."""
    learned_min_ratings: int = 24
    """Human-rated samples the learned reward model (`--reward learned` or `human+learned`) needs before it is fit
    and scores anything; a fifth of them (at least 4) are held out to measure its agreement with people."""
    learned_refit_every: int = 8
    """Refit the learned reward model after this many new human ratings."""
    learned_refit_s: float = 60.0
    """Also refit the learned reward model this many seconds after its last fit when any human rating changed."""
    learned_wait_s: float = 20.0
    """With `human+learned`, how long a new sample is left to people before the learned model scores it."""
    learned_embedder: str = "all-minilm-l6-v2"
    """The learned reward model's sentence encoder: the packaged all-MiniLM-L6-v2, or a local BERT folder."""

    batch_size: int = 8
    """Scored samples per PPO step, at least: the trainer waits for this many."""
    max_batch_size: int | None = None
    """Most scored samples one PPO step takes: a step takes every scored sample waiting, up to this, so what raters
    score during a step is trained in the next; it bounds step time (about linear in it) and the generator makes no
    more responses than this ahead of the trainer. None = 2 x batch_size (docs/live-learning.md)."""
    flush_after_s: float = 90.0
    """A human rating that has waited this long for a batch is trained in a smaller one (at least one minibatch):
    the last ratings of a sitting reach the weights even when too few follow to fill --batch-size."""
    mini_batch_size: int | None = None
    """Samples per forward/backward pass; None = batch_size."""
    ppo_epochs: int = 4
    """Passes over each batch."""
    learning_rate: float = 1.41e-5
    """Adam learning rate (of all weights; with --lora, --lora-learning-rate applies instead)."""
    lora: bool = False
    """Train a LoRA adapter (and the value head) instead of every weight: the reference is the base model with
    the adapter disabled, publishing and checkpoints carry only the adapter (docs/lora.md)."""
    lora_rank: int = 16
    """With --lora: the rank r of the adapter's low-rank update."""
    lora_alpha: int = 32
    """With --lora: the adapter's scale numerator (the update is scaled by alpha / rank)."""
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """With --lora: names of the linear layers that get an adapter (`all-linear`: every one but the LM head)."""
    lora_dropout: float = 0.0
    """With --lora: dropout on the adapter's input while training, in [0, 1)."""
    lora_learning_rate: float = 2e-4
    """With --lora: Adam learning rate of the adapter and value head (LoRA needs a higher one than full weights)."""
    init_kl_coef: float = 0.2
    """Initial KL penalty coefficient (adaptive controller)."""
    max_staleness: int = 2
    """Samples generated more than this many versions ago are never trained."""
    checkpoint_every: int = 5
    """Save a checkpoint every N steps (and on shutdown). A crash costs at most these steps' compute, never a
    rating: their batches are trained again (bench/checkpoint.py: a SmolLM2 checkpoint costs 6-16% of a step)."""
    keep_checkpoints: int = 3
    """Checkpoint folders kept (the newest); older ones are deleted."""
    seed: int = 0
    """Seed of torch/numpy/random (set once when the trainer is built)."""

    max_new_tokens: int = 48
    """Response length limit."""
    temperature: float = 0.7
    """Sampling temperature of the generator."""
    top_p: float = 1.0
    """Nucleus sampling threshold of the generator."""
    buffer: int | None = None
    """Unrated samples the generator keeps ready; None = 2 x batch_size."""
    max_prompt_tokens: int = 512
    """Prompts longer than this (after the chat template) keep their last tokens."""

    device: Device = "auto"
    """`auto` (CUDA when available), `cpu` or `cuda`."""
    threads: int | None = None
    """Torch CPU threads in total, split between generator and trainer; None = all cores."""
    pause_after_failures: int = 5
    """Consecutive failed steps after which the trainer pauses itself until an admin resumes it."""
    retry_backoff_s: float = 2.0
    """Wait before retrying a failed step; doubles with each consecutive failure."""
    max_backoff_s: float = 120.0
    """The longest wait between retries of a failed step."""
    reward_timeout_s: float = 30.0
    """Time limit of one call of an automatic reward; a sample it hangs or fails on is quarantined."""
    lease_seconds: float = 300.0
    """How long a sample shown to a rater stays reserved for them."""
    poll_seconds: float = 0.5
    """How often idle workers look for work (they are also woken by ratings)."""
    heartbeat_s: float = 5.0
    """How often a process refreshes its heartbeat in the database (its training claims carry its owner id)."""
    heartbeat_expiry_s: float = 30.0
    """A process whose heartbeat is older than this is dead: start-up recovery frees its claims (and a trainer's
    restart after a crash waits at most this long for the dead one's slot)."""

    host: str = "127.0.0.1"
    """Interface the web server listens on (0.0.0.0 for every interface; beyond loopback needs --auth)."""
    port: int = 7860
    """Port of the web server."""
    auth: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(user, password) pairs for Gradio's login page; empty = no login, raters just type a name."""
    admins: tuple[str, ...] = ()
    """With --auth, the auth users with the admin role (pause, reward source, checkpoints, export); none by
    default. Without --auth it means nothing: the admin is whoever opens the admin link printed at start-up."""
    admin_token: str | None = field(default=None, repr=False)
    """Without --auth, the admin's secret (opened as `/?admin=TOKEN`); None = a random one printed at start-up."""
    share: bool = False
    """Ask Gradio for a public share link (needs --auth)."""
    insecure_no_auth: bool = False
    """Serve beyond loopback (or with --share) without --auth: anyone who reaches the page can rate and watch."""

    def __post_init__(self) -> None:
        for name, hint in field_types().items():
            _check_type(name, getattr(self, name), hint, secret=name in SECRET_FIELDS)
        self._check_training()
        self._check_lora()
        self._check_text()
        self._check_server()
        self._check_access()
        self._check_exposure()
        self._check_heartbeat()

    def _check_training(self) -> None:
        for name in (
            "batch_size",
            "ppo_epochs",
            "max_new_tokens",
            "checkpoint_every",
            "max_prompt_tokens",
            "keep_checkpoints",
            "pause_after_failures",
            "mini_batch_size",
            "max_batch_size",
            "buffer",
            "threads",
            "learned_refit_every",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{option(name)} must be a positive integer, got {value!r}")
        if self.batch_size % self.effective_mini_batch_size:
            raise ValueError(
                f"--batch-size ({self.batch_size}) must be a multiple of --mini-batch-size ({self.mini_batch_size})"
            )
        if self.effective_max_batch_size < self.batch_size or self.effective_max_batch_size % (
            self.mini_batch_size or 1
        ):
            raise ValueError(
                f"--max-batch-size ({self.max_batch_size}) must be at least --batch-size ({self.batch_size}) "
                f"and a multiple of --mini-batch-size ({self.mini_batch_size})"
            )
        if self.max_staleness < 0:
            raise ValueError(f"--max-staleness must be an int >= 0, got {self.max_staleness!r}")
        if not 0 <= self.seed <= _MAX_SEED:
            raise ValueError(f"--seed must be in 0..{_MAX_SEED}, got {self.seed}")
        for name in (
            "learning_rate",
            "temperature",
            "lease_seconds",
            "poll_seconds",
            "retry_backoff_s",
            "max_backoff_s",
            "reward_timeout_s",
            "learned_refit_s",
            "flush_after_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{option(name)} must be a number > 0, got {value!r}")
        if self.retry_backoff_s > self.max_backoff_s:
            raise ValueError(
                f"--retry-backoff-s ({self.retry_backoff_s}) must not exceed --max-backoff-s ({self.max_backoff_s})"
            )
        if self.learned_min_ratings < 8:
            raise ValueError(f"--learned-min-ratings must be at least 8, got {self.learned_min_ratings}")
        if not (math.isfinite(self.learned_wait_s) and self.learned_wait_s >= 0):
            raise ValueError(f"--learned-wait-s must be >= 0, got {self.learned_wait_s}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not (math.isfinite(self.init_kl_coef) and self.init_kl_coef >= 0):
            raise ValueError(f"--init-kl-coef must be >= 0, got {self.init_kl_coef}")

    def _check_lora(self) -> None:
        if self.lora_rank < 1:
            raise ValueError(f"--lora-rank must be a positive integer, got {self.lora_rank!r}")
        if self.lora_alpha < 1:
            raise ValueError(f"--lora-alpha must be a positive integer, got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not (math.isfinite(self.lora_learning_rate) and self.lora_learning_rate > 0):
            raise ValueError(f"--lora-learning-rate must be a number > 0, got {self.lora_learning_rate!r}")
        names = self.lora_target_modules
        if not names or not all(name and not any(c.isspace() for c in name) for name in names):
            raise ValueError(f"--lora-target-modules must name linear layers (e.g. q_proj,v_proj), got {names!r}")
        if "all-linear" in names and len(names) > 1:
            raise ValueError("--lora-target-modules: all-linear stands alone")

    def _check_text(self) -> None:
        for name in ("model", "query_column", "reward", "dataset", "db"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"{option(name)} must not be empty")
        for choice in self.reward_choices:
            if not choice.strip():
                raise ValueError(f"--reward-choices names an empty reward source: {self.reward_choices!r}")

    def _check_server(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {self.port}")
        if not self.host or not all(c.isprintable() and not c.isspace() for c in self.host):
            raise ValueError(f"--host must be an interface name or address, got {self.host!r}")

    def _check_access(self) -> None:
        """Logins, admins and the admin token; no message shows a password or the token."""
        users = [user for user, _ in self.auth]
        for user, password in self.auth:
            if not user or user != user.strip() or not password:
                raise ValueError(f"--auth entries must be user:password with a name and a password, got user {user!r}")
        if len(set(users)) < len(users):
            twice = sorted({user for user in users if users.count(user) > 1})
            raise ValueError(f"--auth names a user twice: {', '.join(map(repr, twice))}")
        for name in self.admins:
            if not name or name != name.strip():
                raise ValueError(f"--admins names must be non-empty, without surrounding spaces, got {name!r}")
        strangers = [name for name in self.admins if name not in users]
        if users and strangers:
            raise ValueError(
                f"--admins {', '.join(map(repr, strangers))}: not --auth users ({', '.join(map(repr, users))}); "
                f"with --auth, admins sign in, so name auth users, e.g. --admins {users[0]}"
            )
        if self.admin_token is not None and not _URL_SAFE_TOKEN.fullmatch(self.admin_token):
            raise ValueError(
                f"--admin-token must be at least 16 URL-safe characters (A-Z a-z 0-9 - _), "
                f"got {len(self.admin_token)} characters"
            )

    def _check_exposure(self) -> None:
        """Beyond this machine only with a login page (or when asked for in so many words)."""
        if self.auth or self.insecure_no_auth:
            return
        if self.share:
            what, who = "--share", "anyone with the link"
        elif not is_loopback(self.host):
            what, who = f"to serve on {self.host}", "anyone who can reach it"
        else:
            return
        raise ValueError(
            f"refusing {what} without --auth: {who} could rate, read the dashboard and export; "
            "add --auth user:pass (and --admins), or --insecure-no-auth"
        )

    def _check_heartbeat(self) -> None:
        for name in ("heartbeat_s", "heartbeat_expiry_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{option(name)} must be a number > 0, got {value!r}")
        if self.heartbeat_expiry_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"--heartbeat-expiry-s ({self.heartbeat_expiry_s}) must be at least twice --heartbeat-s "
                f"({self.heartbeat_s}), or one late beat would declare a live process dead"
            )

    @property
    def db_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data folder."""
        return self.db or f"sqlite:///{(self.data_dir / 'feedback.db').resolve()}"

    @property
    def buffer_target(self) -> int:
        return self.buffer if self.buffer is not None else 2 * self.batch_size

    @property
    def effective_max_batch_size(self) -> int:
        return self.max_batch_size if self.max_batch_size is not None else 2 * self.batch_size

    @property
    def effective_learning_rate(self) -> float:
        """The learning rate of what trains: the adapter's with --lora, else every weight's."""
        return self.lora_learning_rate if self.lora else self.learning_rate

    @property
    def ignored_lora_options(self) -> list[str]:
        """--lora-* options set to other than their defaults in a run without --lora (start-up warns of them)."""
        if self.lora:
            return []
        defaults = AppSettings.__dataclass_fields__
        return [option(n) for n in LORA_FIELDS if getattr(self, n) != defaults[n].default]

    @property
    def effective_mini_batch_size(self) -> int:
        return self.mini_batch_size or self.batch_size

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def published_dir(self) -> Path:
        return self.weights_dir if self.weights_dir is not None else self.data_dir / "weights"

    @property
    def export_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def learned_enabled(self) -> bool:
        """The learned reward model is among the configured sources, so its thread runs and is shown."""
        return any(spec.strip() in ("learned", "human+learned") for spec in (self.reward, *self.reward_choices))

    @property
    def human_only(self) -> bool:
        return self.reward == "human"


LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_target_modules", "lora_dropout", "lora_learning_rate")
"""Options that only mean something with --lora."""

SECRET_FIELDS = frozenset(f.name for f in AppSettings.__dataclass_fields__.values() if not f.repr)
"""Fields whose values are never printed (repr, --help, error messages)."""


@functools.cache
def field_types() -> dict[str, Any]:
    """Each field's annotation, evaluated (`str | None`, `tuple[str, ...]`, `Literal[...]`)."""
    return typing.get_type_hints(AppSettings)


def option(name: str) -> str:
    """`batch_size` -> `--batch-size`: the option a field is set with, the name its errors use."""
    return "--" + name.replace("_", "-")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _conforms(value: object, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return isinstance(value, str) and value in args
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(item, args[0]) for item in value)
        return len(value) == len(args) and all(_conforms(item, arg) for item, arg in zip(value, args))
    if hint is type(None):
        return value is None
    if hint is float:  # an int is a float (PEP 484's numeric tower), a bool is neither
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _check_type(name: str, value: object, hint: Any, secret: bool) -> None:
    if not _conforms(value, hint):
        shown = f"a {type(value).__name__}" if secret else _short_repr(value)
        raise ValueError(f"{option(name)} must be {_describe(hint)}, got {shown}")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:
        return "a tuple of " + (_describe(args[0]) if args[-1] is Ellipsis else ", ".join(map(_describe, args)))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _short_repr(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

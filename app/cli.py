"""The command line: `python -m app --help`. Every option can also come from an environment variable
`RLHF_LIVE_<OPTION>` (e.g. `RLHF_LIVE_AUTH=alice:secret`), which the command line overrides."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from app.settings import AppSettings

ENV_PREFIX = "RLHF_LIVE_"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rlhf-live",
        description="Rate a language model's responses in the browser; every full batch of scores becomes a PPO "
        f"step and the new weights go live. Options also read {ENV_PREFIX}<OPTION> environment variables.",
    )
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="smollm2-135m-instruct", help="registry name, local folder or hub id")
    g.add_argument("--dataset", default=None, help="csv/json/jsonl/parquet file or hub dataset (default: shipped)")
    g.add_argument("--query-column", default="query", help="dataset column with the prompts (default: query)")
    g.add_argument("--data-dir", type=Path, default=Path("data"), help="SQLite file, checkpoints, exports")
    g.add_argument("--db", default=None, help="SQLAlchemy URL (default: sqlite:///<data-dir>/feedback.db)")
    g.add_argument(
        "--reward",
        default="human",
        help="human | vader | length[:N] | classifier folder[#LABEL] | module:function (default: human)",
    )
    t = p.add_argument_group("PPO")
    t.add_argument("--batch-size", type=int, default=8, help="scored samples per PPO step (default: 8)")
    t.add_argument("--mini-batch-size", type=int, default=None, help="default: the batch size")
    t.add_argument("--ppo-epochs", type=int, default=4)
    t.add_argument("--learning-rate", type=float, default=1.41e-5)
    t.add_argument("--init-kl-coef", type=float, default=0.2)
    t.add_argument("--max-staleness", type=int, default=2, help="oldest trainable sample, in versions (default: 2)")
    t.add_argument("--checkpoint-every", type=int, default=10, help="steps between checkpoints (default: 10)")
    t.add_argument("--seed", type=int, default=0)
    gen = p.add_argument_group("generation")
    gen.add_argument("--max-new-tokens", type=int, default=48)
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--buffer", type=int, default=None, help="unrated samples kept ready (default: 2 x batch)")
    r = p.add_argument_group("runtime")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads in total (default: all cores)")
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--auth", default=None, help="user:pass[,user:pass] enables the login page")
    s.add_argument("--admins", default="admin", help="rater names with the admin role (default: admin)")
    s.add_argument("--share", action=argparse.BooleanOptionalAction, default=False, help="public Gradio link")
    _env_defaults(p, os.environ)
    return p


def _env_defaults(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """`RLHF_LIVE_BATCH_SIZE=4` acts as the default of `--batch-size` (argparse converts string defaults)."""
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = env.get(ENV_PREFIX + action.dest.upper())
        if value is None:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            action.default = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            action.default = value


def parse_auth(text: str | None) -> tuple[tuple[str, str], ...]:
    """`alice:pw1,bob:pw2` -> (("alice", "pw1"), ("bob", "pw2"))."""
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        user, sep, password = item.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"--auth entries must be user:password, got {item!r}")
        pairs.append((user.strip(), password))
    return tuple(pairs)


def parse_names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def settings_from_args(args: argparse.Namespace) -> AppSettings:
    """Raises ValueError with a one-line message for a bad combination."""
    return AppSettings(
        model=args.model,
        dataset=args.dataset,
        query_column=args.query_column,
        data_dir=args.data_dir,
        db=args.db,
        reward=args.reward,
        batch_size=args.batch_size,
        mini_batch_size=args.mini_batch_size,
        ppo_epochs=args.ppo_epochs,
        learning_rate=args.learning_rate,
        init_kl_coef=args.init_kl_coef,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        buffer=args.buffer,
        max_staleness=args.max_staleness,
        checkpoint_every=args.checkpoint_every,
        host=args.host,
        port=args.port,
        auth=parse_auth(args.auth),
        admins=parse_names(args.admins),
        device=args.device,
        threads=args.threads,
        seed=args.seed,
        share=args.share,
    )


def parse_settings(argv: Sequence[str] | None = None) -> AppSettings:
    """Command line (and environment) -> settings; a bad value exits with status 2 and one line, like argparse."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return settings_from_args(args)
    except ValueError as err:
        parser.error(str(err))

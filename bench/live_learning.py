"""Live learning: does the real app move toward what its raters reward, and does every rating reach the weights?

Starts `python -m app` on its defaults (its own data folder; `--reward` and any extra app options passed through),
lets N simulated raters score through gradio_client for a fixed wall-clock budget by a stated preference with
Gaussian noise, waits a while for the trainer to take what was scored, stops the app (its shutdown checkpoint is
the live version), then answers held-out prompts (not in the shipped dataset) with version 0 and the live version
(greedy, plus a few samples each) and scores them with the same preference, without noise.

    python bench/live_learning.py --raters 3 --seconds 240 --preference vader
    python bench/live_learning.py --raters 3 --seconds 240 -- --reward human+learned   # app options after --

Preferences (each maps a response to -1..1): `vader` (VADER compound sentiment: positivity), `brevity` (1 at
one word, -1 at 60 words or more), `number` (+0.8 if the answer contains a digit, else -0.8).
The last stdout line is `RESULT {json}` (bench/app_process.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.app_process import (
    PYTHON,
    AppProcess,
    count,
    emit_result,
    parse_shown,
    percentile,
    read_db,
    signed_in_client,
)
from bench.held_out import HELD_OUT

LOG = logging.getLogger("bench.live_learning")


# -------------------------------------------------------------------------------------------- preferences
def vader_preference() -> Callable[[str], float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda text: float(analyzer.polarity_scores(text)["compound"])


def brevity(text: str) -> float:
    words = len(text.split())
    return 1.0 - 2.0 * min(max(words - 1, 0) / 59, 1.0)


def mentions_number(text: str) -> float:
    return 0.8 if re.search(r"\d", text) else -0.8


def preference(name: str) -> Callable[[str], float]:
    if name == "vader":
        return vader_preference()
    return {"brevity": brevity, "number": mentions_number}[name]


# ------------------------------------------------------------------------------------------------ the app
@dataclass(frozen=True)
class DefaultApp:
    """`python -m app` on its defaults: only the data folder, loopback and port are set, plus what is passed."""

    data_dir: Path
    extra: tuple[str, ...] = ()

    def argv(self, port: int) -> list[str]:
        base = ["--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--port", str(port)]
        return [str(PYTHON), "-m", "app", *base, *self.extra]

    @property
    def db_path(self) -> Path:
        return self.data_dir / "feedback.db"


# ----------------------------------------------------------------------------------------------- the raters
@dataclass
class RaterStats:
    rate_ms: list[float] = field(default_factory=list)
    ratings: int = 0
    waiting_s: float = 0.0
    """Time with nothing to rate."""
    versions: list[int] = field(default_factory=list)
    """The version badge of each response shown, in order."""
    errors: int = 0


def rater_loop(
    url: str, name: str, prefer: Callable[[str], float], args: argparse.Namespace, deadline: float
) -> RaterStats:
    rng = random.Random(f"{args.seed}:{name}")
    stats = RaterStats()
    client = signed_in_client(url, name)
    shown = parse_shown(client.predict(api_name="/next"))
    while time.monotonic() < deadline:
        if shown.key is None:
            time.sleep(1.0)
            stats.waiting_s += 1.0
            shown = parse_shown(client.predict(api_name="/next"))
            continue
        stats.versions.append(shown.key.version)
        time.sleep(rng.uniform(args.think_min, args.think_max))
        score = max(-1.0, min(1.0, prefer(shown.key.response) + rng.gauss(0.0, args.noise)))
        sent = time.perf_counter()
        try:
            shown = parse_shown(client.predict(round(score, 2), api_name="/rate"))
        except Exception as err:  # recorded, and the rater carries on
            LOG.warning("%s: /rate failed: %s", name, err)
            stats.errors += 1
            shown = parse_shown(client.predict(api_name="/next"))
            continue
        stats.rate_ms.append((time.perf_counter() - sent) * 1000)
        stats.ratings += "Rating saved" in shown.status
    return stats


def drive(url: str, prefer: Callable[[str], float], args: argparse.Namespace) -> list[RaterStats]:
    deadline = time.monotonic() + args.seconds
    out: dict[int, RaterStats] = {}

    def run(i: int) -> None:
        try:
            out[i] = rater_loop(url, f"sim{i:02d}", prefer, args, deadline)
        except Exception:
            LOG.exception("rater %d stopped", i)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(args.raters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=args.seconds + 120)
    return list(out.values())


# ------------------------------------------------------------------------------------------- the database
def training_figures(conn: sqlite3.Connection) -> dict[str, Any]:
    human = count(conn, "SELECT count(*) FROM ratings WHERE source = 'human'")
    trained = count(
        conn,
        "SELECT count(*) FROM ratings g JOIN samples s ON s.id = g.sample_id "
        "JOIN training_batches b ON b.id = s.batch_id WHERE g.source = 'human' AND b.status = 'trained'",
    )
    stale = count(conn, "SELECT count(*) FROM ratings g JOIN samples s ON s.id = g.sample_id WHERE s.stale")
    steps = conn.execute(
        "SELECT t.durations, b.size FROM training_steps t JOIN training_batches b ON b.id = t.batch_id ORDER BY t.id"
    ).fetchall()
    step_s = [float(json.loads(d).get("step_s", 0.0)) for d, _ in steps]
    sizes = [int(n) for _, n in steps]
    per_version = conn.execute(
        "SELECT s.policy_version, avg(g.score), count(*) FROM ratings g JOIN samples s ON s.id = g.sample_id "
        "WHERE g.source = 'human' GROUP BY s.policy_version ORDER BY s.policy_version"
    ).fetchall()
    return {
        "ratings": human,
        "trained": trained,
        "share_trained": round(trained / human, 4) if human else None,
        "ratings_on_stale_samples": stale,
        "steps": len(steps),
        "batch_sizes": sizes,
        "step_s_p50": _rounded(percentile(step_s, 50)),
        "step_s_max": _rounded(max(step_s, default=None)),
        "rater_score_per_version": [[int(v), round(float(m), 4), int(n)] for v, m, n in per_version],
    }


def wait_for_training(db_path: Path, timeout: float) -> float:
    """Wait until no human-rated sample is waiting for a batch (or the timeout); returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with read_db(db_path) as conn:
            waiting = count(
                conn,
                "SELECT count(*) FROM samples WHERE human_n > 0 AND NOT stale AND (batch_id IS NULL OR batch_id IN "
                "(SELECT id FROM training_batches WHERE status IN ('claimed', 'pending')))",
            )
        if not waiting:
            break
        time.sleep(2.0)
    return time.monotonic() - start


# ---------------------------------------------------------------------------------------------- held out
def held_out_scores(
    model_name: str, live: Path | None, prefer: Callable[[str], float], samples: int, with_v0: bool = True
) -> dict[str, Any]:
    """Mean preference of v0 and the live checkpoint on HELD_OUT: greedy, and `samples` sampled answers each."""
    import torch

    from app.models import load_tokenizer
    from ppo_core.generation import generate_batch
    from ppo_core.prompts import encode_prompt
    from ppo_core.registry import resolve_model
    from ppo_core.value_head import AutoModelForCausalLMWithValueHead

    torch.set_num_threads(1)  # on a loaded CPU, more OpenMP threads spin against each other (10x slower here)
    folder = resolve_model(model_name)
    tokenizer = load_tokenizer(folder)
    queries = [torch.tensor(encode_prompt(tokenizer, p), dtype=torch.long) for p in HELD_OUT]
    out: dict[str, Any] = {}
    for label, path in (("v0", folder if with_v0 else None), ("live", str(live) if live else None)):
        if path is None:
            continue
        model = AutoModelForCausalLMWithValueHead.from_pretrained(path).eval()
        torch.manual_seed(0)
        scores: dict[str, list[float]] = {"greedy": [], "sampled": []}
        for kind, kwargs in (
            ("greedy", {"do_sample": False}),
            ("sampled", {"do_sample": True, "temperature": 0.7, "top_k": 0}),
        ):
            repeats = 1 if kind == "greedy" else samples
            for _ in range(repeats):
                with torch.no_grad():
                    gen = generate_batch(
                        model,
                        queries,
                        tokenizer.pad_token_id,
                        tokenizer.eos_token_id,
                        {**kwargs, "max_new_tokens": 48},
                        return_prompt=False,
                    )
                texts = [tokenizer.decode(r, skip_special_tokens=True) for r in gen.sequences]
                scores[kind].extend(prefer(t) for t in texts)
        out[label] = {k: round(sum(v) / len(v), 4) for k, v in scores.items()}
        out[label]["all"] = round(sum(scores["greedy"] + scores["sampled"]) / (len(HELD_OUT) * (1 + samples)), 4)
    return out


def newest_checkpoint(data_dir: Path) -> tuple[int, Path] | None:
    found = [(int(p.name[1:]), p) for p in (data_dir / "checkpoints").glob("v*") if p.name[1:].isdigit()]
    return max(found) if found else None


# ---------------------------------------------------------------------------------------------------- run
def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    prefer = preference(args.preference)
    extra = (*(["--reward", args.reward] if args.reward else []), *args.app_args)
    config = DefaultApp(root / "data", extra)
    app = AppProcess(config, root / "app.log")  # type: ignore[arg-type]  # duck-typed: argv() is all it uses
    try:
        ready_s = app.wait_ready(args.ready_timeout)
        LOG.info("app up in %.0f s; %d raters for %.0f s", ready_s, args.raters, args.seconds)
        raters = drive(app.url, prefer, args)
        with read_db(config.db_path) as conn:
            at_deadline = training_figures(conn)
        drained_s = wait_for_training(config.db_path, args.drain_seconds)
    finally:
        exit_code = app.stop(timeout=600)
    with read_db(config.db_path) as conn:
        figures = training_figures(conn)
    live = newest_checkpoint(config.data_dir)
    rate_ms = [ms for r in raters for ms in r.rate_ms]
    partial = {"ratings": figures["ratings"], "share_trained": figures["share_trained"], "steps": figures["steps"]}
    partial.update(rate_ms_p50=_rounded(percentile(rate_ms, 50)), rate_ms_p95=_rounded(percentile(rate_ms, 95)))
    LOG.info("before the held-out scores (slow on a loaded CPU): %s", json.dumps(partial))
    held = held_out_scores(args.model, live[1] if live else None, prefer, args.samples)
    gain = held["live"]["all"] - held["v0"]["all"] if "live" in held else None
    backwards = sum(sum(b < a for a, b in zip(r.versions, r.versions[1:])) for r in raters)
    return {
        "raters": args.raters,
        "seconds": args.seconds,
        "preference": args.preference,
        "noise": args.noise,
        "think_s": [args.think_min, args.think_max],
        "app_args": list(extra),
        "ready_s": round(ready_s, 1),
        "exit_code": exit_code,
        **figures,
        "share_trained_at_deadline": at_deadline["share_trained"],
        "ratings_at_deadline": at_deadline["ratings"],
        "drain_s": round(drained_s, 1),
        "live_version": live[0] if live else 0,
        "held_out": held,
        "gain": _rounded(gain),
        "gain_per_100_ratings": _rounded(100 * gain / figures["ratings"])
        if gain is not None and figures["ratings"]
        else None,
        "rate_ms_p50": _rounded(percentile(rate_ms, 50)),
        "rate_ms_p95": _rounded(percentile(rate_ms, 95)),
        "rater_waiting_share": round(sum(r.waiting_s for r in raters) / (args.seconds * max(len(raters), 1)), 3),
        "badge_went_back": backwards,
        "rate_errors": sum(r.errors for r in raters),
    }


def evaluate_only(args: argparse.Namespace) -> dict[str, Any]:
    """The figures and held-out scores of a finished run's data folder (`--keep`), without starting the app."""
    data_dir = args.evaluate
    with read_db(data_dir / "feedback.db") as conn:
        figures = training_figures(conn)
    live = newest_checkpoint(data_dir)
    held = held_out_scores(args.model, live[1] if live else None, preference(args.preference), args.samples)
    gain = held["live"]["all"] - held["v0"]["all"] if "live" in held else None
    per_100 = 100 * gain / figures["ratings"] if gain is not None and figures["ratings"] else None
    extra = {"gain": _rounded(gain), "gain_per_100_ratings": _rounded(per_100)}
    return {"evaluated": str(data_dir), **figures, "live_version": live[0] if live else 0, "held_out": held, **extra}


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raters", type=int, default=3)
    p.add_argument("--seconds", type=float, default=240.0, help="wall-clock budget of the raters")
    p.add_argument("--preference", choices=("vader", "brevity", "number"), default="vader")
    p.add_argument("--noise", type=float, default=0.3, help="sd of the Gaussian noise added to each score")
    p.add_argument("--think-min", type=float, default=0.5, help="a rater's shortest reading time, seconds")
    p.add_argument("--think-max", type=float, default=2.0)
    p.add_argument("--reward", default=None, help="passed to the app as --reward (default: the app's own)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="v0 for the held-out scores (the app's --model)")
    p.add_argument("--samples", type=int, default=3, help="sampled answers per held-out prompt, besides greedy")
    p.add_argument("--drain-seconds", type=float, default=150.0, help="after the budget, wait for the trainer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--keep", type=Path, default=None, help="keep the data folder and app log here")
    p.add_argument("--evaluate", type=Path, default=None, help="only score a kept run's data folder (held out)")
    p.add_argument("app_args", nargs="*", help="options for the app, after --")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = parse_args(argv)
    if args.evaluate is not None:
        emit_result(evaluate_only(args))
        return 0
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
            result = run(args, Path(tmp))
    emit_result(result)
    return 0 if result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""ppo_core vs TRL 0.11.4 legacy PPO: the same model, batch, PPOConfig and data, run side by side.

    .venv/bin/python bench/vs_trl.py --setup       # build .trl-venv/ only (also done automatically when missing)
    .venv/bin/python bench/vs_trl.py               # tiny + gpt2-6x384 x b8,32 x L16,48, and smollm2 b8 L16
    .venv/bin/python bench/vs_trl.py --quick       # tiny + gpt2-6x384 at b8 L16, one round
    .venv/bin/python bench/vs_trl.py --models smollm2 --batches 8,32 --resp-lens 16 --rounds 1
    .venv/bin/python bench/vs_trl.py --same-stack  # ours under the TRL env too: same transformers, same torch

Per configuration the runs are interleaved, each in a fresh process: ours, trl, ours, trl, ... (`--rounds`), so
machine noise hits both sides alike. Noise on a shared machine only ever adds time, so per side we take the
best round's median s/step (plus two checks: the fastest single step, and the best round's median process CPU
seconds per step), the largest peak RSS and the best generation tokens/s. Ratios:
speedup = TRL s/step / ours s/step (target >= 2); mem ratio = ours peak RSS / TRL peak RSS (target < 1).
Generation: ours (whole list at once) vs TRL's default (4 prompts at a time for a list) and vs TRL at
batch_size=B. The table goes to the log (stderr); the last stdout line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from typing import Any

from harness import MAIN_PYTHON, Config, csv_ints, csv_strs, format_table, grid, run_worker, save_json
from trl_env import ensure_trl_env

LOG = logging.getLogger("bench.vs_trl")

SPEEDUP_TARGET = 2.0
RESULT_KEYS = ("config", "speedup", "speedup_min", "speedup_cpu", "mem_ratio", "gen_ratio_vs_trl_default")
HEADER = (
    "config",
    "ours s/step",
    "trl s/step",
    "speedup",
    "speedup(min)",
    "speedup(cpu)",
    "ours peak MB",
    "trl peak MB",
    "mem ratio",
    "ours tok/s",
    "trl tok/s (bs4)",
    "trl tok/s (bsB)",
)


def default_grid(repeats: int | None) -> list[Config]:
    return grid(["tiny", "gpt2-6x384"], [8, 32], [16, 48], repeats) + grid(["smollm2"], [8], [16], repeats)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds -> best round's median s/step (noise on a shared machine only ever adds time),
    fastest single step, best round's median CPU s/step, largest peaks, best tokens/s."""

    def gen(key: str) -> float | None:
        values = [r["gen"][key]["tokens_per_s"] for r in runs if key in r["gen"]]
        return max(values) if values else None

    return {
        "step_s": min(r["step_median_s"] for r in runs),
        "step_min_s": min(t for r in runs for t in r["step_s"]),
        "step_cpu_s": min(r["step_cpu_median_s"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "gen_tokens_per_s": gen("default"),
        "gen_full_batch_tokens_per_s": gen("full_batch"),
        "n_params": runs[0]["n_params"],
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(cfg: Config, ours: dict[str, Any], trl: dict[str, Any]) -> dict[str, Any]:
    """The side-by-side numbers of one configuration."""
    if ours["n_params"] != trl["n_params"]:
        LOG.warning("%s: parameter counts differ: ours %d, trl %d", cfg.label, ours["n_params"], trl["n_params"])
    return {
        "config": cfg.label,
        "model": cfg.model,
        "batch": cfg.batch,
        "resp_len": cfg.resp_len,
        "ours": ours,
        "trl": trl,
        "speedup": trl["step_s"] / ours["step_s"],
        "speedup_min": trl["step_min_s"] / ours["step_min_s"],
        "speedup_cpu": trl["step_cpu_s"] / ours["step_cpu_s"],
        "mem_ratio": ours["peak_rss_mb"] / trl["peak_rss_mb"],
        "gen_ratio_vs_trl_default": ratio(ours["gen_tokens_per_s"], trl["gen_tokens_per_s"]),
        "gen_ratio_vs_trl_full_batch": ratio(ours["gen_tokens_per_s"], trl["gen_full_batch_tokens_per_s"]),
    }


def run_config(
    cfg: Config, ours_python: Any, trl_python: Any, rounds: int, threads: int
) -> tuple[dict[str, Any], list[Any]]:
    """Interleave ours / trl `rounds` times in fresh processes; returns the comparison and the raw results."""
    sides: dict[str, list[dict[str, Any]]] = {"ours": [], "trl": []}
    for _ in range(rounds):
        sides["ours"].append(run_worker(ours_python, "ours", cfg, threads))
        sides["trl"].append(run_worker(trl_python, "trl", cfg, threads))
    result = compare(cfg, aggregate(sides["ours"]), aggregate(sides["trl"]))
    LOG.info(
        "%s: ours %.3f s, trl %.3f s -> %.2fx; peak RSS ours %.0f MB / trl %.0f MB = %.2f",
        cfg.label,
        result["ours"]["step_s"],
        result["trl"]["step_s"],
        result["speedup"],
        result["ours"]["peak_rss_mb"],
        result["trl"]["peak_rss_mb"],
        result["mem_ratio"],
    )
    return result, [*sides["ours"], *sides["trl"]]


def row(c: dict[str, Any]) -> list[Any]:
    o, t = c["ours"], c["trl"]
    return [
        c["config"],
        o["step_s"],
        t["step_s"],
        c["speedup"],
        c["speedup_min"],
        c["speedup_cpu"],
        o["peak_rss_mb"],
        t["peak_rss_mb"],
        c["mem_ratio"],
        o["gen_tokens_per_s"],
        t["gen_tokens_per_s"],
        t["gen_full_batch_tokens_per_s"],
    ]


def verdict(results: list[dict[str, Any]], errors: list[dict[str, str]]) -> dict[str, Any]:
    """Headline numbers for the RESULT line."""
    speedups = [c["speedup"] for c in results]
    mems = [c["mem_ratio"] for c in results]
    return {
        "min_speedup": min(speedups, default=None),
        "geomean_speedup": math.exp(statistics.fmean(map(math.log, speedups))) if speedups else None,
        "max_mem_ratio": max(mems, default=None),
        "speedup_target_met": bool(speedups) and min(speedups) >= SPEEDUP_TARGET and not errors,
        "memory_target_met": bool(mems) and max(mems) < 1.0 and not errors,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setup", action="store_true", help="build .trl-venv/ and exit")
    p.add_argument("--quick", action="store_true", help="tiny + gpt2-6x384 at b8 L16, 1 round, 2 repeats")
    p.add_argument("--models", type=csv_strs, default=None, help="comma list (default: see module doc)")
    p.add_argument("--batches", type=csv_ints, default=[8, 32])
    p.add_argument("--resp-lens", type=csv_ints, default=[16, 48])
    p.add_argument("--repeats", type=int, default=None, help="timed steps per run (default: by size)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved ours/trl runs per config")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both sides")
    p.add_argument(
        "--same-stack",
        action="store_true",
        help="run ppo_core under the TRL env's python too (transformers 4.45.2, accelerate 1.0.1): library "
        "against library, without the difference between transformers versions",
    )
    return p.parse_args(argv)


def configs(args: argparse.Namespace) -> list[Config]:
    if args.quick:
        return grid(["tiny", "gpt2-6x384"], [8], [16], args.repeats or 2)
    if args.models is None:
        return default_grid(args.repeats)
    return grid(args.models, args.batches, args.resp_lens, args.repeats)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    trl_python = ensure_trl_env()
    if args.setup:
        return
    rounds = 1 if args.quick else args.rounds
    t0 = time.perf_counter()
    results, raw, errors = [], [], []
    for cfg in configs(args):
        try:
            ours_python = trl_python if args.same_stack else MAIN_PYTHON
            result, runs = run_config(cfg, ours_python, trl_python, rounds, args.threads)
        except RuntimeError as exc:  # one broken config must not hide the others' numbers
            LOG.error("%s", exc)
            errors.append({"config": cfg.label, "error": str(exc)[-500:]})
            continue
        results.append(result)
        raw.extend(runs)
    table = format_table(HEADER, [row(c) for c in results])
    LOG.info("ppo_core vs TRL 0.11.4 (threads=%d, rounds=%d)\n%s", args.threads, rounds, table)
    path = save_json("vs_trl", {"results": results, "errors": errors, "raw": raw})
    LOG.info("full results: %s (%.0f s total)", path, time.perf_counter() - t0)
    payload = {
        "bench": "vs_trl",
        "threads": args.threads,
        "rounds": rounds,
        "same_stack": args.same_stack,
        **verdict(results, errors),
        "configs": [
            {k: c[k] for k in RESULT_KEYS} | {"ours_s": c["ours"]["step_s"], "trl_s": c["trl"]["step_s"]}
            for c in results
        ],
        "errors": errors,
    }
    print("RESULT " + json.dumps(payload), flush=True)


if __name__ == "__main__":
    main()

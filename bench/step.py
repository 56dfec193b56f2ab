"""PPO step benchmark of ppo_core: median seconds per `PPOTrainer.step`, peak memory, generation tokens/s.

    .venv/bin/python bench/step.py                    # tiny, gpt2-6x384, smollm2 x batch 8, 32 x resp 16, 48
    .venv/bin/python bench/step.py --quick            # batch 8, resp 16 only (~1-2 min)
    .venv/bin/python bench/step.py --models tiny,smollm2 --batches 8 --resp-lens 16,48 --repeats 3

Each configuration runs in a fresh process (bench/step_worker.py) so memory peaks never mix. The table goes to
the log (stderr); full results to bench/out/step-<time>.json; the last stdout line is `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from harness import MAIN_PYTHON, MODELS, Config, csv_ints, csv_strs, format_table, grid, run_worker, save_json

LOG = logging.getLogger("bench.step")

HEADER = ("model", "batch", "resp", "s/step", "samples/s", "peak RSS MB", "gen tok/s")


def summary(cfg: Config, r: dict[str, Any]) -> dict[str, Any]:
    """The numbers that go in the table and the RESULT line for one configuration."""
    gen = r["gen"].get("default", {})
    return {
        "model": cfg.model,
        "batch": cfg.batch,
        "resp_len": cfg.resp_len,
        "repeats": cfg.repeats,
        "step_median_s": r["step_median_s"],
        "samples_per_s": cfg.batch / r["step_median_s"],
        "peak_rss_mb": r["peak_rss_mb"],
        "cuda_peak_mb": r["cuda_peak_mb"],
        "gen_tokens_per_s": gen.get("tokens_per_s"),
    }


def row(s: dict[str, Any]) -> list[Any]:
    return [
        s["model"],
        s["batch"],
        s["resp_len"],
        s["step_median_s"],
        s["samples_per_s"],
        s["peak_rss_mb"],
        s["gen_tokens_per_s"],
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 8, resp 16, 2 repeats")
    p.add_argument("--models", type=csv_strs, default=list(MODELS), help="comma list of " + ",".join(MODELS))
    p.add_argument("--batches", type=csv_ints, default=[8, 32])
    p.add_argument("--resp-lens", type=csv_ints, default=[16, 48])
    p.add_argument("--repeats", type=int, default=None, help="timed steps per config (default: by size)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in each worker")
    p.add_argument("--no-gen", action="store_true", help="skip generation timing")
    a = p.parse_args(argv)
    if a.quick:
        a.batches, a.resp_lens, a.repeats = [8], [16], a.repeats or 2
    return a


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    extra = ["--no-gen"] if args.no_gen else []
    t0 = time.perf_counter()
    results, raw = [], []
    for cfg in grid(args.models, args.batches, args.resp_lens, args.repeats):
        r = run_worker(MAIN_PYTHON, "ours", cfg, args.threads, extra)
        raw.append(r)
        results.append(summary(cfg, r))
        LOG.info("%s: %.3f s/step, peak RSS %.0f MB", cfg.label, r["step_median_s"], r["peak_rss_mb"])
    LOG.info("ppo_core PPO step (threads=%d)\n%s", args.threads, format_table(HEADER, [row(s) for s in results]))
    path = save_json("step", raw)
    LOG.info("full results: %s (%.0f s total)", path, time.perf_counter() - t0)
    payload = {"bench": "step", "impl": "ours", "threads": args.threads, "results": results}
    print("RESULT " + json.dumps(payload), flush=True)


if __name__ == "__main__":
    main()

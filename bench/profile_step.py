"""Where a PPO step spends its time and memory: cProfile by function, torch.profiler by op, RSS by stage.

    .venv/bin/python bench/profile_step.py --model gpt2-6x384 --batch 8 --resp-len 16
    .trl-venv/bin/python bench/profile_step.py --impl trl --model gpt2-6x384 --batch 8 --resp-len 16

Builds exactly the workload of bench/step_worker.py, runs one warm-up step, then profiles `--steps` steps.
Reports go to the log (stderr); the last stdout line is `RESULT {json}` with the top functions and ops.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import pstats
import sys
import time
from typing import Any

import torch
from step_worker import Workload, build, load_base, make_batch, ppo_api, reset_peak_memory, rss_status_mb

LOG = logging.getLogger("bench.profile_step")

# Functions of the library under test whose cumulative time is worth naming.
LIB_MARKERS = {"ours": "ppo_core/", "trl": "trl/"}
TORCH_MARKERS = ("torch/", "transformers/")


def function_table(prof: cProfile.Profile, impl: str, total_s: float, top: int) -> list[dict[str, Any]]:
    """Cumulative time of the library's own functions and of the model/optimizer calls they make."""
    stats = pstats.Stats(prof)
    rows = []
    for (path, line, name), (_, ncalls, _tt, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        if LIB_MARKERS[impl] in path or (name in {"backward", "step", "forward"} and "torch/" in path):
            short = path.split("site-packages/")[-1].split("/work/main/")[-1]
            rows.append({"function": f"{short}:{line}:{name}", "calls": ncalls, "cum_s": cum, "frac": cum / total_s})
    rows.sort(key=lambda r: r["cum_s"], reverse=True)
    return rows[:top]


def op_table(prof: torch.profiler.profile, total_s: float, top: int) -> list[dict[str, Any]]:
    """Torch ops by self CPU time (what the kernels themselves cost, children excluded)."""
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {
            "op": e.key,
            "calls": e.count,
            "self_s": e.self_cpu_time_total / 1e6,
            "frac": e.self_cpu_time_total / 1e6 / total_s,
            "self_mem_mb": e.self_cpu_memory_usage / 2**20,
        }
        for e in events[:top]
    ]


def log_rows(title: str, rows: list[dict[str, Any]]) -> None:
    lines = [title]
    for r in rows:
        lines.append("  " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    LOG.info("\n".join(lines))


def stage_memory(w: Workload) -> tuple[Any, Any, dict[str, float]]:
    """Build the trainer, recording RSS after each stage (MiB)."""
    api = ppo_api(w.impl)
    base, tok = load_base(w)
    marks = {"base_loaded": reset_peak_memory()}
    built = build(w, api, base, tok)
    marks["trainer_built"] = rss_status_mb("VmRSS")
    batch = make_batch(w, built, torch.device(getattr(built.trainer, "current_device", "cpu")))
    built.trainer.step(*batch)
    marks["after_warmup_step"] = rss_status_mb("VmRSS")
    marks["peak_through_warmup"] = rss_status_mb("VmHWM")
    return built, batch, marks


def parse_args(argv: list[str] | None) -> tuple[Workload, int, int]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--impl", choices=("ours", "trl"), default="ours")
    p.add_argument("--model", default="gpt2-6x384")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--resp-len", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    w = Workload(a.impl, a.model, a.batch, a.resp_len, a.batch, 4, a.steps, a.threads, 0, 8, 24, False)
    return w, a.steps, a.top


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    w, steps, top = parse_args(argv)
    torch.set_num_threads(w.threads)
    built, batch, marks = stage_memory(w)
    LOG.info("RSS by stage (MiB): %s", {k: round(v) for k, v in marks.items()})

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(steps):
        built.trainer.step(*batch)
    prof.disable()
    cprof_s = time.perf_counter() - t0
    functions = function_table(prof, w.impl, cprof_s, top)
    log_rows(f"cProfile, {steps} steps, {cprof_s:.2f}s: cumulative time by function", functions)

    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as tprof:
        for _ in range(steps):
            built.trainer.step(*batch)
    torch_s = time.perf_counter() - t0
    ops = op_table(tprof, torch_s, top)
    log_rows(f"torch.profiler, {steps} steps, {torch_s:.2f}s: self CPU time by op", ops)
    payload = {"impl": w.impl, "model": w.model, "batch": w.batch, "resp_len": w.resp_len, "rss_mb": marks}
    print("RESULT " + json.dumps({**payload, "functions": functions[:10], "ops": ops[:10]}), flush=True)


if __name__ == "__main__":
    main()

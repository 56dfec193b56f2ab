"""The TRL docs' sentiment loop, ppo_core against TRL 0.11.4, the same wall-clock budget, several seeds, one run.

    .venv/bin/python bench/sentiment_vs_trl.py                          # 3 seeds x 20 min, both sides at once
    .venv/bin/python bench/sentiment_vs_trl.py --alternate --threads 2  # one side at a time, both cores each
    .venv/bin/python bench/sentiment_vs_trl.py --seeds 1 --budget-s 60  # a smoke run
    .venv/bin/python bench/sentiment_vs_trl.py --plot docs/sentiment-vs-trl.png --from bench/out/sentiment-*.json

The task (bench/sentiment_worker.py): SmolLM2-135M-Instruct answers 48 of the 64 shipped prompts, VADER scores the
answers, `PPOTrainer.step` learns from the scores; the docs' `PPOConfig` with batch 8, minibatch 4. Held out: the
other 16 shipped prompts and 12 prompts that are in no dataset (bench/held_out.py), each answered greedily once and
by 8 sampled answers under a fixed seed (`--samples`), before and after training (252 answers per evaluation).
Both sides draw the same samples until their weights differ: the first step's batch and the scores before training
are equal on both sides, a check that the two set-ups match.

By default each seed runs ppo_core and TRL at the same time, one torch thread each: both sides see the same machine
for the same minutes, and three seeds take an hour instead of two. `--alternate` runs them one after the other
instead (the side that goes first alternates with the seed).

`RESULT {json}` (last stdout line): per side the held-out gain per seed and its mean and standard deviation, steps,
the mean `objective/kl` of the last 5 steps, gain per minute; and `gain_ratio` = mean gain ours / mean gain TRL.
Every worker's full result (per-step reward, KL, time) is saved as it arrives in bench/out/ (gitignored).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import OUT_DIR, ROOT, format_table, save_json
from bench.held_out import HELD_OUT
from bench.trl_env import ensure_trl_env

LOG = logging.getLogger("bench.sentiment_vs_trl")
RESULT = "RESULT "
WORKER = Path(__file__).resolve().parent / "sentiment_worker.py"
SIDES = ("ours", "trl")
LAST_STEPS = 5


def write_workload(path: Path) -> None:
    """Prompt token ids (chat template applied by ppo_core's tokenizer), shared by both sides."""
    from transformers import AutoTokenizer

    from ppo_core.prompts import encode_prompt, load_prompts
    from ppo_core.registry import DEFAULT_MODEL, resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    shipped = list(load_prompts(None)["query"])
    train = [t for i, t in enumerate(shipped) if i % 4 != 3]
    held = [t for i, t in enumerate(shipped) if i % 4 == 3] + list(HELD_OUT)
    payload = {
        "train": [list(encode_prompt(tok, t)) for t in train],
        "held_out": [list(encode_prompt(tok, t)) for t in held],
        "held_out_text": held,
        "eos_token_id": int(tok.eos_token_id),
    }
    path.write_text(json.dumps(payload))


def start(side: str, python: Path, seed: int, args: argparse.Namespace, workload: Path) -> subprocess.Popen[str]:
    log_dir = OUT_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-sentiment-{side}-s{seed}.log").open("w")
    cmd = [str(python), str(WORKER), f"--impl={side}", f"--workload={workload}", f"--seed={seed}"]
    cmd += [f"--budget-s={args.budget_s}", f"--threads={args.threads}", f"--max-new-tokens={args.max_new_tokens}"]
    cmd += [f"--samples={args.samples}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    LOG.info("start %s seed %d (log %s)", side, seed, log.name)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=env)


def collect(proc: subprocess.Popen[str], side: str, seed: int) -> dict[str, Any]:
    out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith(RESULT)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{side} seed {seed} failed (rc={proc.returncode}); see bench/out/logs/")
    result = dict(json.loads(lines[-1][len(RESULT) :]))
    save_json(f"sentiment-{side}-s{seed}", result)
    LOG.info("%s seed %d: gain %+.4f in %d steps", side, seed, result["gain"], result["n_steps"])
    return result


def run_seed(seed: int, args: argparse.Namespace, pythons: dict[str, Path], workload: Path) -> list[dict[str, Any]]:
    if not args.alternate:
        procs = {side: start(side, pythons[side], seed, args, workload) for side in SIDES}
        return [collect(proc, side, seed) for side, proc in procs.items()]
    order = SIDES if seed % 2 == 0 else SIDES[::-1]
    return [collect(start(side, pythons[side], seed, args, workload), side, seed) for side in order]


def side_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    gains = [r["gain"] for r in results]
    kls = [statistics.fmean(s["kl"] for s in r["steps"][-LAST_STEPS:]) for r in results if r["steps"]]
    minutes = [r["train_s"] / 60 for r in results]
    return {
        "seeds": [r["seed"] for r in results],
        "gain": [round(g, 4) for g in gains],
        "gain_mean": round(statistics.fmean(gains), 4),
        "gain_sd": round(statistics.stdev(gains), 4) if len(gains) > 1 else None,
        "before": [round(r["before"]["all"], 4) for r in results],
        "after": [round(r["after"]["all"], 4) for r in results],
        "greedy_gain": [round(r["after"]["greedy"] - r["before"]["greedy"], 4) for r in results],
        "steps": [r["n_steps"] for r in results],
        "kl_last": [round(k, 3) for k in kls],
        "kl_last_mean": round(statistics.fmean(kls), 3) if kls else None,
        "gain_per_min": round(statistics.fmean(g / m for g, m in zip(gains, minutes)), 5),
        "train_reward_first_last": [
            [r["steps"][0]["reward"], statistics.fmean(s["reward"] for s in r["steps"][-LAST_STEPS:])]
            for r in results
            if r["steps"]
        ],
    }


def summarise(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    sides = {side: side_summary([r for r in results if r["impl"] == side]) for side in SIDES}
    trl_gain = sides["trl"]["gain_mean"]
    return {
        "budget_s": args.budget_s,
        "threads": args.threads,
        "concurrent": not args.alternate,
        **sides,
        "gain_ratio": round(sides["ours"]["gain_mean"] / trl_gain, 3) if trl_gain else None,
    }


def print_table(summary: dict[str, Any]) -> None:
    rows = []
    for side in SIDES:
        s = summary[side]
        for i, seed in enumerate(s["seeds"]):
            rows.append([side, seed, s["steps"][i], s["before"][i], s["after"][i], s["gain"][i], s["kl_last"][i]])
    header = ["side", "seed", "steps", "held-out before", "after", "gain", "KL (last 5)"]
    print(format_table(header, rows), file=sys.stderr)


def plot(png: Path, results: list[dict[str, Any]]) -> None:
    """Train reward per wall-clock minute (one line per side and seed) and held-out before/after per seed."""
    import matplotlib  # a plotting extra of this bench only: pip install matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"ours": "tab:blue", "trl": "tab:orange"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    for r in results:
        t = [s["t"] / 60 for s in r["steps"]]
        window = [statistics.fmean(x["reward"] for x in r["steps"][max(0, i - 4) : i + 1]) for i in range(len(t))]
        left.plot(t, window, color=colours[r["impl"]], alpha=0.8, label=f"{r['impl']} seed {r['seed']}")
    left.set_xlabel("training wall clock (min)")
    left.set_ylabel("train reward (VADER, mean of 5 steps)")
    left.legend(fontsize=7, ncol=2)
    for k, side in enumerate(SIDES):
        mine = sorted((r for r in results if r["impl"] == side), key=lambda r: r["seed"])
        xs = [i + (k - 0.5) * 0.38 for i in range(len(mine))]
        right.bar(xs, [r["after"]["all"] - r["before"]["all"] for r in mine], 0.36, color=colours[side], label=side)
    right.axhline(0, color="black", linewidth=0.6)
    right.set_xticks(
        range(len({r["seed"] for r in results})), [f"seed {s}" for s in sorted({r["seed"] for r in results})]
    )
    right.set_ylabel("held-out gain (VADER)")
    right.legend(fontsize=8)
    fig.suptitle("TRL docs' sentiment loop, SmolLM2-135M, batch 8 / minibatch 4, same wall-clock budget")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=1200.0, help="training wall clock per side and seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each worker")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--samples", type=int, default=8, help="sampled held-out answers per prompt")
    p.add_argument("--alternate", action="store_true", help="one side at a time instead of both at once")
    p.add_argument("--plot", type=Path, default=None, help="write the plot (PNG) here")
    p.add_argument("--from", dest="from_files", nargs="*", type=Path, default=None, help="saved worker results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.from_files:
        results = [json.loads(p.read_text()) for p in args.from_files]
    else:
        pythons = {"ours": Path(sys.executable), "trl": ensure_trl_env()}
        workload = OUT_DIR / "sentiment-workload.json"
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        write_workload(workload)
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        results = [r for seed in seeds for r in run_seed(seed, args, pythons, workload)]
    summary = summarise(results, args)
    print_table(summary)
    if args.plot:
        plot(args.plot, results)
    print(RESULT + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

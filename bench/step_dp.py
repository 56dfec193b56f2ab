"""Data-parallel `PPOTrainer.step` on CPU: seconds per step of one global batch with 1 process and with 2.

    python bench/step_dp.py                      # tiny and gpt2-6x384, global batch 8, responses of 16 tokens
    python bench/step_dp.py --models tiny --batch 16 --repeats 5

The same global batch (seeded) is trained by one process holding all of it (`batch_size = B`; with one torch
thread, and with all cores as threads) and by two processes holding half each (`torchrun`, gloo on 127.0.0.1,
`batch_size = B / 2`, the cores shared out: one thread each on a 2-core machine). Reported per run: median wall
seconds per step, CPU seconds per global step summed over the processes (robust to other load on a shared
machine), and each process's peak RSS. Each process times its own
steps (every step ends in collectives, so the processes finish a step together). The last stdout line is
`RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULT_PREFIX = "RESULT "
LOG = logging.getLogger("bench.step_dp")


# ------------------------------------------------------------------------------------------------- worker
def _worker(args: argparse.Namespace) -> None:
    """One process: build the trainer on this process's share of the batch, warm up, time `repeats` steps."""
    sys.path.insert(0, str(BENCH))
    sys.path.insert(0, str(ROOT))
    from step_worker import GPT2_EOS_ID, GPT2_SPECS, gpt2_base, ours_tiny_tokenizer, rss_status_mb

    from ppo_core import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.set_num_threads(args.threads)
    spec = GPT2_SPECS[args.model]
    model = AutoModelForCausalLMWithValueHead.from_pretrained(gpt2_base(spec, seed=0))
    local = args.batch // world
    config = PPOConfig(batch_size=local, mini_batch_size=local, seed=0)
    trainer = PPOTrainer(config, model, tokenizer=ours_tiny_tokenizer())
    rank = trainer.accelerator.process_index
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(8, 25, (args.batch,), generator=g).tolist()
    queries = [torch.randint(GPT2_EOS_ID + 1, spec.vocab_size, (n,), generator=g) for n in lengths]
    responses = [torch.randint(GPT2_EOS_ID + 1, spec.vocab_size, (args.resp_len,), generator=g) for _ in lengths]
    scores = list(torch.randn(args.batch, generator=g))
    mine = slice(rank * local, (rank + 1) * local)
    trainer.step(queries[mine], responses[mine], scores[mine])  # warm-up
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.step(queries[mine], responses[mine], scores[mine])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    mine_stats = torch.tensor([[rss_status_mb("VmHWM"), statistics.median(cpu)]], dtype=torch.float64)
    every = trainer.collectives.gather_rows(mine_stats)  # (P, 2)
    if rank == 0:
        result = {
            "step_s": times,
            "step_median_s": statistics.median(times),
            "peak_rss_mb": every[:, 0].tolist(),
            "cpu_s_per_step": float(every[:, 1].sum()),  # all processes' CPU seconds for one global step
        }
        print(RESULT_PREFIX + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------- launcher
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(model: str, batch: int, resp_len: int, repeats: int, processes: int, threads: int) -> dict[str, Any]:
    worker = [str(Path(__file__).resolve()), "--worker", f"--model={model}", f"--batch={batch}"]
    worker += [f"--resp-len={resp_len}", f"--repeats={repeats}", f"--threads={threads}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    if processes == 1:
        command = [sys.executable, *worker]
    else:
        env.update(ACCELERATE_USE_CPU="1", GLOO_SOCKET_IFNAME="lo")
        launch = ["-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={processes}"]
        launch += ["--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
        command = [sys.executable, *launch, *worker]
    LOG.info("%s b%d L%d: %d process(es) x %d thread(s)", model, batch, resp_len, processes, threads)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{model} with {processes} processes failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return {"model": model, "batch": batch, "resp_len": resp_len, "processes": processes, "threads": threads, **result}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--models", default="tiny,gpt2-6x384")
    p.add_argument("--model", default="tiny", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=8, help="global batch (split between the processes)")
    p.add_argument("--resp-len", type=int, default=16)
    p.add_argument("--repeats", type=int, default=0, help="timed steps (default: 10 tiny, 3 otherwise)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in total (default: all cores)")
    args = p.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    cores = args.threads or os.cpu_count() or 1
    rows = []
    for model in args.models.split(","):
        repeats = args.repeats or (10 if model == "tiny" else 3)
        runs = [
            _run(model, args.batch, args.resp_len, repeats, 1, 1),
            _run(model, args.batch, args.resp_len, repeats, 1, cores),
            _run(model, args.batch, args.resp_len, repeats, 2, max(1, cores // 2)),
        ]
        for r in runs:
            LOG.info(
                "%s: %d process(es) x %d thread(s): %.3f s/step, %.3f CPU s/step, peak RSS %s MB",
                model,
                r["processes"],
                r["threads"],
                r["step_median_s"],
                r["cpu_s_per_step"],
                [round(x) for x in r["peak_rss_mb"]],
            )
        rows.append({"model": model, "runs": runs})
    print(RESULT_PREFIX + json.dumps({"cores": cores, "results": rows}), flush=True)


if __name__ == "__main__":
    main()

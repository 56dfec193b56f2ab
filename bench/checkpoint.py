"""What durability costs on the app's default model: a checkpoint (write + fsync + manifest), its size, its check at
start-up, and the whole-state snapshot taken before every step, next to one PPO step.

    .venv/bin/python bench/checkpoint.py                  # SmolLM2-135M-Instruct, batch 8, 48 response tokens
    .venv/bin/python bench/checkpoint.py --model <folder> --repeats 3 --dir /data/ckpt-bench

The trainer is built exactly as the app builds it (app.models.load_models), and one real step runs first so the
optimizer holds Adam's moments, as in every checkpoint after the first step. The checkpoints are written under
`--dir` (default: a temporary folder inside bench/out/, the same disk as data/) and deleted afterwards. The last
stdout line is `RESULT {json}`, with `checkpoint_every_min`: the smallest interval that keeps checkpoints under 5%
of training time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's `storage`, not bench/storage.py

import torch

from app.checkpoints import TrainerState, save_checkpoint, verify_checkpoint
from app.models import choose_runtime, load_models
from app.settings import AppSettings
from ppo_core import PPOTrainer
from ppo_core.trainer_state import TrainerSnapshot

LOG = logging.getLogger("bench.checkpoint")
OUT = Path(__file__).resolve().parent / "out"
OVERHEAD_BUDGET = 0.05


def synthetic_batch(trainer: PPOTrainer, batch: int, query_len: int, resp_len: int) -> tuple[list[Any], ...]:
    g = torch.Generator().manual_seed(0)
    vocab = int(trainer.tokenizer.vocab_size)
    queries = [torch.randint(10, vocab, (query_len,), generator=g) for _ in range(batch)]
    responses = [torch.randint(10, vocab, (resp_len,), generator=g) for _ in range(batch)]
    scores = [torch.tensor(float(i % 3) - 1.0) for i in range(batch)]
    return queries, responses, scores


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(trainer: PPOTrainer, root: Path, repeats: int, model: str) -> dict[str, Any]:
    saves, verifies, snapshots, restores = [], [], [], []
    size = 0
    snapshot = TrainerSnapshot(trainer).capture()  # the first capture also allocates the file
    for i in range(repeats):
        state = TrainerState(i + 1, float(trainer.kl_ctl.value), trainer.current_step, model)
        save_s, folder = timed(lambda state=state: save_checkpoint(root, trainer, state))
        saves.append(save_s)
        size = folder_bytes(folder)
        verify_s, problem = timed(lambda folder=folder: verify_checkpoint(folder))
        assert problem is None, problem
        verifies.append(verify_s)
        snap_s, _ = timed(snapshot.capture)  # reused, as the trainer thread does: the file has its size
        restore_s, _ = timed(snapshot.restore)
        snapshots.append(snap_s)
        restores.append(restore_s)
        shutil.rmtree(folder)
    snapshot.close()
    return {
        "save_s": statistics.median(saves),
        "save_s_all": saves,
        "size_mb": size / 2**20,
        "verify_s": statistics.median(verifies),
        "snapshot_s": statistics.median(snapshots),
        "restore_s": statistics.median(restores),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=AppSettings.model)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--resp-len", type=int, default=48)
    p.add_argument("--query-len", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--dir", type=Path, default=None, help="where the checkpoints are written (then deleted)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    args = parse_args(argv)
    settings = AppSettings(model=args.model, batch_size=args.batch, device="cpu")
    runtime = choose_runtime(settings)
    torch.set_num_threads(runtime.train_threads)  # the trainer thread's share, as in the app
    load_s, models = timed(lambda: load_models(settings, runtime, None, 0))
    trainer = models.trainer
    batch = synthetic_batch(trainer, args.batch, args.query_len, args.resp_len)
    step_s, _ = timed(lambda: trainer.step(*batch))
    LOG.info("model loaded in %.1f s; one PPO step took %.1f s", load_s, step_s)
    OUT.mkdir(parents=True, exist_ok=True)
    root = args.dir or Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=OUT))
    try:
        result = measure(trainer, root, args.repeats, args.model)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    every = max(1, math.ceil(result["save_s"] / (OVERHEAD_BUDGET * step_s)))
    result.update(
        model=args.model,
        batch=args.batch,
        resp_len=args.resp_len,
        threads=runtime.train_threads,
        step_s=step_s,
        save_over_step=result["save_s"] / step_s,
        snapshot_over_step=(result["snapshot_s"]) / step_s,
        checkpoint_every_min=every,
    )
    LOG.info(
        "checkpoint %.0f MB: save %.1f s (%.0f%% of a step), verify %.1f s; snapshot %.2f s, restore %.2f s",
        result["size_mb"],
        result["save_s"],
        100 * result["save_over_step"],
        result["verify_s"],
        result["snapshot_s"],
        result["restore_s"],
    )
    print("RESULT " + json.dumps(result, sort_keys=True))
    return result


if __name__ == "__main__":
    main()

"""One process of the data-parallel test (`test_data_parallel.py` starts two with torchrun).

Each process steps on its half of every batch, then writes what the test compares: its weights, its statistics,
and how many times it saved or logged. The batches and the config are shared with the test's one-process run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

HALF = 2  # samples per process per step
STEPS = 2
RESPONSE_LENGTHS = [2, 3, 6, 8]
LR = 0.5  # plain SGD: the weights move by the gradient itself, so a wrong gradient shows (Adam's first steps
# are ~lr * sign(grad), which turns float noise on near-zero gradients into lr-sized differences)


def trainer(batch_size: int, tokenizer: Any, out_dir: Path | None = None, accumulate: bool = False) -> Any:
    """The trainer of both runs, on the same tiny model."""
    from ppo_core import PPOConfig, PPOTrainer
    from tests.ppo_core.factory import make_model

    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No dataset is provided")
        cfg = config(batch_size, out_dir, accumulate)
        return PPOTrainer(PPOConfig(**cfg), model, tokenizer=tokenizer, optimizer=optimizer)


def config(batch_size: int, out_dir: Path | None = None, accumulate: bool = False) -> dict[str, Any]:
    """PPOConfig fields of both runs: one minibatch per process (or, with `accumulate`, two accumulated
    minibatches per optimizer step), global score normalisation."""
    cfg: dict[str, Any] = {
        "batch_size": batch_size,
        "mini_batch_size": batch_size // 2 if accumulate else batch_size,
        "gradient_accumulation_steps": 2 if accumulate else 1,
        "ppo_epochs": 2,
        "use_score_scaling": True,
        "use_score_norm": True,
        "seed": 0,
    }
    if out_dir is not None:
        cfg.update(log_with="tensorboard", project_kwargs={"logging_dir": str(out_dir / "runs")})
    return cfg


def batches() -> list[tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]]:
    """STEPS global batches of 2 * HALF samples; the second half's queries and responses are longer, so the
    two processes pad to different widths."""
    g = torch.Generator().manual_seed(7)
    out = []
    for step in range(STEPS):
        q_lens, r_lens = [3, 4, 6, 9], RESPONSE_LENGTHS
        queries = [torch.randint(1, 300, (n,), generator=g) for n in q_lens]
        responses = [torch.randint(1, 300, (n,), generator=g) for n in r_lens]
        scores = [torch.tensor(float(i * (step + 1)) - 1.5) for i in range(2 * HALF)]
        out.append((queries, responses, scores))
    return out


def _jsonable(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in stats.items()}


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def main(out_dir: Path, accumulate: bool) -> None:
    from ppo_core import AutoModelForCausalLMWithValueHead
    from ppo_core.tiny import tiny_tokenizer

    saves = {"n": 0}
    original_save = AutoModelForCausalLMWithValueHead.save_pretrained

    def counting_save(self: Any, *args: Any, **kwargs: Any) -> None:
        saves["n"] += 1
        original_save(self, *args, **kwargs)

    AutoModelForCausalLMWithValueHead.save_pretrained = counting_save  # type: ignore[method-assign]
    logs = _Count()
    logging.getLogger("ppo_core").addHandler(logs)
    logging.getLogger("ppo_core").setLevel(logging.INFO)
    ppo = trainer(HALF, tiny_tokenizer(), out_dir, accumulate)
    rank = ppo.accelerator.process_index
    all_stats = []
    for queries, responses, scores in batches():
        mine = slice(rank * HALF, (rank + 1) * HALF)
        stats = ppo.step(queries[mine], responses[mine], scores[mine])
        ppo.log_stats(stats, None, scores[mine])
        all_stats.append(_jsonable(stats))
    ppo.save_pretrained(str(out_dir / "model"))
    model = ppo.accelerator.unwrap_model(ppo.model)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out_dir / f"weights{rank}.pt")
    record = {
        "world_size": ppo.accelerator.num_processes,
        "stats": all_stats,
        "saves": saves["n"],
        "log_lines": logs.count,
        "kl_coef": ppo.kl_ctl.value,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main(Path(sys.argv[1]), accumulate=sys.argv[2:] == ["accumulate"])

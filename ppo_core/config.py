"""`PPOConfig`: TRL 0.11's field names and defaults, validated at construction."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ppo_core.host_memory import MAX_MMAP_THRESHOLD

KLPenalty = Literal["kl", "abs", "mse", "full"]
_KL_PENALTIES = ("kl", "abs", "mse", "full")


@dataclass
class PPOConfig:
    """Hyper-parameters of `PPOTrainer`. Same names and defaults as TRL 0.11.4's `PPOConfig`."""

    exp_name: str = field(default_factory=lambda: os.path.basename(sys.argv[0])[: -len(".py")] or "ppo")
    """Name of this experiment (used for the TensorBoard run folder)."""
    seed: int = 0
    """Seed for `random`, `numpy` and `torch`, set when the trainer is built."""
    log_with: Literal["tensorboard"] | None = None
    """`"tensorboard"` writes `log_stats` to TensorBoard; Python logging always happens."""
    task_name: str | None = None
    """Free-form name of the task, kept for logging."""
    model_name: str = "gpt2"
    """Name of the model (a registry name, folder or hub id); informational, as in TRL."""
    query_dataset: str = "imdb"
    """Name of the query dataset; informational, as in TRL."""
    reward_model: str = "sentiment-analysis:lvwerra/distilbert-imdb"
    """Name of the reward model; informational, as in TRL."""
    remove_unused_columns: bool = True
    """Kept for TRL compatibility; the default collator keeps every column."""
    tracker_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of each tracker, by tracker name, as TRL hands them to `accelerator.init_trackers`:
    `{"tensorboard": {...}}` goes to TensorBoard's `SummaryWriter` (e.g. `flush_secs`, `filename_suffix`);
    entries for other trackers are ignored (TensorBoard is the only one here)."""
    accelerator_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `accelerate.Accelerator` (e.g. `{"mixed_precision": "bf16"}`)."""
    project_kwargs: dict[str, Any] = field(default_factory=dict)
    """`{"logging_dir": ...}` chooses where TensorBoard runs go (default `runs/`)."""
    tracker_project_name: str = "trl"
    """Sub-folder of the logging dir for this project's runs."""
    push_to_hub_if_best_kwargs: dict[str, Any] = field(default_factory=dict)
    """Kept for TRL compatibility (nothing is pushed: the machines here are offline)."""

    steps: int = 20000
    """Number of training steps (informational: the caller drives `step()`)."""
    learning_rate: float = 1.41e-5
    """Adam learning rate of the default optimizer."""
    adap_kl_ctrl: bool = True
    """Use the adaptive KL controller (Ziegler et al. 2019) instead of a fixed coefficient."""
    init_kl_coef: float = 0.2
    """Initial KL penalty coefficient."""
    kl_penalty: KLPenalty = "kl"
    """Per-token KL estimate: `kl` (logp - ref), `abs`, `mse` (0.5 * diff^2) or `full` (exact, over the vocab)."""
    target: float = 6.0
    """Target KL of the adaptive controller."""
    horizon: float = 10000.0
    """Horizon of the adaptive controller."""
    gamma: float = 1.0
    """Discount factor of GAE."""
    lam: float = 0.95
    """Lambda of GAE."""
    cliprange: float = 0.2
    """PPO policy ratio clip range."""
    cliprange_value: float = 0.2
    """Value prediction clip range."""
    vf_coef: float = 0.1
    """Weight of the value loss in the total loss."""
    batch_size: int = 128
    """Samples per `step()` (and per dataloader batch)."""
    forward_batch_size: int | None = None
    """Deprecated in TRL; use `mini_batch_size`. Must stay None."""
    mini_batch_size: int = 128
    """Samples per forward/backward pass of the optimisation."""
    gradient_accumulation_steps: int = 1
    """Minibatches accumulated before each optimizer step."""
    world_size: int | None = None
    """Set by the trainer from the accelerator (number of processes)."""
    ppo_epochs: int = 4
    """Passes over the batch per `step()`."""
    max_grad_norm: float | None = None
    """Clip the gradient norm to this value (None: no clipping)."""
    optimize_cuda_cache: bool | None = None
    """Deprecated in TRL; use `optimize_device_cache`."""
    optimize_device_cache: bool = False
    """Give back memory between the stages of a step (before the rollout, after it, after the optimisation):
    garbage collection, the accelerator's cache, and on the CPU glibc's free heap pages (`malloc_trim`).
    Costs a `gc.collect()` per stage; see `ppo_core/device_cache.py`."""
    early_stopping: bool = False
    """Stop the PPO epochs of a step when policy KL exceeds 1.5 * `target_kl`."""
    target_kl: float = 1.0
    """KL target of early stopping."""
    compare_steps: int = 1
    """Kept for TRL compatibility."""
    ratio_threshold: float = 10.0
    """Skip a minibatch whose mean probability ratio exceeds this (TRL zeroes the loss; we skip the update)."""
    use_score_scaling: bool = False
    """Divide scores by their running standard deviation."""
    use_score_norm: bool = False
    """With `use_score_scaling`, also subtract the running mean."""
    score_clip: float | None = None
    """Clip (scaled) scores to [-score_clip, score_clip]."""
    whiten_rewards: bool = False
    """Whiten per-token rewards before computing advantages."""
    gradient_checkpointing: bool = False
    """Enable gradient checkpointing on the policy: layers recompute their activations in the backward pass
    (less memory, about one more forward per update). Active with dropout off too (see `ppo_core/modes.py`)."""
    is_encoder_decoder: bool | None = None
    """Set by the trainer; only decoder-only models are supported."""
    is_peft_model: bool | None = None
    """Set by the trainer from the model."""

    # Not in TRL: behaviours that fix its known problems, each off-switchable.
    dropout_during_training: bool = False
    """Keep dropout on in optimisation passes. Off by default: dropout makes the PPO ratio != 1 before any
    update (Huang et al. 2023, "The N implementation details of RLHF with PPO", sec. "disable dropout")."""
    rollback_nonfinite: bool = True
    """Keep a CPU copy of the trainable weights during a step (and of the optimizer state when training on an
    accelerator), so a step that meets a NaN/inf loss or gradient after some updates is rolled back whole.
    Without it, non-finite updates are still never applied, but earlier updates of that step stay."""
    first_update_from_rollout: bool = True
    """When one minibatch is the whole batch (`mini_batch_size == batch_size`, TRL's default) and dropout is off,
    the rollout's policy forward keeps its autograd graph and is also the forward of the first update: the two are
    the same computation at the same weights, so one of the 1 + 1 + 3 x `ppo_epochs` passes of a step is saved
    (measured ~5 % of a SmolLM2 step at 4 epochs) for the memory the first update holds anyway."""
    host_mmap_threshold: int | None = 8 * 1024 * 1024
    """When the policy is on the CPU and the C library is glibc: allocations of at least this many bytes get pages
    of their own that go back to the system when freed (mallopt M_MMAP_THRESHOLD, process-wide, set when the
    trainer is built), instead of glibc's sliding threshold letting the heap keep the holes a step's logits and
    gradients leave. gpt2-6x384 b8 L16: peak RSS 1394-1444 -> 1264-1274 MB (TRL 0.11.4: 1365-1370) for +15 % step
    time; SmolLM2 b8 L16: 3643 -> 3547 MB at the same step time. See `ppo_core/host_memory.py`. None leaves the
    allocator alone."""
    importance_weight_cap: float = 1.0
    """Truncation of the off-policy weight pi_old / mu when `step(..., behaviour_logprobs=...)` is given
    (decoupled PPO, Hilton et al. 2021; truncation as in V-trace, Espeholt et al. 2018)."""

    def __post_init__(self) -> None:
        _check_positive(self, "batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs")
        _check_positive_float(self, "learning_rate", "horizon", "target", "ratio_threshold", "target_kl")
        _check_positive_float(self, "importance_weight_cap")
        if self.kl_penalty not in _KL_PENALTIES:
            raise ValueError(f"kl_penalty must be one of {_KL_PENALTIES}, got {self.kl_penalty!r}")
        if self.log_with not in (None, "tensorboard"):
            raise ValueError(f"log_with must be None or 'tensorboard', got {self.log_with!r}")
        if self.forward_batch_size is not None:
            raise ValueError("forward_batch_size is deprecated (as in TRL): use mini_batch_size")
        if self.batch_size % (self.mini_batch_size * self.gradient_accumulation_steps) != 0:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of mini_batch_size * "
                f"gradient_accumulation_steps ({self.mini_batch_size} * {self.gradient_accumulation_steps})"
            )
        for name in ("gamma", "lam"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        for name in ("cliprange", "cliprange_value", "vf_coef", "init_kl_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if self.score_clip is not None and not self.score_clip > 0:
            raise ValueError(f"score_clip must be > 0 or None, got {self.score_clip}")
        if self.use_score_norm and not self.use_score_scaling:
            raise ValueError("use_score_norm only applies with use_score_scaling=True")
        if self.host_mmap_threshold is not None and not 0 < self.host_mmap_threshold <= MAX_MMAP_THRESHOLD:
            raise ValueError(f"host_mmap_threshold must be in (0, {MAX_MMAP_THRESHOLD}] bytes or None")

    @property
    def num_minibatches(self) -> int:
        """Minibatches per PPO epoch."""
        return self.batch_size // self.mini_batch_size

    @property
    def backward_batch_size(self) -> int:
        """Samples per optimizer step: `mini_batch_size * gradient_accumulation_steps`."""
        return self.mini_batch_size * self.gradient_accumulation_steps

    @property
    def global_backward_batch_size(self) -> int:
        """`backward_batch_size` over all processes."""
        return self.backward_batch_size * (self.world_size or 1)

    @property
    def global_batch_size(self) -> int:
        """`batch_size` over all processes."""
        return self.batch_size * (self.world_size or 1)

    def resized(self, batch_size: int, mini_batch_size: int | None = None) -> PPOConfig:
        """A copy for batches of `batch_size` (validated as any config); `mini_batch_size` None keeps the ratio
        of one minibatch per batch when this config has it, else this config's minibatch."""
        if mini_batch_size is None:
            mini_batch_size = batch_size if self.mini_batch_size == self.batch_size else self.mini_batch_size
        return replace(self, batch_size=batch_size, mini_batch_size=mini_batch_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (for logging and for the step records of the app)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def _check_positive(cfg: PPOConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_positive_float(cfg: PPOConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

"""The PPO optimisation of one step: epochs x shuffled minibatches, exact gradient accumulation, guards.

Guards that TRL 0.11.4 lacks:
- a minibatch whose mean ratio exceeds `ratio_threshold` is skipped (TRL multiplies its loss by 0 and still
  steps Adam, whose momentum then moves the weights anyway);
- a NaN/inf loss or gradient never reaches the weights: the step stops, earlier updates of the same step are
  rolled back from a snapshot, and `NonFiniteError` is raised.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import torch
from torch import nn

from ppo_core.losses import ppo_losses
from ppo_core.masked import entropy_from_logits, masked_mean, masked_sum
from ppo_core.modes import optimisation_mode
from ppo_core.rollout import PaddedBatch, policy_forward


class NonFiniteError(ValueError):
    """A step met a NaN or infinite value; the model and optimizer were left as they were before the step."""


@dataclass(frozen=True)
class OptimTargets:
    """Per-sample tensors the minibatches slice: all `(B, R)`; `importance_weights` may be None."""

    old_logprobs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    importance_weights: torch.Tensor | None


@dataclass(frozen=True)
class PolicyPass:
    """Policy outputs with their autograd graph, at the weights before any update, rows in batch order:
    the rollout's forward, reused as the forward of the first update (`PPOConfig.first_update_from_rollout`)."""

    logprobs: torch.Tensor  # (B, R)
    values: torch.Tensor  # (B, R)
    logits: torch.Tensor  # (B, R, V)

    def select(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.logprobs[index], self.values[index], self.logits[index]  # rows `index`, graph kept


@dataclass(frozen=True)
class OptimSettings:
    ppo_epochs: int
    backward_batch_size: int
    mini_batch_size: int
    cliprange: float
    cliprange_value: float
    vf_coef: float
    ratio_threshold: float
    max_grad_norm: float | None
    early_stopping: bool
    target_kl: float
    dropout_during_training: bool


class Snapshot:
    """The trainable weights before a step (and, on an accelerator, the optimizer state), to undo the step.

    On an accelerator the copy goes to host memory (free on the device) with the optimizer state, so a rollback is
    exact. On the CPU the weights are spilled to an anonymous temporary file: the copy sits in the page cache, not
    in the process's memory, and is only read back on a rollback; the optimizer keeps the moments of the finite
    updates it had made (copying Adam's two moments would triple the cost of every step for a rare event).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.on_accelerator = any(p.device.type != "cpu" for p in self.params)
        self.host: list[torch.Tensor] = []
        self.optimizer_state: dict[str, Any] | None = None
        self.spill: IO[bytes] | None = None
        if self.on_accelerator:
            self.host = [p.detach().to("cpu", copy=True) for p in self.params]
            self.optimizer_state = _to_cpu_copy(optimizer.state_dict())
        else:
            self.spill = tempfile.TemporaryFile()  # noqa: SIM115 - lives across the step; close() deletes it
            torch.save([p.detach() for p in self.params], self.spill)

    def restore(self, optimizer: torch.optim.Optimizer) -> None:
        saved = self.host
        if self.spill is not None:
            self.spill.seek(0)
            saved = torch.load(self.spill, weights_only=True)
        with torch.no_grad():
            for param, value in zip(self.params, saved):
                param.copy_(value.to(param.device))
        if self.optimizer_state is not None:
            optimizer.load_state_dict(self.optimizer_state)

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()


def _to_cpu_copy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu_copy(v) for v in obj]
    return obj


def run_ppo_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    accelerator: Any,
    batch: PaddedBatch,
    targets: OptimTargets,
    settings: OptimSettings,
    rollback: bool,
    first_pass: PolicyPass | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Train on the batch; returns one stats dict per minibatch that ran. `first_pass` (every row, at the
    weights before the step) replaces the forward of the first minibatch."""
    n_updates = settings.ppo_epochs * math.ceil(batch.input_ids.shape[0] / settings.backward_batch_size)
    # One update only: it is checked before it is applied, so nothing can need undoing.
    snapshot = Snapshot(model, optimizer) if rollback and n_updates > 1 else None
    all_stats: list[dict[str, torch.Tensor]] = []
    try:
        with optimisation_mode(model, settings.dropout_during_training):
            for backward_inds in _backward_batches(batch.input_ids.shape[0], settings):
                stats = _backward_batch(
                    model, optimizer, accelerator, batch, targets, settings, backward_inds, first_pass
                )
                first_pass = None  # the weights have moved: every later minibatch runs its own forward
                all_stats.extend(stats)
                if settings.early_stopping and stats and _too_far(stats[-1], settings.target_kl):
                    break
    except NonFiniteError:
        optimizer.zero_grad(set_to_none=True)
        if snapshot is not None:
            snapshot.restore(optimizer)
        raise
    finally:
        if snapshot is not None:
            snapshot.close()
    return all_stats


def _backward_batches(batch_size: int, settings: OptimSettings) -> Iterator[torch.Tensor]:
    for _ in range(settings.ppo_epochs):
        perm = torch.randperm(batch_size)
        for start in range(0, batch_size, settings.backward_batch_size):
            yield perm[start : start + settings.backward_batch_size]


def _too_far(stats: dict[str, torch.Tensor], target_kl: float) -> bool:
    """Early stopping rule of TRL: policy KL above 1.5 x target."""
    return float(stats["policy/policykl"]) > 1.5 * target_kl


def _backward_batch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    accelerator: Any,
    batch: PaddedBatch,
    targets: OptimTargets,
    settings: OptimSettings,
    inds: torch.Tensor,
    first_pass: PolicyPass | None,
) -> list[dict[str, torch.Tensor]]:
    """Accumulate gradients over the minibatches of `inds`, then take one checked optimizer step."""
    n_tokens = batch.response_mask[inds].sum().clamp(min=1)
    stats: list[dict[str, torch.Tensor]] = []
    stepped = False
    for start in range(0, len(inds), settings.mini_batch_size):
        mb_inds = inds[start : start + settings.mini_batch_size].to(batch.input_ids.device)
        outputs = first_pass.select(mb_inds) if first_pass is not None else None
        first_pass = None
        mb_stats, contributed = _minibatch(model, accelerator, batch, targets, settings, mb_inds, n_tokens, outputs)
        stats.append(mb_stats)
        stepped |= contributed
    if stepped:
        _checked_step(model, optimizer, accelerator, settings.max_grad_norm)
    optimizer.zero_grad(set_to_none=True)
    return stats


def _minibatch(
    model: nn.Module,
    accelerator: Any,
    batch: PaddedBatch,
    targets: OptimTargets,
    settings: OptimSettings,
    mb_inds: torch.Tensor,
    n_tokens: torch.Tensor,
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Forward (unless `outputs` already holds it) + backward of one minibatch; the loss is normalised by the
    backward batch's token count."""
    mb = batch.select(mb_inds)
    mask = mb.response_mask
    if outputs is None:
        with accelerator.autocast():
            outputs = policy_forward(model, mb)
    logprobs, vpreds, logits = outputs
    weights = targets.importance_weights[mb_inds] if targets.importance_weights is not None else None
    losses = ppo_losses(
        logprobs,
        targets.old_logprobs[mb_inds],
        vpreds,
        targets.values[mb_inds],
        targets.advantages[mb_inds],
        targets.returns[mb_inds],
        mask,
        settings.cliprange,
        settings.cliprange_value,
        weights,
    )
    stats = _loss_stats(losses.pg_losses, losses.vf_losses, mask, settings.vf_coef)
    stats.update(losses.stats)
    stats["policy/entropy"] = masked_mean(entropy_from_logits(logits.detach()), mask)
    stats["policy/advantages"] = targets.advantages[mb_inds][mask].detach()
    stats["policy/ratio"] = losses.ratio[mask]
    if float(losses.stats["policy/ratio_mean"]) > settings.ratio_threshold:
        warnings.warn(
            f"mean ratio {float(losses.stats['policy/ratio_mean']):.2f} > ratio_threshold "
            f"{settings.ratio_threshold}: minibatch skipped",
            UserWarning,
            stacklevel=2,
        )
        return stats, False
    loss = (masked_sum(losses.pg_losses, mask) + settings.vf_coef * masked_sum(losses.vf_losses, mask)) / n_tokens
    if not bool(torch.isfinite(loss)):
        raise NonFiniteError(f"PPO loss is {float(loss.detach())}: step refused, weights left as before the step")
    accelerator.backward(loss)
    return stats, True


def _loss_stats(
    pg_losses: torch.Tensor, vf_losses: torch.Tensor, mask: torch.Tensor, vf_coef: float
) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        pg_loss = masked_mean(pg_losses, mask)
        vf_loss = masked_mean(vf_losses, mask)
        return {"loss/policy": pg_loss, "loss/value": vf_loss, "loss/total": pg_loss + vf_coef * vf_loss}


def _checked_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, accelerator: Any, max_grad_norm: float | None
) -> None:
    params = [p for p in model.parameters() if p.grad is not None]
    if max_grad_norm is not None:
        norm = accelerator.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if not bool(torch.isfinite(torch.as_tensor(norm))):
        raise NonFiniteError("gradient norm is not finite: step refused, weights left as before the step")
    optimizer.step()

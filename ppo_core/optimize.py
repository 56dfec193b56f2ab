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

from ppo_core.collectives import Collectives
from ppo_core.losses import minibatch_stats, ppo_losses
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
        """Rows `index`, graph kept. Every row in order returns the tensors themselves: indexing would copy the
        `(B, R, V)` logits, and the copy and its backward would sit beside the original at the memory peak."""
        if len(index) == len(self.logprobs) and bool((index == torch.arange(len(index), device=index.device)).all()):
            return self.logprobs, self.values, self.logits
        return self.logprobs[index], self.values[index], self.logits[index]


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


@dataclass(frozen=True)
class Learner:
    """What the optimisation updates, and how it reaches the other processes of a data-parallel run."""

    model: nn.Module  # as `accelerator.prepare` returned it: DDP-wrapped with several processes
    optimizer: torch.optim.Optimizer
    accelerator: Any
    collectives: Collectives


def run_ppo_epochs(
    learner: Learner,
    batch: PaddedBatch,
    targets: OptimTargets,
    settings: OptimSettings,
    rollback: bool,
    first_pass: PolicyPass | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Train on the batch; returns one stats dict per minibatch that ran (over every process's minibatch).
    `first_pass` (every row, at the weights before the step) replaces the forward of the first minibatch."""
    model, optimizer = learner.model, learner.optimizer
    n_updates = settings.ppo_epochs * math.ceil(batch.input_ids.shape[0] / settings.backward_batch_size)
    # One update only: it is checked before it is applied, so nothing can need undoing.
    snapshot = Snapshot(model, optimizer) if rollback and n_updates > 1 else None
    all_stats: list[dict[str, torch.Tensor]] = []
    try:
        with optimisation_mode(model, settings.dropout_during_training):
            for backward_inds in _backward_batches(batch.input_ids.shape[0], settings):
                stats = _backward_batch(learner, batch, targets, settings, backward_inds, first_pass)
                first_pass = None  # the weights have moved: every later minibatch runs its own forward
                all_stats.extend(stats)
                # the policy KL is global, so every process stops at the same update
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
    learner: Learner,
    batch: PaddedBatch,
    targets: OptimTargets,
    settings: OptimSettings,
    inds: torch.Tensor,
    first_pass: PolicyPass | None,
) -> list[dict[str, torch.Tensor]]:
    """Accumulate gradients over the minibatches of `inds`, then take one checked optimizer step.

    The loss is normalised by the token count of the backward batch over every process, so the gradient does
    not depend on how the samples are split between minibatches or processes. Every process takes the same
    decisions (skip, refuse, stop) from global statistics, so none waits for a collective another skipped.
    """
    n_tokens = learner.collectives.sum(batch.response_mask[inds].sum()).clamp(min=1)  # global token count
    stats: list[dict[str, torch.Tensor]] = []
    stepped = False
    for start in range(0, len(inds), settings.mini_batch_size):
        mb_inds = inds[start : start + settings.mini_batch_size].to(batch.input_ids.device)  # (b,)
        if first_pass is not None:
            # the order of rows inside a minibatch changes no loss or statistic: take the rollout's order
            mb_inds = mb_inds.sort().values
        mb_outputs = first_pass.select(mb_inds) if first_pass is not None else None
        first_pass = None
        mb_stats, contributed = _minibatch(learner, batch, targets, settings, mb_inds, n_tokens, mb_outputs)
        stats.append(mb_stats)
        stepped |= contributed
    if stepped:
        _checked_step(learner.model, learner.optimizer, learner.accelerator, settings.max_grad_norm)
    learner.optimizer.zero_grad(set_to_none=True)
    return stats


def _minibatch(
    learner: Learner,
    batch: PaddedBatch,
    targets: OptimTargets,
    settings: OptimSettings,
    mb_inds: torch.Tensor,
    n_tokens: torch.Tensor,
    mb_outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """Forward (unless `mb_outputs` already holds it) + backward of one minibatch of `b` rows.

    DDP averages gradients over the P processes; the loss is scaled by P so the update follows the gradient of
    (sum of every process's token losses) / (global token count), as one process holding the whole batch would.
    """
    mb = batch.select(mb_inds)
    mb_mask = mb.response_mask  # (b, R)
    if mb_outputs is None:
        with learner.accelerator.autocast():
            mb_outputs = policy_forward(learner.model, mb)
    mb_logprobs, mb_vpreds, mb_logits = mb_outputs  # (b, R), (b, R), (b, R, V)
    mb_weights = targets.importance_weights[mb_inds] if targets.importance_weights is not None else None  # (b, R)
    losses = ppo_losses(
        mb_logprobs,
        targets.old_logprobs[mb_inds],  # (b, R)
        mb_vpreds,
        targets.values[mb_inds],  # (b, R)
        targets.advantages[mb_inds],  # (b, R)
        targets.returns[mb_inds],  # (b, R)
        mb_mask,
        settings.cliprange,
        settings.cliprange_value,
        mb_weights,
    )
    terms = dict(losses.terms)  # each (b, R)
    terms["pg_loss"], terms["vf_loss"] = losses.pg_losses.detach(), losses.vf_losses.detach()
    terms["entropy"] = entropy_from_logits(mb_logits.detach())
    stats = _global_stats(learner.collectives, terms, mb_mask, settings.vf_coef)
    if float(stats["policy/ratio_mean"]) > settings.ratio_threshold:
        warnings.warn(
            f"mean ratio {float(stats['policy/ratio_mean']):.2f} > ratio_threshold "
            f"{settings.ratio_threshold}: minibatch skipped",
            UserWarning,
            stacklevel=2,
        )
        return stats, False
    if not bool(torch.isfinite(stats["loss/total"])):  # global: every process refuses together
        raise NonFiniteError(f"PPO loss is {float(stats['loss/total'])}: step refused, weights left as before the step")
    token_loss = losses.pg_losses + settings.vf_coef * losses.vf_losses  # (b, R)
    loss = masked_sum(token_loss, mb_mask) * learner.collectives.num_processes / n_tokens
    learner.accelerator.backward(loss)
    return stats, True


@torch.no_grad()
def _global_stats(
    collectives: Collectives, terms: dict[str, torch.Tensor], mb_mask: torch.Tensor, vf_coef: float
) -> dict[str, torch.Tensor]:
    """Minibatch statistics over the minibatches of every process: the `(b, R)` terms are gathered in one
    collective as `(P * b, R, k)`, so the figures equal those of one process holding all the rows."""
    names = list(terms)
    stacked = torch.stack([*(terms[n].float() for n in names), mb_mask.float()], dim=-1)  # (b, R, k + 1)
    gathered = collectives.gather_rows(stacked)  # (P * b, R_max, k + 1), zero-padded past each R
    mask = gathered[..., -1].bool()  # (P * b, R_max)
    every = {n: gathered[..., i] for i, n in enumerate(names)}  # each (P * b, R_max)
    stats = minibatch_stats(every, mask)
    pg_loss, vf_loss = masked_mean(every["pg_loss"], mask), masked_mean(every["vf_loss"], mask)
    stats.update({"loss/policy": pg_loss, "loss/value": vf_loss, "loss/total": pg_loss + vf_coef * vf_loss})
    stats["policy/entropy"] = masked_mean(every["entropy"], mask)
    stats["policy/advantages"] = every["advantages"][mask]
    stats["policy/ratio"] = every["ratio"][mask]
    return stats


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

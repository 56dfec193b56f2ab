"""`PPOTrainer`: TRL 0.11's legacy API (`generate`, `step(queries, responses, scores)`, `log_stats`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from ppo_core.advantages import compute_advantages, compute_rewards
from ppo_core.collectives import Collectives, collectives_for
from ppo_core.config import PPOConfig
from ppo_core.data import Collator, make_dataloader
from ppo_core.device_cache import release_for
from ppo_core.generation import generate_responses
from ppo_core.host_memory import pin_mmap_threshold
from ppo_core.kl import AdaptiveKLController, FixedKLController, token_kl
from ppo_core.masked import logprobs_from_logits
from ppo_core.modes import eval_mode, optimisation_mode
from ppo_core.optimize import Learner, NonFiniteError, OptimSettings, OptimTargets, PolicyPass, run_ppo_epochs
from ppo_core.reference import create_reference_model
from ppo_core.rollout import PaddedBatch, lm_window, pad_batch, policy_forward
from ppo_core.scores import RunningMoments, scale_scores
from ppo_core.seeding import set_seed
from ppo_core.stats import aggregate_train_stats, global_objective_stats, global_token_stats, slowest, to_numpy
from ppo_core.step_inputs import validate_step_inputs
from ppo_core.tracking import TensorBoardTracker, log_summary, reward_stats
from ppo_core.value_head import AutoModelForCausalLMWithValueHead

logger = logging.getLogger(__name__)


@dataclass
class Rollout:
    """What the rollout of a step computed, all `(B, R)`; `first_pass` is handed to the optimisation once."""

    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    kls: torch.Tensor
    first_pass: PolicyPass | None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(logprobs, ref_logprobs, values, kls)`."""
        return self.logprobs, self.ref_logprobs, self.values, self.kls

    def take_first_pass(self) -> PolicyPass | None:
        first, self.first_pass = self.first_pass, None
        return first


class PPOTrainer:
    """PPO for causal LMs with scores from outside (a reward model, a rule, or people)."""

    def __init__(
        self,
        config: PPOConfig | None = None,
        model: AutoModelForCausalLMWithValueHead | None = None,
        ref_model: nn.Module | None = None,
        tokenizer: Any = None,
        dataset: Any = None,
        optimizer: torch.optim.Optimizer | None = None,
        data_collator: Collator | None = None,
        num_shared_layers: int | None = None,
        lr_scheduler: Any = None,
    ) -> None:
        if config is None or model is None or tokenizer is None:
            raise ValueError("PPOTrainer needs config, model and tokenizer")
        if not isinstance(model, AutoModelForCausalLMWithValueHead):
            raise ValueError(
                f"model must be an AutoModelForCausalLMWithValueHead, got {type(model).__name__}; "
                "wrap it with AutoModelForCausalLMWithValueHead.from_pretrained(model)"
            )
        self.config = config
        set_seed(config.seed)
        self.accelerator = Accelerator(**config.accelerator_kwargs)
        config.world_size = self.accelerator.num_processes
        config.is_encoder_decoder = False
        config.is_peft_model = model.is_peft_model
        self.is_peft_model = model.is_peft_model
        self.tokenizer = tokenizer
        self.ref_model = self._make_reference(model, ref_model, num_shared_layers)
        if optimizer is None:
            trainable = [p for p in model.parameters() if p.requires_grad]
            # fused Adam: one kernel over all tensors instead of ~2 GB of temporaries per step on SmolLM2 (-6%)
            optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, fused=_fused_adam_ok(trainable))
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.dataset = dataset
        if dataset is None:
            warnings.warn(
                "No dataset is provided. Make sure to set config.batch_size to the correct value before training.",
                UserWarning,
                stacklevel=2,
            )
            self.dataloader = None
        else:
            self.dataloader = make_dataloader(dataset, config.batch_size, data_collator, config.seed)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.dataloader is not None:
            self.dataloader = self.accelerator.prepare(self.dataloader)
        if self.ref_model is not None:
            self.ref_model = self.ref_model.to(self.accelerator.device)
        self.lr_scheduler = lr_scheduler
        self.kl_ctl = (
            AdaptiveKLController(config.init_kl_coef, config.target, config.horizon)
            if config.adap_kl_ctrl
            else FixedKLController(config.init_kl_coef)
        )
        self.token_kl = token_kl(config.kl_penalty)
        self.running = RunningMoments() if config.use_score_scaling else None
        self.current_device = self.accelerator.device
        self.collectives: Collectives = collectives_for(self.accelerator)
        self.current_step = 0
        self.release_device_cache = release_for(config.optimize_device_cache)
        if self.current_device.type == "cpu":
            pin_mmap_threshold(config.host_mmap_threshold)
        self.tracker = self._make_tracker()

    # --------------------------------------------------------------------------------------------- set-up
    def _make_reference(
        self,
        model: AutoModelForCausalLMWithValueHead,
        ref_model: nn.Module | None,
        num_shared_layers: int | None,
    ) -> nn.Module | None:
        if ref_model is not None:
            if num_shared_layers is not None:
                warnings.warn(
                    "num_shared_layers is ignored when ref_model is provided. Two different models are used "
                    "for the model and the reference model and no layers are shared.",
                    UserWarning,
                    stacklevel=3,
                )
            if not isinstance(ref_model, AutoModelForCausalLMWithValueHead):
                raise ValueError("ref_model must be an AutoModelForCausalLMWithValueHead (or None)")
            for param in ref_model.parameters():
                param.requires_grad_(False)
            return ref_model.eval()
        if model.is_peft_model:
            return None  # reference log-probs come from the same model with the adapter disabled
        return create_reference_model(model, num_shared_layers=num_shared_layers)

    def _make_tracker(self) -> TensorBoardTracker | None:
        if self.config.log_with != "tensorboard" or not self.accelerator.is_main_process:
            return None
        logging_dir = self.config.project_kwargs.get("logging_dir", "runs")
        return TensorBoardTracker(
            logging_dir,
            self.config.tracker_project_name,
            self.config.to_dict(),
            self.config.tracker_kwargs.get("tensorboard", {}),
        )

    def _vocab_size(self) -> int:
        return int(self.accelerator.unwrap_model(self.model).pretrained_model.get_input_embeddings().num_embeddings)

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    # ----------------------------------------------------------------------------------------- generation
    def generate(
        self,
        query_tensor: torch.Tensor | list[torch.Tensor],
        length_sampler: Callable[[], int] | None = None,
        batch_size: int | None = None,
        return_prompt: bool = True,
        generate_ref_response: bool = False,
        remove_padding: bool = True,
        **generation_kwargs: Any,
    ) -> Any:
        """Responses for one query tensor (returns `(1, L)`) or a list of 1-D query tensors (list of 1-D), generated
        by this process alone (in a data-parallel run each process generates for its own queries)."""
        if generate_ref_response and self.ref_model is None and not self.is_peft_model:
            raise ValueError("no reference model to generate with")
        run = functools.partial(
            generate_responses,
            query=query_tensor,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
            device=self.current_device,
            length_sampler=length_sampler,
            batch_size=batch_size,
            return_prompt=return_prompt,
            remove_padding=remove_padding,
            generation_kwargs=generation_kwargs,
        )
        policy = run(self.accelerator.unwrap_model(self.model))
        if not generate_ref_response:
            return policy
        with self._reference() as ref:
            return policy, run(self.accelerator.unwrap_model(ref))

    @contextlib.contextmanager
    def _reference(self) -> Iterator[Any]:
        """The reference model; for a LoRA policy, the policy with its adapter disabled (trl#1871)."""
        if self.ref_model is not None:
            yield self.ref_model
            return
        model = self.accelerator.unwrap_model(self.model)
        with model.pretrained_model.disable_adapter():
            yield model

    # ------------------------------------------------------------------------------------------------ step
    def set_batch_size(self, batch_size: int, mini_batch_size: int | None = None) -> None:
        """Take `batch_size` samples per `step()` from now on (not in TRL, whose batch is fixed by its config).

        For a caller whose batches vary, e.g. the rating app, which trains every sample people scored during
        the last step. The KL controller counts the samples actually seen; everything else is per batch."""
        self.config = self.config.resized(batch_size, mini_batch_size)

    def step(
        self,
        queries: Sequence[torch.Tensor],
        responses: Sequence[torch.Tensor],
        scores: Sequence[torch.Tensor],
        response_masks: Sequence[torch.Tensor] | None = None,
        behaviour_logprobs: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, Any]:
        """One PPO step on `batch_size` (query, response, score) triples; returns TRL's statistics.

        `behaviour_logprobs` (per response token, from the policy that generated it) turns on the off-policy
        correction for samples from an older policy version.
        """
        t_start = time.perf_counter()
        timing: dict[str, float] = {}
        inputs = validate_step_inputs(
            queries,
            responses,
            scores,
            response_masks,
            behaviour_logprobs,
            self.config.batch_size,
            self.current_device,
            self._vocab_size(),
        )
        scores_t = scale_scores(
            inputs.scores,
            self.running,
            self.config.use_score_norm,
            self.config.score_clip,
            self.collectives.gather_rows(inputs.scores),  # (P * B,): the running moments see every process's
        )
        batch = pad_batch(
            inputs.queries, inputs.responses, self.pad_token_id, self.current_device, inputs.response_masks
        )
        mask = batch.response_mask
        self.release_device_cache()  # what generation left behind
        with _timed(timing, "time/ppo/forward_pass"):
            rollout = self._rollout(batch)
        self.release_device_cache()  # the chunks' logits
        logprobs, ref_logprobs, values, kls = rollout.tensors()
        non_score, advantages, returns = self._advantages(scores_t, kls, values, mask, timing)
        weights = self._importance_weights(logprobs, inputs.behaviour_logprobs, mask)
        _require_finite(
            self.collectives,
            mask,
            logprobs=logprobs,
            ref_logprobs=ref_logprobs,
            values=values,
            advantages=advantages,
            returns=returns,
        )
        targets = OptimTargets(logprobs, values, advantages, returns, weights)
        with _timed(timing, "time/ppo/optimize_step"):
            train_stats = run_ppo_epochs(
                Learner(self.model, self.optimizer, self.accelerator, self.collectives),
                batch,
                targets,
                self._optim_settings(),
                self.config.rollback_nonfinite,
                rollout.take_first_pass(),  # only the callee holds it: its (B, R, V) logits go after one use
            )
        with _timed(timing, "time/ppo/calc_stats"):
            stats = global_objective_stats(
                self.collectives, logprobs, ref_logprobs, kls, non_score, scores_t, mask, self.kl_ctl.value
            )
            stats.update(aggregate_train_stats(train_stats))
            stats.update(global_token_stats(self.collectives, inputs.queries, inputs.responses))
            stats = to_numpy(stats)
        stats["ppo/learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        self.kl_ctl.update(stats["objective/kl"], self.config.batch_size * self.accelerator.num_processes)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        self.current_step += 1
        self.release_device_cache()  # the optimisation's activations and gradients
        timing["time/ppo/total"] = time.perf_counter() - t_start
        stats.update(slowest(self.collectives, timing))
        return stats

    def _advantages(
        self,
        scores: torch.Tensor,
        kls: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        timing: dict[str, float],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Non-score rewards, advantages and returns `(B, R)`; whitening uses the global batch's statistics."""
        with _timed(timing, "time/ppo/compute_rewards"):
            rewards, non_score = compute_rewards(scores, kls, mask, self.kl_ctl.value)
        with _timed(timing, "time/ppo/compute_advantages"):
            c = self.config
            advantages, returns = compute_advantages(
                rewards, values, mask, c.gamma, c.lam, c.whiten_rewards, self.collectives.sum
            )
        return non_score, advantages, returns

    def _rollout(self, batch: PaddedBatch) -> Rollout:
        """Policy log-probs, reference log-probs, values and per-token KL `(B, R)`, in minibatch chunks; with
        `first_update_from_rollout`, the policy forward keeps its graph for the first update."""
        parts: list[tuple[torch.Tensor, ...]] = []
        first_pass: PolicyPass | None = None
        keep_graph = self._first_update_from_rollout(batch)
        for start in range(0, batch.input_ids.shape[0], self.config.mini_batch_size):
            chunk = batch.select(
                torch.arange(
                    start,
                    min(start + self.config.mini_batch_size, batch.input_ids.shape[0]),
                    device=batch.input_ids.device,
                )
            )
            if keep_graph:  # one chunk: the whole batch, in the mode of the optimisation passes
                with torch.enable_grad(), optimisation_mode(self.model, False), self.accelerator.autocast():
                    first_pass = PolicyPass(*policy_forward(self.model, chunk))
                logprobs, values, logits = (
                    t.detach() for t in (first_pass.logprobs, first_pass.values, first_pass.logits)
                )
            else:
                with torch.no_grad(), eval_mode(self.model), self.accelerator.autocast():
                    logprobs, values, logits = policy_forward(self.model, chunk)
            with torch.no_grad():  # (b, R), or (b, R, V) for the exact KL: what the penalty needs of the policy
                policy_input = self.token_kl.policy_input(logits, logprobs)
            del logits
            ref_lp, kls = self._reference_and_kl(chunk, policy_input)
            del policy_input
            parts.append((logprobs, ref_lp, values, kls))
        logprobs, ref_logprobs, values, kls = (torch.cat(p) for p in zip(*parts))
        return Rollout(logprobs, ref_logprobs, values, kls, first_pass)

    @torch.no_grad()
    def _reference_and_kl(self, chunk: PaddedBatch, policy_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference log-probs and per-token KL penalty of a chunk, `(b, R)`; `policy_input` is what the
        penalty reads of the policy (`TokenKL.policy_input`)."""
        with self.accelerator.autocast(), self._reference() as ref:
            ref_logits, _ = lm_window(ref.pretrained_model, chunk)  # (b, R, V)
        ref_lp = logprobs_from_logits(ref_logits, chunk.labels)  # (b, R)
        return ref_lp, self.token_kl(policy_input, ref_logits, ref_lp)

    def _first_update_from_rollout(self, batch: PaddedBatch) -> bool:
        c = self.config
        one_minibatch = c.mini_batch_size >= batch.input_ids.shape[0]
        return c.first_update_from_rollout and one_minibatch and not c.dropout_during_training

    def _importance_weights(
        self, logprobs: torch.Tensor, behaviour: torch.Tensor | None, mask: torch.Tensor
    ) -> torch.Tensor | None:
        if behaviour is None:
            return None
        ratio = torch.exp((logprobs - behaviour).clamp(max=20.0))  # pi_old / mu, (B, R)
        return torch.where(mask, ratio.clamp(max=self.config.importance_weight_cap), torch.zeros_like(ratio))

    def _optim_settings(self) -> OptimSettings:
        c = self.config
        return OptimSettings(
            ppo_epochs=c.ppo_epochs,
            backward_batch_size=c.backward_batch_size,
            mini_batch_size=c.mini_batch_size,
            cliprange=c.cliprange,
            cliprange_value=c.cliprange_value,
            vf_coef=c.vf_coef,
            ratio_threshold=c.ratio_threshold,
            max_grad_norm=c.max_grad_norm,
            early_stopping=c.early_stopping,
            target_kl=c.target_kl,
            dropout_during_training=c.dropout_during_training,
        )

    # ---------------------------------------------------------------------------------------------- output
    def log_stats(
        self,
        stats: dict[str, Any],
        batch: dict[str, Any] | None,
        rewards: Sequence[torch.Tensor] | torch.Tensor,
        columns_to_log: Sequence[str] = ("query", "response"),
    ) -> None:
        """Log a step: always to Python logging, and to TensorBoard with `log_with="tensorboard"`."""
        logs = dict(stats)
        scores = torch.stack([torch.as_tensor(r).float().reshape(()) for r in rewards])  # (B,)
        logs.update(reward_stats(self.collectives.gather_rows(scores.to(self.current_device))))  # every process's
        if self.accelerator.is_main_process:
            log_summary(logs, self.current_step)
            if self.tracker is not None:
                self.tracker.log(logs, self.current_step)
                if batch is not None and all(c in batch for c in columns_to_log):
                    rows = zip(*(batch[c] for c in columns_to_log))
                    text = "\n\n".join(" | ".join(str(v) for v in row) for row in rows)
                    self.tracker.writer.add_text("game_log", text, self.current_step)

    def save_pretrained(self, save_directory: str) -> None:
        """Save the policy with its value head, and the tokenizer, to `save_directory`: once, by the main process,
        when every process has reached this point (their weights are the same)."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(save_directory)
            self.tokenizer.save_pretrained(save_directory)
        self.accelerator.wait_for_everyone()


def _fused_adam_ok(params: list[torch.nn.Parameter]) -> bool:
    devices = {p.device.type for p in params}
    return bool(params) and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def _require_finite(collectives: Collectives, mask: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Refuse the step on every process when any process met a NaN/inf (none is left waiting for the others)."""
    bad = torch.stack([~torch.isfinite(t[mask]).all() for t in tensors.values()]).float()  # (n,)
    bad = collectives.sum(bad)
    for name, flag in zip(tensors, bad.tolist()):
        if flag > 0:
            raise NonFiniteError(f"{name} contains NaN/inf: step refused, the model is unchanged")


@contextlib.contextmanager
def _timed(timing: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timing[key] = time.perf_counter() - start

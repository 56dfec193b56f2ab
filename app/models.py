"""Loading the models once at start-up: tokenizer, policy (resumed from a checkpoint when there is one), the frozen
reference (= version 0, also used by `compare()`), the generator's own copy, and where they run."""

from __future__ import annotations

import copy
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer

from app.checkpoints import ResumePoint
from app.lora import AdapterDisabled, check_checkpoint_kind, generator_copy, load_adapter, lora_config
from app.settings import AppSettings
from ppo_core import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer, create_reference_model, set_seed
from ppo_core.registry import resolve_model
from ppo_core.trainer_state import load_trainer_state

log = logging.getLogger(__name__)


class ModelLoadError(ValueError):
    """The model (or its tokenizer) cannot be loaded."""


@dataclass(frozen=True)
class Runtime:
    """Where and how the torch work runs."""

    device: torch.device
    bf16: bool
    """bf16 autocast (CUDA with bf16 support)."""
    gen_threads: int
    """torch intra-op threads of the generator thread (CPU)."""
    train_threads: int
    """torch intra-op threads of the trainer thread (CPU)."""


def choose_runtime(settings: AppSettings) -> Runtime:
    """CUDA when asked or available; on CPU the cores are split between generator and trainer (docs/app.md)."""
    cuda = torch.cuda.is_available()
    if settings.device == "cuda" and not cuda:
        raise ModelLoadError("--device cuda was asked for but no CUDA device is available")
    device = torch.device("cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda) else "cpu")
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    total = settings.threads or os.cpu_count() or 1
    gen_threads = max(1, total // 2)
    train_threads = max(1, total - gen_threads)
    return Runtime(device, bf16, gen_threads, train_threads)


def load_tokenizer(folder: str) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"the tokenizer of {folder!r} has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class Models:
    """Handed over at start-up: the trainer thread takes `trainer`, the generator thread `generator_model`."""

    tokenizer: Any
    trainer: PPOTrainer
    reference: nn.Module
    """Version 0, frozen; read-only, shared by the trainer (KL penalty) and the generator (`compare`). With
    --lora: the generator's model with its adapter disabled, for the generator thread only (the trainer's
    reference is its own policy with the adapter disabled)."""
    generator_model: AutoModelForCausalLMWithValueHead
    version: int


def ppo_config(settings: AppSettings, runtime: Runtime) -> PPOConfig:
    if runtime.device.type == "cpu":
        accelerator_kwargs: dict[str, Any] = {"cpu": True}
    else:
        accelerator_kwargs = {"mixed_precision": "bf16"} if runtime.bf16 else {}
    return PPOConfig(
        exp_name="rlhf-live",
        model_name=settings.model,
        query_dataset=settings.dataset or "shipped prompts",
        reward_model=settings.reward,
        seed=settings.seed,
        learning_rate=settings.effective_learning_rate,
        batch_size=settings.batch_size,
        mini_batch_size=settings.effective_mini_batch_size,
        ppo_epochs=settings.ppo_epochs,
        init_kl_coef=settings.init_kl_coef,
        accelerator_kwargs=accelerator_kwargs,
        # The trainer thread snapshots the whole state before each step and restores it on any failure
        # (ppo_core.trainer_state), so ppo_core's own weights-only copy for a NaN would be a second copy per step.
        rollback_nonfinite=False,
    )


def load_models(settings: AppSettings, runtime: Runtime, resume: ResumePoint | None, version: int) -> Models:
    """Raises ModelLoadError with one line when the model cannot be loaded (ValueError when the checkpoint to
    resume does not fit the run: full weights into --lora or the reverse)."""
    set_seed(settings.seed)
    if settings.ignored_lora_options:
        log.warning("%s only apply with --lora: ignored", ", ".join(settings.ignored_lora_options))
    if resume is not None:
        check_checkpoint_kind(resume.folder, settings)
    tokenizer, initial = load_initial(settings)
    policy, ref_model, reference, generator_model = (
        _lora_models(initial, resume) if settings.lora else _full_models(initial, resume)
    )
    generator_model = generator_model.to(runtime.device).eval()
    generator_model.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No dataset is provided")
        trainer = PPOTrainer(ppo_config(settings, runtime), policy, ref_model=ref_model, tokenizer=tokenizer)
    if resume is not None:
        trainer.kl_ctl.value = resume.state.kl_coef  # what a folder of an older release has, besides the optimizer
        trainer.current_step = resume.state.step
        load_trainer_state(trainer, resume.folder)  # optimizer, KL, step, scheduler, score moments, RNG
    return Models(tokenizer, trainer, reference, generator_model, version)


_Built = tuple[AutoModelForCausalLMWithValueHead, nn.Module | None, nn.Module, AutoModelForCausalLMWithValueHead]
"""(policy, the trainer's reference model or None, the generator's version 0, the generator's model)."""


def load_initial(settings: AppSettings) -> tuple[Any, AutoModelForCausalLMWithValueHead]:
    """The tokenizer and the model as shipped (with a fresh LoRA adapter under --lora); ModelLoadError, one line,
    when it cannot be loaded."""
    try:
        folder = resolve_model(settings.model)
        tokenizer = load_tokenizer(folder)
        peft_config = lora_config(settings) if settings.lora else None
        initial = AutoModelForCausalLMWithValueHead.from_pretrained(folder, peft_config=peft_config)
    except ModelLoadError:
        raise
    except Exception as err:  # transformers raises OSError, ValueError, KeyError, ... for unloadable models
        raise ModelLoadError(f"cannot load model {settings.model!r}: {_first_line(err)}") from err
    return tokenizer, initial


def _full_models(initial: AutoModelForCausalLMWithValueHead, resume: ResumePoint | None) -> _Built:
    reference = create_reference_model(initial)  # the first version, kept for KL and compare()
    policy = initial
    if resume is not None:
        policy = AutoModelForCausalLMWithValueHead.from_pretrained(str(resume.folder))
        log.info("resuming version %d from %s", resume.state.version, resume.folder)
    return policy, reference, reference, copy.deepcopy(policy)


def _lora_models(policy: AutoModelForCausalLMWithValueHead, resume: ResumePoint | None) -> _Built:
    """One copy of the base: the trainer's reference is its policy with the adapter off (ppo_core), the
    generator's copy shares the frozen base and its version 0 is that copy with the adapter off (app.lora)."""
    if resume is not None:
        load_adapter(policy, resume.folder)
        log.info("resuming the LoRA adapter of version %d from %s", resume.state.version, resume.folder)
    generator_model = generator_copy(policy)
    return policy, None, AdapterDisabled(generator_model), generator_model


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:300]

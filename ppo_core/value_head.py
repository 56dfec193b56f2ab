"""`AutoModelForCausalLMWithValueHead`: a causal LM plus a scalar value head on its last hidden state (TRL API).

Saved folders hold the model exactly as transformers saves it (so plain `AutoModelForCausalLM` loads them) and
the value head in `value_head.safetensors` beside it. A LoRA policy saves its adapter the way PEFT does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from ppo_core.registry import resolve_model

VALUE_HEAD_FILE = "value_head.safetensors"
_V_HEAD_KWARGS = ("summary_dropout_prob", "v_head_initializer_range", "v_head_init_strategy")


class ValueHead(nn.Module):
    """Dropout + Linear(hidden, 1): `hidden_states (B, T, H) -> values (B, T)` in fp32."""

    def __init__(self, hidden_size: int, summary_dropout_prob: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(summary_dropout_prob) if summary_dropout_prob else nn.Identity()
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        output = self.dropout(hidden_states.to(self.summary.weight.dtype))
        return self.summary(output).squeeze(-1).float()  # (B, T)


class AutoModelForCausalLMWithValueHead(nn.Module):
    """A causal LM with a value head. `forward` returns `(logits fp32, loss, values (B, T))` like TRL."""

    pretrained_model: Any  # a transformers causal LM, or a PEFT model wrapping one

    def __init__(
        self,
        pretrained_model: nn.Module,
        summary_dropout_prob: float | None = None,
        v_head_initializer_range: float = 0.2,
        v_head_init_strategy: str | None = None,
    ) -> None:
        super().__init__()
        _require_lm_head(pretrained_model)
        self.pretrained_model = pretrained_model
        config = pretrained_model.config
        if summary_dropout_prob is None:
            summary_dropout_prob = getattr(config, "summary_dropout_prob", 0.1)
        self.v_head = ValueHead(_hidden_size(config), summary_dropout_prob)
        if v_head_init_strategy == "normal":
            self.v_head.summary.weight.data.normal_(mean=0.0, std=v_head_initializer_range)
            self.v_head.summary.bias.data.zero_()
        elif v_head_init_strategy is not None:
            raise ValueError(f"v_head_init_strategy must be None or 'normal', got {v_head_init_strategy!r}")
        self.v_head.to(_first_param(pretrained_model).device)

    # ----------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any
    ) -> AutoModelForCausalLMWithValueHead:
        """Wrap a model instance, or load a registry name / folder / hub id (v_head restored when saved)."""
        v_head_kwargs = {k: kwargs.pop(k) for k in _V_HEAD_KWARGS if k in kwargs}
        peft_config = kwargs.pop("peft_config", None)
        folder: Path | None = None
        if isinstance(pretrained_model_name_or_path, nn.Module):
            base = pretrained_model_name_or_path
        else:
            resolved = resolve_model(pretrained_model_name_or_path)
            folder = Path(resolved) if os.path.isdir(resolved) else None
            base = _load_base(resolved, folder, *model_args, **kwargs)
        _require_lm_head(base)
        if peft_config is not None:
            from peft import get_peft_model

            if _is_peft(base):
                raise ValueError("the model already carries a PEFT adapter; do not pass peft_config again")
            base = get_peft_model(base, peft_config)
        model = cls(base, **v_head_kwargs)
        if folder is not None and (folder / VALUE_HEAD_FILE).is_file():
            state = load_file(str(folder / VALUE_HEAD_FILE), device=str(_first_param(base).device))
            model.v_head.load_state_dict({k.removeprefix("v_head."): v for k, v in state.items()})
        return model

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> None:
        """Write the model (or LoRA adapter) as transformers/PEFT do, plus `value_head.safetensors`."""
        os.makedirs(save_directory, exist_ok=True)
        self.pretrained_model.save_pretrained(save_directory, **kwargs)
        v_state = {f"v_head.{k}": v.detach().contiguous().cpu() for k, v in self.v_head.state_dict().items()}
        save_file(v_state, os.path.join(save_directory, VALUE_HEAD_FILE))

    # ---------------------------------------------------------------------------------------------- running
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        attention_mask: torch.Tensor | None = None,
        return_past_key_values: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """`(lm_logits (B, T, V) fp32, loss, values (B, T))`, plus past key values when asked."""
        kwargs["output_hidden_states"] = True
        if past_key_values is not None:
            kwargs["past_key_values"] = past_key_values
        outputs = self.pretrained_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        values = self.v_head(outputs.hidden_states[-1])  # (B, T)
        lm_logits = outputs.logits.float()
        if return_past_key_values:
            return lm_logits, outputs.loss, values, outputs.past_key_values
        return lm_logits, outputs.loss, values

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """`generate` of the wrapped model."""
        return self.pretrained_model.generate(*args, **kwargs)

    @property
    def config(self) -> Any:
        return self.pretrained_model.config

    @property
    def is_peft_model(self) -> bool:
        return _is_peft(self.pretrained_model)

    @property
    def device(self) -> torch.device:
        return _first_param(self).device

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.pretrained_model.gradient_checkpointing_enable(**kwargs)


def _load_base(resolved: str, folder: Path | None, *model_args: Any, **kwargs: Any) -> nn.Module:
    if folder is not None and (folder / "adapter_config.json").is_file():
        from peft import PeftConfig, PeftModel

        adapter_cfg = PeftConfig.from_pretrained(str(folder))
        base_path = resolve_model(adapter_cfg.base_model_name_or_path or "")
        base = AutoModelForCausalLM.from_pretrained(base_path, *model_args, **kwargs)
        return PeftModel.from_pretrained(base, str(folder), is_trainable=True)
    try:
        return AutoModelForCausalLM.from_pretrained(resolved, *model_args, **kwargs)
    except ValueError as err:
        raise ValueError(f"{resolved!r} cannot be loaded as a causal language model: {err}") from err


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def _require_lm_head(model: nn.Module) -> None:
    get_head = getattr(model, "get_output_embeddings", None)
    if not isinstance(model, PreTrainedModel | nn.Module) or get_head is None or get_head() is None:
        raise ValueError(
            f"{type(model).__name__} has no language-model head; pass a causal LM "
            "(e.g. AutoModelForCausalLM), not a bare backbone such as AutoModel"
        )


def _hidden_size(config: Any) -> int:
    for name in ("word_embed_proj_dim", "hidden_size", "n_embd"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    text_config = getattr(config, "text_config", None)
    if text_config is not None:
        return _hidden_size(text_config)
    raise ValueError(f"cannot find the hidden size in {type(config).__name__}")


def _first_param(model: nn.Module) -> torch.Tensor:
    return next(model.parameters())

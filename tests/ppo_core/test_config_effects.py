"""Config fields that TRL has and that used to be read by nothing: each now has an effect a test can see."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from ppo_core import PPOConfig, device_cache, host_memory
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


def test_a_cpu_trainer_pins_the_host_mmap_threshold(tokenizer, monkeypatch):
    pinned: list[int | None] = []
    monkeypatch.setattr("ppo_core.trainer.pin_mmap_threshold", pinned.append)
    make_trainer(tokenizer)
    make_trainer(tokenizer, host_mmap_threshold=None)
    make_trainer(tokenizer, host_mmap_threshold=4096)
    assert pinned == [8 * 1024 * 1024, None, 4096]


def test_host_mmap_threshold_is_checked_and_set_through_glibc(monkeypatch):
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(host_memory, "_mallopt", lambda: lambda option, value: calls.append((option, value)) or 1)
    assert host_memory.pin_mmap_threshold(None) is False and calls == []  # None: the allocator is left alone
    assert host_memory.pin_mmap_threshold(1 << 20) is True
    assert calls == [(-3, 1 << 20)]  # M_MMAP_THRESHOLD
    for bad in (0, -1, 64 * 1024 * 1024):
        with pytest.raises(ValueError, match="host_mmap_threshold"):
            host_memory.pin_mmap_threshold(bad)
        with pytest.raises(ValueError, match="host_mmap_threshold"):
            PPOConfig(host_mmap_threshold=bad)
    monkeypatch.setattr(host_memory, "_mallopt", lambda: None)  # not glibc: nothing to set, nothing raised
    assert host_memory.pin_mmap_threshold(1 << 20) is False

"""The whole trainer state survives a real step undone (snapshot) and a round trip through a checkpoint folder."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ppo_core import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from ppo_core.trainer_state import capture_state, load_trainer_state, save_trainer_state
from tests.ppo_core.factory import make_batch, make_model


def scaled_trainer(
    tokenizer: Any, model: AutoModelForCausalLMWithValueHead | None = None, ref_model: Any = None
) -> PPOTrainer:
    """Adaptive KL, score scaling (running moments), a scheduler and shuffled minibatches: every piece of state."""
    model = model if model is not None else make_model("gpt2", dropout=0.1)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    config = PPOConfig(
        batch_size=4, mini_batch_size=2, learning_rate=1e-3, seed=0, use_score_scaling=True, use_score_norm=True
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No dataset is provided")
        return PPOTrainer(config, model, ref_model, tokenizer=tokenizer, optimizer=optimizer, lr_scheduler=scheduler)


def full_state(trainer: PPOTrainer) -> dict[str, Any]:
    """Every tensor and number a step changes, copied."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    opt = trainer.optimizer.state_dict()
    running = trainer.running
    assert running is not None and trainer.lr_scheduler is not None
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": {i: {k: v.clone() for k, v in s.items()} for i, s in opt["state"].items()},
        "lr": [g["lr"] for g in opt["param_groups"]],
        "kl": trainer.kl_ctl.value,
        "step": trainer.current_step,
        "scheduler": trainer.lr_scheduler.state_dict()["last_epoch"],
        "running": (running.mean, running.var, running.count),
        "rng": torch.get_rng_state().clone(),
    }


def assert_equal_states(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["optimizer"].keys() == b["optimizer"].keys()
    for i in a["optimizer"]:
        for k in a["optimizer"][i]:
            assert torch.equal(a["optimizer"][i][k], b["optimizer"][i][k]), (i, k)
    assert torch.equal(a["rng"], b["rng"])
    for key in ("lr", "kl", "step", "scheduler", "running"):
        assert a[key] == b[key], key


def test_a_snapshot_undoes_a_real_step_bit_for_bit(tokenizer: Any) -> None:
    trainer = scaled_trainer(tokenizer)
    trainer.step(*make_batch(4, seed=1))  # Adam moments, running moments and the scheduler all have a past
    before = full_state(trainer)
    with capture_state(trainer) as snapshot:
        trainer.step(*make_batch(4, seed=2))
        moved = full_state(trainer)
        assert not torch.equal(moved["model"]["v_head.summary.weight"], before["model"]["v_head.summary.weight"])
        assert moved["step"] == before["step"] + 1 and moved["running"] != before["running"]
        assert moved["kl"] != before["kl"] and moved["lr"] != before["lr"]
        snapshot.restore()
        assert_equal_states(before, full_state(trainer))
        trainer.step(*make_batch(4, seed=2))  # restore twice from one snapshot: the copy was not touched
        snapshot.restore()
    assert_equal_states(before, full_state(trainer))


def test_a_reused_snapshot_holds_the_latest_capture_and_an_empty_optimizer_state(tokenizer: Any) -> None:
    """Before the first step Adam has no moments: a restore must drop the ones the undone step created."""
    trainer = scaled_trainer(tokenizer)
    snapshot = capture_state(trainer)
    try:
        trainer.step(*make_batch(4, seed=7))
        assert trainer.optimizer.state
        snapshot.restore()
        assert not trainer.optimizer.state and trainer.current_step == 0
        trainer.step(*make_batch(4, seed=7))
        after_one = full_state(trainer)
        snapshot.capture()  # the same file, overwritten
        trainer.step(*make_batch(4, seed=8))
        snapshot.restore()
        assert_equal_states(after_one, full_state(trainer))
    finally:
        snapshot.close()


def test_a_retried_step_after_a_restore_is_the_same_step(tokenizer: Any) -> None:
    """The RNG comes back too: minibatch shuffling and dropout draw the same numbers."""
    trainer = scaled_trainer(tokenizer)
    batch = make_batch(4, seed=3)
    with capture_state(trainer) as snapshot:
        first_stats = trainer.step(*batch)
        first = full_state(trainer)
        snapshot.restore()
    second_stats = trainer.step(*batch)
    assert_equal_states(first, full_state(trainer))
    assert first_stats["ppo/loss/total"] == second_stats["ppo/loss/total"]


def test_a_checkpoint_folder_holds_the_whole_state(tokenizer: Any, tmp_path: Any) -> None:
    trainer = scaled_trainer(tokenizer)
    for seed in (4, 5):
        trainer.step(*make_batch(4, seed=seed))
    save_trainer_state(trainer, tmp_path / "ckpt")
    saved = full_state(trainer)

    loaded_model = AutoModelForCausalLMWithValueHead.from_pretrained(str(tmp_path / "ckpt"))
    # a fresh trainer (step 0, initial KL, no moments) with the same reference (version 0), as the app resumes
    resumed = scaled_trainer(tokenizer, model=loaded_model, ref_model=trainer.ref_model)
    load_trainer_state(resumed, tmp_path / "ckpt")
    assert_equal_states(saved, full_state(resumed))
    batch = make_batch(4, seed=6)
    rng = torch.get_rng_state()  # the global RNG, as loaded: both trainers draw from it, so each starts there
    trainer.step(*batch)
    torch.set_rng_state(rng)
    resumed.step(*batch)  # and it goes on exactly as the original would have
    assert_equal_states(full_state(trainer), full_state(resumed))

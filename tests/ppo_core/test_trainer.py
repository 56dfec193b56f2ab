"""PPOTrainer.step: invariants, exact accumulation, guards, and TRL's statistics."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from ppo_core import NonFiniteError, PPOConfig, PPOTrainer
from ppo_core.rollout import pad_batch
from tests.ppo_core.factory import assert_same_params, make_batch, make_model, make_trainer, params_of

TRL_KEYS = [
    "objective/kl",
    "objective/kl_dist",
    "objective/logprobs",
    "objective/ref_logprobs",
    "objective/kl_coef",
    "objective/entropy",
    "ppo/mean_non_score_reward",
    "ppo/mean_scores",
    "ppo/std_scores",
    "ppo/loss/policy",
    "ppo/loss/value",
    "ppo/loss/total",
    "ppo/policy/entropy",
    "ppo/policy/approxkl",
    "ppo/policy/policykl",
    "ppo/policy/clipfrac",
    "ppo/policy/advantages",
    "ppo/policy/advantages_mean",
    "ppo/policy/ratio",
    "ppo/returns/mean",
    "ppo/returns/var",
    "ppo/val/vpred",
    "ppo/val/error",
    "ppo/val/clipfrac",
    "ppo/val/mean",
    "ppo/val/var",
    "ppo/val/var_explained",
    "ppo/learning_rate",
    "time/ppo/forward_pass",
    "time/ppo/compute_rewards",
    "time/ppo/compute_advantages",
    "time/ppo/optimize_step",
    "time/ppo/calc_stats",
    "time/ppo/total",
    "tokens/queries_len_mean",
    "tokens/queries_len_std",
    "tokens/queries_dist",
    "tokens/responses_len_mean",
    "tokens/responses_len_std",
    "tokens/responses_dist",
]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_step_returns_trl_stats_and_changes_weights(tokenizer, arch):
    trainer = make_trainer(tokenizer, arch)
    before = params_of(trainer.model)
    q, r, s = make_batch()
    stats = trainer.step(q, r, s)
    assert set(TRL_KEYS) <= set(stats)
    assert all(
        isinstance(stats[k], float) for k in TRL_KEYS if not k.endswith(("_dist", "logprobs", "advantages", "ratio"))
    )
    assert stats["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # first step: policy == reference
    assert stats["ppo/mean_scores"] == pytest.approx(-0.5)
    assert stats["tokens/responses_len_mean"] == pytest.approx(sum(len(x) for x in r) / 4)
    changed = params_of(trainer.model)
    assert any(not torch.equal(before[k], changed[k]) for k in before)


def test_reference_untouched_and_kl_grows_after_training(tokenizer):
    trainer = make_trainer(tokenizer, learning_rate=1e-2)
    ref_before = params_of(trainer.ref_model)
    for _ in range(3):
        stats = trainer.step(*make_batch())
    assert_same_params(ref_before, params_of(trainer.ref_model))
    assert abs(stats["objective/kl"]) > 1e-3


def test_every_trainable_parameter_gets_a_gradient(tokenizer):
    trainer = make_trainer(tokenizer, ppo_epochs=1, batch_size=4, mini_batch_size=4)
    seen: dict[str, bool] = {}

    def record(*_args, **_kwargs):
        for name, p in trainer.model.named_parameters():
            if p.requires_grad:
                seen[name] = p.grad is not None and bool(p.grad.abs().sum() > 0)

    trainer.optimizer.optimizer.register_step_pre_hook(lambda *a: record())
    trainer.step(*make_batch())
    assert seen and all(seen.values()), [k for k, v in seen.items() if not v]


def test_logprobs_and_values_invariant_to_padding_and_minibatch_size(tokenizer):
    trainer = make_trainer(tokenizer, batch_size=4, mini_batch_size=1)
    queries, responses, _ = make_batch()
    full = pad_batch(queries, responses, 0, torch.device("cpu"))
    lp_1, ref_1, val_1, _ = trainer._rollout(full).tensors()
    trainer.config.mini_batch_size = 4
    lp_4, _, val_4, _ = trainer._rollout(full).tensors()
    torch.testing.assert_close(lp_1, lp_4, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(val_1, val_4, rtol=1e-5, atol=1e-5)
    for i in range(4):  # each sample alone, without any padding
        alone = pad_batch([queries[i]], [responses[i]], 0, torch.device("cpu"))
        lp, ref, val, _ = trainer._rollout(alone).tensors()
        n = len(responses[i])
        torch.testing.assert_close(lp[0, :n], lp_4[i, :n], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(val[0, :n], val_4[i, :n], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ref[0, :n], ref_1[i, :n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_minibatch_2_equals_minibatch_1_with_accumulation_2(tokenizer, arch):
    # Responses of different lengths: a per-minibatch mean (TRL) would weight tokens differently here.
    batch = make_batch(2)
    assert len(batch[1][0]) != len(batch[1][1])
    results = []
    for mb, ga in ((2, 1), (1, 2)):
        model = make_model(arch)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # SGD: the update is the gradient itself
        config = PPOConfig(batch_size=2, mini_batch_size=mb, gradient_accumulation_steps=ga, ppo_epochs=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = PPOTrainer(config, model, tokenizer=tokenizer, optimizer=optimizer)
        trainer.step(*batch)
        results.append(params_of(trainer.model))
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-5, atol=1e-6, msg=key)


def test_inputs_are_validated_and_nothing_changes(tokenizer):
    trainer = make_trainer(tokenizer)
    before = params_of(trainer.model)
    q, r, s = make_batch()
    bad_cases = [
        ((q[:3], r[:3], s[:3]), "does not match number of examples"),
        ((q, r, s[:3]), "got 3 for: scores"),
        ((q, [x.unsqueeze(0) for x in r], s), "must be 1-D"),
        ((q, [x.float() for x in r], s), "integer token ids"),
        ((q, [torch.tensor([], dtype=torch.long), *r[1:]], s), "empty"),
        ((q, r, [torch.tensor(float("nan")), *s[1:]]), "must be finite"),
        ((q, r, ["1.0", *s[1:]]), "0-D tensor or a number"),
        ((q, r, [torch.tensor([1.0, 2.0]), *s[1:]]), "single value"),
        ((q, [torch.tensor([10000]), *r[1:]], s), "outside"),
        ((torch.stack([x[:3] for x in q]), r, s), "must be a list"),
    ]
    for args, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            trainer.step(*args)
    assert_same_params(before, params_of(trainer.model))
    assert trainer.current_step == 0


def test_non_finite_forward_is_refused_before_any_update(tokenizer):
    trainer = make_trainer(tokenizer)
    with torch.no_grad():
        trainer.model.v_head.summary.bias.fill_(float("inf"))
    before = params_of(trainer.model)
    with pytest.raises(NonFiniteError, match="values"):
        trainer.step(*make_batch())
    assert_same_params(before, params_of(trainer.model))


def test_divergence_mid_step_is_rolled_back_whole(tokenizer):
    model = make_model("gpt2")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e35)  # the first update blows the weights up
    trainer = PPOTrainer(PPOConfig(batch_size=4, mini_batch_size=2), model, tokenizer=tokenizer, optimizer=optimizer)
    before = params_of(trainer.model)
    with pytest.raises(NonFiniteError):
        trainer.step(*make_batch())
    assert_same_params(before, params_of(trainer.model))
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_ratio_threshold_skips_updates(tokenizer):
    trainer = make_trainer(tokenizer, ratio_threshold=1e-6)
    before = params_of(trainer.model)
    with pytest.warns(UserWarning, match="ratio_threshold"):
        trainer.step(*make_batch())
    assert_same_params(before, params_of(trainer.model))


def test_early_stopping_stops_the_epochs(tokenizer):
    full = make_trainer(tokenizer, learning_rate=5e-2, ppo_epochs=4).step(*make_batch())
    stopped = make_trainer(tokenizer, learning_rate=5e-2, ppo_epochs=4, early_stopping=True, target_kl=1e-9)
    stats = stopped.step(*make_batch())
    assert len(stats["ppo/policy/ratio"]) < len(full["ppo/policy/ratio"])


@pytest.mark.parametrize(("norm", "clip"), [(False, None), (True, None), (True, 0.5)])
def test_score_scaling_norm_and_clip_work(tokenizer, norm, clip):
    trainer = make_trainer(tokenizer, use_score_scaling=True, use_score_norm=norm, score_clip=clip)
    q, r, s = make_batch()
    stats = trainer.step(q, r, s)
    raw = torch.stack(s)
    expected = (raw - raw.mean()) / raw.std() if norm else raw / raw.std()
    if clip is not None:
        expected = expected.clamp(-clip, clip)
    assert stats["ppo/mean_scores"] == pytest.approx(expected.mean().item(), abs=1e-5)


def test_whiten_rewards_and_full_kl_run(tokenizer):
    trainer = make_trainer(tokenizer, whiten_rewards=True, kl_penalty="full", learning_rate=1e-2)
    for _ in range(2):
        stats = trainer.step(*make_batch())
    assert stats["ppo/mean_non_score_reward"] <= 1e-6  # exact KL >= 0, penalty <= 0


def test_lr_scheduler_steps_once_per_step(tokenizer):
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    trainer = PPOTrainer(
        PPOConfig(batch_size=4, mini_batch_size=1),
        model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        lr_scheduler=scheduler,
    )
    first = trainer.step(*make_batch())
    second = trainer.step(*make_batch())
    assert first["ppo/learning_rate"] == pytest.approx(1e-3)
    assert second["ppo/learning_rate"] == pytest.approx(5e-4)


def test_adaptive_kl_coefficient_moves(tokenizer):
    trainer = make_trainer(tokenizer)
    trainer.step(*make_batch())
    assert trainer.kl_ctl.value != pytest.approx(0.2, abs=0)
    fixed = make_trainer(tokenizer, adap_kl_ctrl=False)
    fixed.step(*make_batch())
    assert fixed.kl_ctl.value == 0.2


def test_response_masks_exclude_tokens(tokenizer):
    q, r, s = make_batch()
    masks = [torch.ones(len(x), dtype=torch.long) for x in r]
    masks[1][0] = 0
    stats = make_trainer(tokenizer).step(q, r, s, response_masks=masks)
    assert len(stats["ppo/policy/ratio"]) == 4 * (sum(len(x) for x in r) - 1)  # 4 epochs x unmasked tokens


def test_behaviour_logprobs_equal_to_policy_change_nothing(tokenizer):
    q, r, s = make_batch()
    plain = make_trainer(tokenizer)
    lp, *_ = plain._rollout(pad_batch(q, r, 0, torch.device("cpu"))).tensors()
    behaviour = [lp[i, : len(x)].clone() for i, x in enumerate(r)]
    plain.step(q, r, s)
    corrected = make_trainer(tokenizer)
    corrected.step(q, r, s, behaviour_logprobs=behaviour)
    for key, value in params_of(plain.model).items():
        torch.testing.assert_close(value, params_of(corrected.model)[key], rtol=1e-4, atol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of"):
        PPOConfig(batch_size=10, mini_batch_size=4)
    with pytest.raises(ValueError, match="kl_penalty"):
        PPOConfig(kl_penalty="nope")  # type: ignore[arg-type]
    cfg = PPOConfig(batch_size=8, mini_batch_size=2, gradient_accumulation_steps=2)
    assert cfg.backward_batch_size == 4
    defaults = PPOConfig()
    assert (defaults.learning_rate, defaults.init_kl_coef, defaults.target, defaults.horizon) == (
        1.41e-5,
        0.2,
        6,
        10000,
    )
    assert (defaults.cliprange, defaults.vf_coef, defaults.ppo_epochs, defaults.batch_size) == (0.2, 0.1, 4, 128)


def test_warnings_like_trl(tokenizer):
    with pytest.warns(UserWarning, match="No dataset is provided"):
        PPOTrainer(PPOConfig(batch_size=4, mini_batch_size=2), make_model(), tokenizer=tokenizer)
    model = make_model()
    with pytest.warns(UserWarning, match="num_shared_layers is ignored"):
        PPOTrainer(
            PPOConfig(batch_size=4, mini_batch_size=2),
            model,
            ref_model=copy.deepcopy(model),
            tokenizer=tokenizer,
            num_shared_layers=1,
        )


def test_trainer_with_shared_layers_trains_only_the_rest(tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = PPOTrainer(
            PPOConfig(batch_size=4, mini_batch_size=2, learning_rate=1e-2),
            make_model(),
            tokenizer=tokenizer,
            num_shared_layers=1,
        )
    before = params_of(trainer.model)
    trainer.step(*make_batch())
    after = params_of(trainer.model)
    assert torch.equal(
        before["pretrained_model.transformer.h.0.attn.c_attn.weight"],
        after["pretrained_model.transformer.h.0.attn.c_attn.weight"],
    )
    assert not torch.equal(
        before["pretrained_model.transformer.h.1.attn.c_attn.weight"],
        after["pretrained_model.transformer.h.1.attn.c_attn.weight"],
    )


def test_log_stats_writes_tensorboard_and_logging(tokenizer, tmp_path, caplog):
    trainer = make_trainer(tokenizer, log_with="tensorboard", project_kwargs={"logging_dir": str(tmp_path)})
    q, r, s = make_batch()
    stats = trainer.step(q, r, s)
    with caplog.at_level("INFO", logger="ppo_core"):
        trainer.log_stats(stats, {"query": ["a"] * 4, "response": ["b"] * 4}, s)
    assert any("objective/kl" in m for m in caplog.messages)
    assert list((tmp_path / "trl").glob("events.out.tfevents.*"))


def test_save_pretrained_writes_model_value_head_and_tokenizer(tokenizer, tmp_path):
    trainer = make_trainer(tokenizer)
    trainer.save_pretrained(str(tmp_path))
    for name in ("config.json", "model.safetensors", "value_head.safetensors", "tokenizer.json"):
        assert (tmp_path / name).is_file(), name


def test_first_minibatch_has_ratio_one_and_no_clipping(tokenizer):
    stats = make_trainer(tokenizer, batch_size=4, mini_batch_size=4, ppo_epochs=1).step(*make_batch())
    torch.testing.assert_close(torch.as_tensor(stats["ppo/policy/ratio"]), torch.ones(len(stats["ppo/policy/ratio"])))
    assert stats["ppo/policy/clipfrac"] == 0.0
    assert stats["ppo/policy/approxkl"] == 0.0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_gradient_checkpointing_recomputes_layers_and_gives_the_same_update(tokenizer, arch):
    """With dropout off (eval mode) HF skips checkpointing unless the checkpointing modules are marked training."""
    batch = make_batch(4)
    results, layer_calls = [], []
    for checkpointing in (False, True):
        trainer = make_trainer(tokenizer, arch, gradient_checkpointing=checkpointing, ppo_epochs=1)
        layer = trainer.model.pretrained_model.base_model.layers[0] if arch == "llama" else None
        layer = layer or trainer.model.pretrained_model.transformer.h[0]
        calls = []
        layer.mlp.register_forward_pre_hook(lambda *_, c=calls: c.append(1))  # inside the checkpoint: seen on replay
        modes = [m.training for m in trainer.model.modules()]
        trainer.step(*batch)
        results.append(params_of(trainer.model))
        layer_calls.append(len(calls))
        assert [m.training for m in trainer.model.modules()] == modes  # every module's mode is restored
    # rollout: policy + reference (reference is a copy, own hooks); training: 2 minibatches, forward (+ replay)
    assert layer_calls[1] > layer_calls[0], f"no layer was recomputed: {layer_calls}"
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_first_update_from_the_rollout_is_the_same_step_with_one_forward_less(tokenizer, arch):
    """mini_batch_size == batch_size: the rollout's policy forward doubles as the first update's forward."""
    batch = make_batch(4)
    results, stats, forwards = [], [], []
    for reuse in (False, True):
        model = make_model(arch)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # SGD: no Adam normalisation hides a changed grad
        config = PPOConfig(batch_size=4, mini_batch_size=4, ppo_epochs=3, first_update_from_rollout=reuse)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = PPOTrainer(config, model, tokenizer=tokenizer, optimizer=optimizer)
        calls = []
        trainer.model.pretrained_model.register_forward_pre_hook(lambda *_, c=calls: c.append(1))
        stats.append(trainer.step(*batch))
        results.append(params_of(trainer.model))
        forwards.append(len(calls))
    assert forwards == [1 + 3, 3], forwards  # policy forwards: rollout + one per epoch, then one saved
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-5, atol=1e-6, msg=key)
    for key in ("ppo/loss/total", "ppo/policy/approxkl", "objective/kl", "ppo/val/vpred"):
        torch.testing.assert_close(torch.tensor(stats[0][key]), torch.tensor(stats[1][key]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lm_heads_compute_logits_only_at_the_response_positions(tokenizer, arch):
    """No query position and no extra last position reaches the LM head (memory of the (B, R, V) logits)."""
    trainer = make_trainer(tokenizer, arch, batch_size=4, mini_batch_size=4)
    q, r, s = make_batch()
    widths: list[int] = []
    for model in (trainer.model, trainer.ref_model):
        head = model.pretrained_model.get_output_embeddings()
        head.register_forward_pre_hook(lambda _m, args, w=widths: w.append(args[0].shape[1]))
    trainer.step(q, r, s)
    assert widths and set(widths) == {max(len(x) for x in r)}, widths

"""A LoRA policy has no reference copy; its reference log-probs really come from the adapter-disabled model."""

from __future__ import annotations

import copy
import warnings

import torch
from peft import LoraConfig

from ppo_core import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
from ppo_core.rollout import pad_batch
from ppo_core.tiny import tiny_causal_lm
from ppo_core.trainer_state import TrainerSnapshot
from tests.ppo_core.factory import make_batch

LORA = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM")


def _lora_trainer(tokenizer, **config):
    base = tiny_causal_lm("llama", seed=0)
    frozen_base = copy.deepcopy(base)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(base, peft_config=LORA)
    config = {"batch_size": 4, "mini_batch_size": 2, "learning_rate": 5e-2, **config}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = PPOTrainer(PPOConfig(**config), model, tokenizer=tokenizer)
    return trainer, frozen_base


def test_lora_policy_trains_adapter_and_value_head_only(tokenizer):
    trainer, _ = _lora_trainer(tokenizer)
    assert trainer.ref_model is None and trainer.is_peft_model
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("v_head.") for n in trainable)


def test_lora_reference_logprobs_are_the_base_model(tokenizer):
    trainer, frozen_base = _lora_trainer(tokenizer)
    q, r, s = make_batch()
    for _ in range(3):
        stats = trainer.step(q, r, s)
    assert abs(stats["objective/kl"]) > 1e-4  # the adapter moved the policy away from its reference
    batch = pad_batch(q, r, 0, torch.device("cpu"))
    policy_lp, ref_lp, _, _ = trainer._rollout(batch).tensors()
    ids = batch.input_ids
    with torch.no_grad():
        logits = frozen_base(input_ids=ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    q_width = batch.query_width
    expected = torch.log_softmax(logits[:, q_width - 1 : -1], -1).gather(-1, batch.labels.unsqueeze(-1)).squeeze(-1)
    mask = batch.response_mask
    torch.testing.assert_close(ref_lp[mask], expected[mask], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(policy_lp[mask], expected[mask], atol=1e-4)


def test_lora_save_and_load_round_trip(tokenizer, tmp_path):
    trainer, _ = _lora_trainer(tokenizer)
    trainer.step(*make_batch())
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny_causal_lm("llama", seed=0).save_pretrained(base_dir)
    model = trainer.model
    model.pretrained_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    model.save_pretrained(adapter_dir)
    loaded = AutoModelForCausalLMWithValueHead.from_pretrained(str(adapter_dir))
    assert loaded.is_peft_model
    original, restored = model.state_dict(), loaded.state_dict()
    for key in original:
        torch.testing.assert_close(original[key], restored[key], msg=key)


def test_lora_reference_responses_come_from_the_base_model(tokenizer):
    """trl#1871: TRL generates "reference" responses with the adapter still on."""
    trainer, frozen_base = _lora_trainer(tokenizer)
    q, r, s = make_batch()
    for _ in range(3):
        trainer.step(q, r, s)
    greedy = {"do_sample": False, "max_new_tokens": 6, "min_length": -1, "pad_token_id": 0}
    policy, reference = trainer.generate(q, generate_ref_response=True, return_prompt=False, **greedy)
    for query, ref in zip(q, reference):
        with torch.no_grad():
            out = frozen_base.generate(input_ids=query.unsqueeze(0), **greedy)[0, len(query) :]
        eos = (out == tokenizer.eos_token_id).nonzero()
        expected = out[: int(eos[0, 0]) + 1] if len(eos) else out
        assert torch.equal(ref, expected)
    assert any(not torch.equal(a, b) for a, b in zip(policy, reference))


def test_lora_with_gradient_checkpointing_gives_the_adapter_the_same_gradients(tokenizer):
    """Checkpointed layers whose inputs need no grad (frozen embeddings) must still pass gradients to LoRA."""
    grads = []
    for checkpointing in (False, True):
        trainer, _ = _lora_trainer(tokenizer, gradient_checkpointing=checkpointing, ppo_epochs=1, mini_batch_size=4)
        trainer.optimizer.step = lambda *a, **k: None  # keep the gradients of the one update, change nothing
        zero_grad = trainer.optimizer.zero_grad
        seen = {}

        def capture(*args, _seen=seen, _trainer=trainer, _zero=zero_grad, **kwargs):
            for n, p in _trainer.model.named_parameters():
                if p.grad is not None:
                    _seen[n] = p.grad.clone()
            _zero(*args, **kwargs)

        trainer.optimizer.zero_grad = capture
        trainer.step(*make_batch())
        grads.append(seen)
    lora = [n for n in grads[0] if "lora_" in n]
    assert lora and set(grads[1]) == set(grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_lora_snapshot_holds_the_adapter_only_and_restores_it_exactly(tokenizer):
    """The trainer thread's crash-safety snapshot (ppo_core.trainer_state) of a LoRA policy: adapter, value head
    and their Adam state, restored bit for bit; the frozen base is neither copied nor touched."""
    trainer, _ = _lora_trainer(tokenizer)
    trainer.step(*make_batch())  # Adam has moments now
    model = trainer.model
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    with TrainerSnapshot(trainer) as snapshot:
        snapshot.capture()
        spilled = snapshot._spill.tell()
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        moments = [{k: v.clone() for k, v in s.items()} for s in trainer.optimizer.state.values()]
        trainer.step(*make_batch())
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
        snapshot.restore()
    frozen_bytes = sum(p.numel() * p.element_size() for p in frozen.values())
    trained_bytes = sum(p.numel() * p.element_size() for p in before.values())
    assert 3 * trained_bytes <= spilled < frozen_bytes  # weights + 2 Adam moments of the adapter, no base
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, before[name] if param.requires_grad else frozen[name], rtol=0, atol=0)
    for saved, state in zip(moments, trainer.optimizer.state.values()):
        assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in saved)

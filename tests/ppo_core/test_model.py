"""The value-head model: forward shapes, save/load round trip, reference models."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2Model

from ppo_core import AutoModelForCausalLMWithValueHead, create_reference_model
from ppo_core.value_head import VALUE_HEAD_FILE
from tests.ppo_core.factory import make_model


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_forward_returns_fp32_logits_loss_and_values(arch):
    model = make_model(arch)
    ids = torch.randint(1, 300, (2, 5))
    logits, loss, values = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert logits.shape == (2, 5, model.config.vocab_size) and logits.dtype == torch.float32
    assert loss is None
    assert values.shape == (2, 5) and values.dtype == torch.float32


def test_value_head_is_dropout_plus_linear():
    model = make_model("gpt2", summary_dropout_prob=0.3)
    assert isinstance(model.v_head.dropout, torch.nn.Dropout) and model.v_head.dropout.p == 0.3
    assert model.v_head.summary.in_features == model.config.hidden_size
    assert model.v_head.summary.out_features == 1


def test_generate_works():
    model = make_model("llama")
    out = model.generate(input_ids=torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape[1] > 3


def test_model_without_lm_head_is_refused():
    with pytest.raises(ValueError, match="no language-model head"):
        AutoModelForCausalLMWithValueHead.from_pretrained(GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=1)))


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        AutoModelForCausalLMWithValueHead.from_pretrained(str(tmp_path / "nope"))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_save_load_round_trips_every_tensor(tmp_path, arch):
    model = make_model(arch)
    with torch.no_grad():
        model.v_head.summary.weight.normal_()
        model.v_head.summary.bias.fill_(0.75)
    model.save_pretrained(tmp_path)
    assert (tmp_path / VALUE_HEAD_FILE).is_file()
    loaded = AutoModelForCausalLMWithValueHead.from_pretrained(str(tmp_path))
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert any(k.startswith("v_head.") for k in original)
    for key in original:
        torch.testing.assert_close(original[key], restored[key], rtol=0, atol=0, msg=key)
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, original[f"pretrained_model.{key}"], rtol=0, atol=0)


def test_reference_is_an_independent_frozen_copy():
    model = make_model("gpt2")
    ref = create_reference_model(model)
    assert not ref.training
    assert all(not p.requires_grad for p in ref.parameters())
    assert all(p.requires_grad for p in model.parameters())
    ref_ptrs = {p.data_ptr() for p in ref.parameters()}
    assert not ref_ptrs & {p.data_ptr() for p in model.parameters()}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_reference_shares_and_freezes_first_layers(arch):
    model = make_model(arch)
    ref = create_reference_model(model, num_shared_layers=1)
    model_params, ref_params = dict(model.named_parameters()), dict(ref.named_parameters())
    block0 = [n for n in model_params if ".h.0." in n or ".layers.0." in n]
    block1 = [n for n in model_params if ".h.1." in n or ".layers.1." in n]
    assert block0 and block1
    for name in block0:
        assert ref_params[name] is model_params[name] and not model_params[name].requires_grad
    for name in block1:
        assert ref_params[name] is not model_params[name] and model_params[name].requires_grad


def test_too_many_shared_layers_raises():
    with pytest.raises(ValueError, match="num_shared_layers=5"):
        create_reference_model(make_model("gpt2"), num_shared_layers=5)

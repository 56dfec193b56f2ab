"""Batched generation: equals one-by-one greedy, EOS in the prompt does not cut, eval mode, length sampler."""

from __future__ import annotations

import pytest
import torch

from ppo_core import LengthSampler
from ppo_core.generation import generate_batch
from tests.ppo_core.factory import make_model, make_trainer

GREEDY = {"do_sample": False, "max_new_tokens": 6, "min_length": -1}


def _queries():
    return [torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10, 11, 12, 13]), torch.tensor([14])]


def test_batched_generation_equals_one_by_one_greedy(tokenizer):
    for arch in ("gpt2", "llama"):
        trainer = make_trainer(tokenizer, arch)
        batched = trainer.generate(_queries(), return_prompt=False, **GREEDY)
        for query, out in zip(_queries(), batched):
            single = trainer.generate(query, return_prompt=False, **GREEDY)[0]
            eos = (single == tokenizer.eos_token_id).nonzero()
            expected = single[: int(eos[0, 0]) + 1] if len(eos) else single
            assert torch.equal(out, expected), (arch, out, expected)


def test_return_prompt_prepends_the_query_without_padding(tokenizer):
    trainer = make_trainer(tokenizer)
    with_prompt = trainer.generate(_queries(), return_prompt=True, **GREEDY)
    without = trainer.generate(_queries(), return_prompt=False, **GREEDY)
    for query, full, resp in zip(_queries(), with_prompt, without):
        assert torch.equal(full, torch.cat([query, resp]))


def test_eos_inside_the_prompt_does_not_cut_the_output(tokenizer):
    trainer = make_trainer(tokenizer)
    eos = tokenizer.eos_token_id
    query = torch.tensor([5, eos, 7, 8])
    out = trainer.generate([query], return_prompt=True, **GREEDY)[0]
    assert torch.equal(out[:4], query)
    assert len(out) > 4  # TRL 0.11.4 cuts at the prompt's EOS and returns only [5, eos]


def test_generation_runs_in_eval_mode_and_restores_mode(tokenizer):
    model = make_model("gpt2")
    for module in model.modules():  # heavy dropout: sampling noise would show in greedy output
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.9
    trainer = make_trainer(tokenizer, model=model)
    trainer.model.train()
    first = trainer.generate(_queries(), return_prompt=False, **GREEDY)
    second = trainer.generate(_queries(), return_prompt=False, **GREEDY)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert trainer.model.training


def test_generation_batch_size_and_length_sampler(tokenizer):
    trainer = make_trainer(tokenizer)
    sampler = LengthSampler(2, 3)  # always 2
    outs = trainer.generate(
        _queries(), batch_size=2, length_sampler=sampler, return_prompt=False, do_sample=False, min_length=-1
    )
    assert len(outs) == 3 and all(1 <= len(o) <= 2 for o in outs)


@pytest.mark.parametrize("warpers", [{}, {"temperature": 0.5, "top_k": 5, "top_p": 0.9}])
def test_output_logprobs_match_a_forward_pass(tokenizer, warpers):
    """Behaviour log-probs are those of the model's own distribution, whatever the sampling warpers."""
    model = make_model("llama")
    kwargs = {"do_sample": True, "max_new_tokens": 5, **warpers}
    gen = generate_batch(model, _queries(), 0, None, kwargs, return_prompt=False, output_logprobs=True)
    assert gen.logprobs is not None
    for query, resp, lp in zip(_queries(), gen.sequences, gen.logprobs):
        ids = torch.cat([query, resp]).unsqueeze(0)
        with torch.no_grad():
            logits, _, _ = model(input_ids=ids)
        expected = torch.log_softmax(logits[0, len(query) - 1 : -1], -1).gather(-1, resp.unsqueeze(-1)).squeeze(-1)
        torch.testing.assert_close(lp, expected, rtol=1e-4, atol=1e-4)


def test_generate_ref_response_returns_both(tokenizer):
    trainer = make_trainer(tokenizer)
    policy, ref = trainer.generate(_queries(), generate_ref_response=True, return_prompt=False, **GREEDY)
    assert len(policy) == len(ref) == 3
    assert all(torch.equal(a, b) for a, b in zip(policy, ref))  # nothing trained yet

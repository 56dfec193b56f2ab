"""The CUDA path (runs where a GPU is present; the CPU path is covered everywhere else)."""

from __future__ import annotations

import pytest
import torch

from tests.ppo_core.factory import make_batch, make_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_step_and_generate_on_cuda(tokenizer, precision):
    trainer = make_trainer(tokenizer, "llama", accelerator_kwargs={"mixed_precision": precision})
    assert trainer.accelerator.device.type == "cuda"
    assert next(trainer.model.parameters()).is_cuda and next(trainer.ref_model.parameters()).is_cuda
    q, r, s = make_batch()
    out = trainer.generate(q, return_prompt=False, do_sample=False, max_new_tokens=4)
    assert all(o.is_cuda for o in out)
    stats = trainer.step(q, r, s)
    assert abs(stats["objective/kl"]) < 1e-2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())

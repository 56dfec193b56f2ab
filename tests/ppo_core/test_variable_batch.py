"""`PPOTrainer.set_batch_size`: a caller whose batches vary (the app) resizes the config between steps; without it
the batch stays TRL's fixed `batch_size`."""

from __future__ import annotations

import pytest

from tests.ppo_core.factory import make_batch, make_trainer


def test_set_batch_size_lets_a_step_take_another_number_of_samples(tokenizer) -> None:
    trainer = make_trainer(tokenizer, batch_size=4, mini_batch_size=4)
    with pytest.raises(ValueError, match="Batch size"):
        trainer.step(*make_batch(6))  # fixed batch, as in TRL
    trainer.set_batch_size(6)
    stats = trainer.step(*make_batch(6))
    assert (trainer.config.batch_size, trainer.config.mini_batch_size) == (6, 6)  # still one minibatch per batch
    assert stats["ppo/mean_scores"] == pytest.approx(sum(float(i) - 3 for i in range(6)) / 6)
    trainer.set_batch_size(4, 2)
    trainer.step(*make_batch(4))
    with pytest.raises(ValueError, match="multiple"):
        trainer.set_batch_size(5, 2)

"""`objective/kl` follows `kl_penalty` as in TRL 0.11, and it is what the adaptive KL controller reads."""

from __future__ import annotations

import pytest
import torch

from ppo_core.kl import TOKEN_KLS, full_logprobs, sampled_logprobs, token_kl
from tests.ppo_core.factory import make_batch, make_trainer


def _perturb_reference(trainer) -> None:
    """Move the reference away from the policy, so every penalty is far from 0 and they differ."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in trainer.ref_model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=g))


def _per_token_logprobs(lm, query: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
    """Full log-softmax `(R, V)` at the positions predicting the response, one unpadded sequence at a time."""
    ids = torch.cat([query, response]).unsqueeze(0)
    with torch.no_grad():
        logits = lm(input_ids=ids).logits[0].float()  # (Q + R, V)
    return torch.log_softmax(logits[len(query) - 1 : -1], -1)  # (R, V)


def _hand_penalty(name: str, policy: torch.Tensor, ref: torch.Tensor, response: torch.Tensor) -> float:
    """Sum over the response tokens of the penalty, from the two `(R, V)` distributions."""
    lp = policy.gather(-1, response[:, None]).squeeze(-1)  # (R,)
    ref_lp = ref.gather(-1, response[:, None]).squeeze(-1)  # (R,)
    d = lp - ref_lp
    per_token = {
        "kl": d,
        "abs": d.abs(),
        "mse": 0.5 * d**2,
        "full": (policy.exp() * (policy - ref)).sum(-1),
    }[name]
    return float(per_token.sum())


class RecordingController:
    """Stands in for the adaptive controller and records what `step()` hands it."""

    def __init__(self, value: float) -> None:
        self.value = value
        self.calls: list[tuple[float, int]] = []

    def update(self, current: float, n_steps: int) -> None:
        self.calls.append((current, n_steps))


@pytest.mark.parametrize("name", ["kl", "abs", "mse", "full"])
def test_objective_kl_is_the_batch_mean_of_summed_penalties_and_feeds_the_controller(tokenizer, name):
    trainer = make_trainer(tokenizer, kl_penalty=name, batch_size=4, mini_batch_size=4)
    _perturb_reference(trainer)
    q, r, s = make_batch()
    policy_lm, ref_lm = trainer.model.pretrained_model.eval(), trainer.ref_model.pretrained_model.eval()
    sums, estimates = [], []
    for query, response in zip(q, r):
        policy, ref = _per_token_logprobs(policy_lm, query, response), _per_token_logprobs(ref_lm, query, response)
        sums.append(_hand_penalty(name, policy, ref, response))
        estimates.append(_hand_penalty("kl", policy, ref, response))
    controller = RecordingController(trainer.kl_ctl.value)
    trainer.kl_ctl = controller
    stats = trainer.step(q, r, s)
    torch.testing.assert_close(torch.as_tensor(stats["objective/kl_dist"]), torch.tensor(sums), atol=1e-4, rtol=1e-4)
    assert stats["objective/kl"] == pytest.approx(sum(sums) / len(sums), abs=1e-4, rel=1e-4)
    assert stats["objective/kl_estimate"] == pytest.approx(sum(estimates) / len(estimates), abs=1e-4, rel=1e-4)
    assert controller.calls == [(stats["objective/kl"], 4)]


def test_penalties_differ_so_the_test_above_can_tell_them_apart(tokenizer):
    figures = {}
    for name in ("kl", "abs", "mse", "full"):
        trainer = make_trainer(tokenizer, kl_penalty=name)
        _perturb_reference(trainer)
        figures[name] = trainer.step(*make_batch())["objective/kl"]
    assert len({round(v, 4) for v in figures.values()}) == 4, figures


def test_token_kl_is_chosen_once_with_what_each_penalty_reads():
    assert token_kl("full").policy_input is full_logprobs
    assert all(TOKEN_KLS[n].policy_input is sampled_logprobs for n in ("kl", "abs", "mse"))
    with pytest.raises(ValueError, match="unknown kl_penalty"):
        token_kl("bogus")  # type: ignore[arg-type]

"""The reward interface shared by the example and the app."""

from __future__ import annotations

import sys
import types

import pytest

from ppo_core.rewards import CallableReward, LengthReward, Reward, VaderReward, make_reward


def test_vader_scores_positive_above_negative():
    reward = make_reward("vader")
    assert isinstance(reward, VaderReward) and isinstance(reward, Reward)
    pos, neg, neutral = reward(["q"] * 3, ["I love this, it is wonderful!", "This is awful and I hate it.", "A table."])
    assert pos > 0.5 and neg < -0.5 and abs(neutral) < 0.1


def test_length_rule_peaks_at_target():
    reward = make_reward("length:4")
    assert isinstance(reward, LengthReward)
    assert reward(["q"] * 3, ["a b c d", "a b", ""]) == [1.0, 0.0, -1.0]
    with pytest.raises(ValueError):
        LengthReward(0)


def test_callable_per_pair_and_batched():
    per_pair = CallableReward(lambda q, r: float(len(r)), name="len")
    assert per_pair(["a", "b"], ["xy", "xyz"]) == [2.0, 3.0]

    def batched(queries, responses):
        return [1.0 for _ in responses]

    assert CallableReward(batched)(["a"], ["b"]) == [1.0]


def test_callable_bad_outputs_are_clear_errors():
    with pytest.raises(ValueError, match="non-finite"):
        CallableReward(lambda q, r: float("nan"), name="nan")(["a"], ["b"])
    with pytest.raises(ValueError, match="non-number"):
        CallableReward(lambda q, r: "high", name="text")(["a"], ["b"])
    with pytest.raises(ValueError, match="returned 1 scores for 2"):
        CallableReward(lambda queries, responses: [1.0], name="short")(["a", "b"], ["c", "d"])


def test_module_function_spec(monkeypatch):
    module = types.ModuleType("my_rewards")
    module.politeness = lambda q, r: 1.0 if "please" in r else 0.0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "my_rewards", module)
    reward = make_reward("my_rewards:politeness")
    assert reward.name == "my_rewards:politeness"
    assert reward(["q", "q"], ["please", "no"]) == [1.0, 0.0]


def test_unknown_specs_are_clear_errors():
    with pytest.raises(ValueError, match="unknown reward"):
        make_reward("sentiment-please")
    with pytest.raises(ValueError, match="cannot import"):
        make_reward("no_such_module_xyz:fn")

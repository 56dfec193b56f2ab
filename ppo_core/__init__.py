"""ppo_core: PPO for language models with scores from outside, following TRL 0.11's legacy `PPOTrainer` API."""

from ppo_core.config import PPOConfig
from ppo_core.kl import AdaptiveKLController, FixedKLController
from ppo_core.masked import logprobs_from_logits, masked_mean, masked_var, masked_whiten, whiten
from ppo_core.optimize import NonFiniteError
from ppo_core.reference import create_reference_model
from ppo_core.samplers import LengthSampler
from ppo_core.seeding import set_seed
from ppo_core.trainer import PPOTrainer
from ppo_core.value_head import AutoModelForCausalLMWithValueHead

__all__ = [
    "AdaptiveKLController",
    "AutoModelForCausalLMWithValueHead",
    "FixedKLController",
    "LengthSampler",
    "NonFiniteError",
    "PPOConfig",
    "PPOTrainer",
    "create_reference_model",
    "logprobs_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "set_seed",
    "whiten",
]

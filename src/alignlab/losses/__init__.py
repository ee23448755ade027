"""Reference implementations of the preference and RL losses, as pure functions on log-probs or rewards."""

from alignlab.losses.dpo import dpo_loss, ipo_loss
from alignlab.losses.grpo import group_advantages, grpo_token_loss, rloo_advantages
from alignlab.losses.kto import kto_loss
from alignlab.losses.orpo import orpo_loss
from alignlab.losses.ppo import gae, kl_penalised_rewards, ppo_policy_loss, ppo_value_loss
from alignlab.losses.reward import bradley_terry_loss
from alignlab.losses.simpo import simpo_loss

__all__ = [
    "bradley_terry_loss",
    "dpo_loss",
    "gae",
    "group_advantages",
    "grpo_token_loss",
    "ipo_loss",
    "kl_penalised_rewards",
    "kto_loss",
    "orpo_loss",
    "ppo_policy_loss",
    "ppo_value_loss",
    "rloo_advantages",
    "simpo_loss",
]

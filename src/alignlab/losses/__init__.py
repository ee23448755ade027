"""Reference implementations of the preference and RL losses, as pure functions on log-probs or rewards.

Two kinds, named below. ``TRAINING``: the losses our recipes train with (the DPO family in
``train/preference.py``, PPO in ``train/ppo.py``). ``ORACLES``: the losses TRL trains with for KTO, GRPO, RLOO
and reward models, written here from the papers so the tests can check TRL's numbers against the math;
nothing in training calls them (tests/test_methods.py checks both lists).
"""

from alignlab.losses.dpo import dpo_loss, ipo_loss
from alignlab.losses.grpo import group_advantages, grpo_token_loss, rloo_advantages
from alignlab.losses.kto import kto_loss
from alignlab.losses.orpo import orpo_loss
from alignlab.losses.ppo import gae, kl_penalised_rewards, ppo_policy_loss, ppo_value_loss
from alignlab.losses.reward import bradley_terry_loss
from alignlab.losses.simpo import simpo_loss

TRAINING = ("dpo_loss", "ipo_loss", "simpo_loss", "orpo_loss", "gae", "kl_penalised_rewards", "ppo_policy_loss",
            "ppo_value_loss")
ORACLES = ("kto_loss", "group_advantages", "grpo_token_loss", "rloo_advantages", "bradley_terry_loss")

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

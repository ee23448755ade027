"""Reward functions, judges and their composition.

A reward function is ``fn(prompts: list, completions: list, **columns) -> list[float]``, the form TRL's
GRPOTrainer takes in ``reward_funcs``; prompts and completions may be strings or chat-message lists.
Heavy dependencies (torch, transformers, httpx) are imported only when a function needs them.
"""

from alignlab.rewards.classifier import ClassifierReward, PersonaClassifier, examples_from_pairs
from alignlab.rewards.common import check_rewards, completion_text, groups, prompt_text
from alignlab.rewards.compose import (
    REGISTRY,
    ComposedReward,
    build_spec,
    default_reward,
    load_spec,
    register_reward,
)
from alignlab.rewards.diversity import DiversityPenalty, distinct_n, similarity_penalty
from alignlab.rewards.embed import embed
from alignlab.rewards.heuristics import PersonaHeuristic, persona_heuristic
from alignlab.rewards.judge import LLMJudge, judge_pair
from alignlab.rewards.length import LengthPenalty, length_penalty_value
from alignlab.rewards.rm import RewardModel
from alignlab.rewards.verifiable import AnswerMatch, ArithmeticMatch, FormatCheck, last_number

__all__ = [
    "REGISTRY",
    "AnswerMatch",
    "ArithmeticMatch",
    "ClassifierReward",
    "ComposedReward",
    "DiversityPenalty",
    "FormatCheck",
    "LLMJudge",
    "LengthPenalty",
    "PersonaClassifier",
    "PersonaHeuristic",
    "RewardModel",
    "build_spec",
    "check_rewards",
    "completion_text",
    "default_reward",
    "distinct_n",
    "embed",
    "examples_from_pairs",
    "groups",
    "judge_pair",
    "last_number",
    "length_penalty_value",
    "load_spec",
    "persona_heuristic",
    "prompt_text",
    "register_reward",
    "similarity_penalty",
]

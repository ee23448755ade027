"""Evaluation: raters (who judges a response), the scorecard (adapter vs base on held-out prompts), the report."""

from alignlab.eval.raters import (
    ClassifierRater,
    JudgeRater,
    PersonRater,
    Rater,
    RewardRater,
    get_rater,
    load_or_train_classifier,
)
from alignlab.eval.scorecard import evaluate_run, mean_kl, scorecard

__all__ = [
    "ClassifierRater",
    "JudgeRater",
    "PersonRater",
    "Rater",
    "RewardRater",
    "evaluate_run",
    "get_rater",
    "load_or_train_classifier",
    "mean_kl",
    "scorecard",
]

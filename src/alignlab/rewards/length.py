"""Normalised length penalty: 0 up to the target length, rising linearly to 1 at twice the target.

    penalty = clip(max(0, length - target) / target, 0, 1)

It is a penalty (0 good, 1 bad), so give it a negative weight in a spec (``weight: -0.1``). Verbose snark is
usually bad snark, and longer answers are the cheapest way for a policy to collect more heuristic hits.
"""

from __future__ import annotations

import re

from alignlab.errors import AlignlabError
from alignlab.rewards.common import completion_text

UNITS = ("words", "chars")
_WORD = re.compile(r"\S+")


def text_length(text: str, unit: str = "words") -> int:
    """Length of ``text`` in whitespace-separated words or in characters."""
    return len(_WORD.findall(text)) if unit == "words" else len(text)


def length_penalty_value(text: str, target: float = 60, unit: str = "words") -> float:
    """``clip(max(0, len - target) / target, 0, 1)`` for one text."""
    return min(1.0, max(0.0, text_length(text, unit) - target) / target)


class LengthPenalty:
    """Reward function returning the length penalty of each completion, in [0, 1]."""

    __name__ = "length_penalty"

    def __init__(self, target: float = 60, unit: str = "words"):
        if isinstance(target, bool) or not isinstance(target, (int, float)) or target <= 0:
            raise AlignlabError(f"length target must be a positive number, got {target!r}")
        if unit not in UNITS:
            raise AlignlabError(f"unknown length unit '{unit}'", fix="use one of: " + ", ".join(UNITS))
        self.target, self.unit = float(target), unit

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        return [length_penalty_value(completion_text(c), self.target, self.unit) for c in completions]

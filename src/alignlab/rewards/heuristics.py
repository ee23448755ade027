"""Persona heuristics for "snarky but correct": regex markers that raise the score, hedges that lower it.

Score of one completion, in (-1, 1)::

    markers_per_sentence = marker_hits / sentences
    hedges_per_sentence  = hedge_hits / sentences
    score = (1 - exp(-k * markers_per_sentence)) - (1 - exp(-hedge_k * hedges_per_sentence))

Counting per sentence keeps a long answer from winning by volume; the exponential saturates so that the
second "obviously" in a sentence is worth less than the first, and a completion that is nothing but sarcasm
markers cannot push the score past 1 (the reward-hacking failure the layered reward exists to blunt: a
policy trained on this alone learns to sprinkle markers, which is why it is only one component).
An empty completion scores 0.
"""

from __future__ import annotations

import math
import re

from alignlab.errors import AlignlabError
from alignlab.rewards.common import completion_text

# Signals of the persona. Each pattern's matches are counted (case-insensitive).
DEFAULT_MARKERS: dict[str, str] = {
    "rhetorical_question": r"[^.!?\n]*\?+",
    "sarcasm": (
        r"\b(?:obviously|clearly|shocking(?:ly)?|congratulations|of all things|wow|brilliant|genius|"
        r"groundbreaking|who knew|what a surprise|surprise,? surprise|newsflash|spoiler alert)\b"
    ),
    "italic_emphasis": r"(?<![*\w])\*(?!\*)[^*\n]+?\*(?![*\w])|(?<![_\w])_(?!_)[^_\n]+?_(?![_\w])",
    "sure_because": r"\b(?:sure|yeah|right|oh yes),?\s+because\b",
}

# Servile or hedging phrases that the persona should not use.
DEFAULT_HEDGES: dict[str, str] = {
    "certainly": r"\bcertainly\b",
    "of_course": r"\bof course\b",
    "happy_to": r"\bI(?:'d| would| am|'m) (?:be )?(?:happy|glad|delighted) to\b",
    "great_question": r"\b(?:great|good|excellent|fantastic) question\b",
    "as_an_ai": r"\bas an AI\b",
    "hope_this_helps": r"\bI hope (?:this|that) helps\b",
}

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def count_sentences(text: str) -> int:
    """Sentences in ``text`` (at least 1 for non-empty text): runs of . ! ? followed by space or the end."""
    text = text.strip()
    if not text:
        return 0
    ends = len(_SENTENCE_END.findall(text))
    return ends + (0 if text[-1] in ".!?" else 1)  # trailing words without a full stop count as one


def _compile(patterns: dict[str, str] | list[str] | str, what: str) -> dict[str, re.Pattern]:
    """name -> compiled regex from a mapping, a list of regexes or one regex (a one-item list)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if isinstance(patterns, (list, tuple)):
        patterns = {f"{what}_{i}": p for i, p in enumerate(patterns)}
    if not isinstance(patterns, dict):
        raise AlignlabError(f"{what}s must be a regex, a list of regexes or a mapping of name: regex, got "
                            f"{type(patterns).__name__} {patterns!r}", fix=f'e.g. {what}s: ["obviously", "who knew"]')
    out = {}
    for name, pattern in patterns.items():
        if not isinstance(pattern, str):
            raise AlignlabError(f"{what} pattern '{name}' must be a regex in quotes, got {type(pattern).__name__} "
                                f"{pattern!r}", fix=f'e.g. {what}s: ["obviously", "who knew"]')
        try:
            out[name] = re.compile(pattern, re.IGNORECASE)
        except re.error as err:
            raise AlignlabError(f"{what} pattern '{name}' is not a valid regex ({err})", fix="fix the pattern") from err
    return out


class PersonaHeuristic:
    """Reward: saturating marker score minus saturating hedge score, in (-1, 1); see the module docstring.

    ``markers`` / ``hedges``: name -> regex (or a list of regexes, or one regex), replacing the defaults;
    ``extra_markers`` / ``extra_hedges`` add to them. ``k`` and ``hedge_k`` set how fast each saturates:
    with k = 1.5, one marker per sentence gives 0.78, two give 0.95.
    """

    __name__ = "persona_heuristic"

    def __init__(
        self,
        markers: dict[str, str] | list[str] | None = None,
        hedges: dict[str, str] | list[str] | None = None,
        extra_markers: dict[str, str] | list[str] | None = None,
        extra_hedges: dict[str, str] | list[str] | None = None,
        k: float = 1.5,
        hedge_k: float = 3.0,
    ):
        if k <= 0 or hedge_k <= 0:
            raise AlignlabError(f"k and hedge_k must be > 0, got k={k}, hedge_k={hedge_k}")
        self.markers = _compile(DEFAULT_MARKERS if markers is None else markers, "marker")
        self.markers.update(_compile({} if extra_markers is None else extra_markers, "extra_marker"))
        self.hedges = _compile(DEFAULT_HEDGES if hedges is None else hedges, "hedge")
        self.hedges.update(_compile({} if extra_hedges is None else extra_hedges, "extra_hedge"))
        self.k, self.hedge_k = float(k), float(hedge_k)

    def counts(self, text: str) -> dict[str, int]:
        """Hits per pattern name, for debugging a score."""
        return {name: len(p.findall(text)) for name, p in {**self.markers, **self.hedges}.items()}

    def score(self, text: str) -> float:
        sentences = count_sentences(text)
        if sentences == 0:
            return 0.0
        markers = sum(len(p.findall(text)) for p in self.markers.values()) / sentences
        hedges = sum(len(p.findall(text)) for p in self.hedges.values()) / sentences
        return (1.0 - math.exp(-self.k * markers)) - (1.0 - math.exp(-self.hedge_k * hedges))

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        return [self.score(completion_text(c)) for c in completions]


def persona_heuristic(prompts: list, completions: list, **columns) -> list[float]:
    """The persona heuristic with default patterns, as a plain reward function."""
    return _DEFAULT(prompts, completions, **columns)


_DEFAULT = PersonaHeuristic()

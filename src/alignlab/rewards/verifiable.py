"""Verifiable rewards: the right number, the right answer, the right format. Each returns 1.0 or 0.0.

These are the "still correct" half of "snarky but correct": the persona components reward the voice, these
check the content, and a spec weights them together.
"""

from __future__ import annotations

import math
import re

from alignlab.errors import AlignlabError
from alignlab.rewards.common import column, completion_text

# 1,234.5 / -12 / 3.0 / .5 / 3/4: thousands separators only in whole groups of three ("1,2,3" is three numbers,
# "1,2345" no thousands group), a fraction of two whole numbers (not part of a date like 1/2/2020), and not the
# digits inside a word ("H2O"). The minus sign may be U+2212.
NUMBER = re.compile(
    r"(?<![\w./])[-+]?(?P<num>\d+)/(?P<den>\d+)(?![\d/])"
    r"|(?<![\w.])[-+]?(?:(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?|\.\d+)"
)


def number_strings(text: str) -> list[tuple[str, float]]:
    """Every number in ``text`` in order, as (the text it was written as, its value)."""
    out = []
    for m in NUMBER.finditer(str(text).replace("\u2212", "-")):
        written = m.group()
        try:
            if m.group("den") is not None:
                if int(m.group("den")) == 0:
                    continue
                value = int(m.group("num")) / int(m.group("den")) * (-1 if written.startswith("-") else 1)
            else:
                value = float(written.replace(",", ""))
        except ValueError:
            continue
        out.append((written, value))
    return out


def last_number(text: str) -> float | None:
    """The last number in ``text`` (see ``NUMBER``), or None."""
    found = number_strings(text)
    return found[-1][1] if found else None


def numbers_equal(a: float, b: float, rel_tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


class ArithmeticMatch:
    """1.0 when the completion's last number equals the ``column`` answer (``42``, ``"42.0"``, ``"#### 1,234"``)."""

    __name__ = "arithmetic"

    def __init__(self, column: str = "answer", rel_tol: float = 1e-6):
        self.column, self.rel_tol = column, rel_tol

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        answers = column(columns, self.column, len(completions), "arithmetic")
        out = []
        for c, answer in zip(completions, answers):
            want = answer if isinstance(answer, (int, float)) and not isinstance(answer, bool) else last_number(answer)
            got = last_number(completion_text(c))
            ok = want is not None and got is not None and numbers_equal(got, float(want), self.rel_tol)
            out.append(1.0 if ok else 0.0)
        return out


def normalize(text: str) -> str:
    """Case-folded, whitespace collapsed, surrounding whitespace and final punctuation stripped."""
    return " ".join(str(text).casefold().split()).strip().rstrip(".!")


MATCH_MODES = ("exact", "contains")


class AnswerMatch:
    """1.0 when the completion matches one of the answer's aliases (case- and whitespace-insensitive).

    The ``column`` value is one string or a list of aliases. ``mode="exact"``: the whole completion equals an
    alias; ``mode="contains"``: an alias appears in it as whole words.
    """

    __name__ = "exact_match"

    def __init__(self, column: str = "answer", mode: str = "exact"):
        if mode not in MATCH_MODES:
            raise AlignlabError(f"unknown match mode '{mode}'", fix="use one of: " + ", ".join(MATCH_MODES))
        self.column, self.mode = column, mode

    def matches(self, text: str, aliases) -> bool:
        if not isinstance(aliases, (list, tuple)):
            aliases = [aliases]
        got = normalize(text)
        for alias in aliases:
            want = normalize(alias)
            if not want:
                continue
            if self.mode == "exact" and got == want:
                return True
            if self.mode == "contains" and re.search(rf"(?<!\w){re.escape(want)}(?!\w)", got):
                return True
        return False

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        answers = column(columns, self.column, len(completions), "exact_match")
        return [1.0 if self.matches(completion_text(c), a) else 0.0 for c, a in zip(completions, answers)]


class FormatCheck:
    """1.0 when the completion matches ``pattern`` (``re.search``; ``full=True`` for ``re.fullmatch``), DOTALL."""

    __name__ = "format_check"

    def __init__(self, pattern: str, full: bool = False, ignore_case: bool = False):
        flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        try:
            self.regex = re.compile(pattern, flags)
        except re.error as err:
            raise AlignlabError(f"format_check pattern {pattern!r} is not a valid regex ({err})") from err
        self.full = full

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        if self.full:
            return [1.0 if self.regex.fullmatch(completion_text(c).strip()) else 0.0 for c in completions]
        return [1.0 if self.regex.search(completion_text(c)) else 0.0 for c in completions]

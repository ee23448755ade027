"""Verifiable rewards: the right number, the right answer, the right format. Each returns 1.0 or 0.0.

These are the "still correct" half of "snarky but correct": the persona components reward the voice, these
check the content, and a spec weights them together.
"""

from __future__ import annotations

import json
import math
import re

from alignlab.errors import AlignlabError
from alignlab.rewards.common import column, completion_text

# 1,234.5 / -12 / 3.0 / .5 / 3/4 / 1 1/2 / \frac{3}{4} / 5e-3 / 5 x 10^-3 / -$5: thousands separators only in
# whole groups of three ("1,2,3" is three numbers, "1,2345" no thousands group), a fraction of two whole numbers
# (not part of a date like 1/2/2020), a sign before a currency symbol, and not the digits inside a word ("H2O").
# A number run into a power ("2^10") or one that ends in digits this cannot read is no number, rather than its
# last digits ("10^-3" is not -3). The minus sign may be U+2212.
_PREFIX = r"(?P<{}>[-+]?)(?:[$\u20ac\u00a3\u00a5]\s?)?"  # a sign, then a currency symbol: -$5
_NOT_AFTER = r"(?<![\w.^])(?<!\^[-+{])(?<!\^\{[-+])(?<!\d[eE][-+])"  # inside a word, a power or an exponent
_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?|\.\d+"
_EXPONENT = r"[eE](?P<e>[-+]?\d+)(?!\w|\.\d)|\s*(?:[x\u00d7*]|\\times|\\cdot)\s*10\^\{?(?P<p>[-+]?\d+)\}?"
NUMBER = re.compile(
    _NOT_AFTER + r"(?:(?<!/)" + _PREFIX.format("fsign") + r"(?:"
    r"\\[dt]?frac\{\s*(?P<fnum>\d+(?:\.\d+)?)\s*\}\{\s*(?P<fden>\d+(?:\.\d+)?)\s*\}"  # \frac{3}{4}
    r"|(?:(?P<whole>\d+) +)?(?P<num>\d+)/(?P<den>\d+)(?![\d/])"  # 3/4, and the mixed number 1 1/2
    r")|" + _PREFIX.format("sign") + rf"(?P<dec>{_DECIMAL})(?:{_EXPONENT})?"
    r")(?![\d^]|\.\d|[eE][-+]?\d)"
)


def _value(m: re.Match) -> float | None:
    """The value of one ``NUMBER`` match; None for a fraction over zero."""
    sign = -1.0 if "-" in (m.group("sign") or m.group("fsign") or "") else 1.0
    if m.group("dec") is not None:
        power = m.group("e") or m.group("p") or "0"
        return sign * float(m.group("dec").replace(",", "")) * 10.0 ** int(power)
    num, den = (m.group("fnum"), m.group("fden")) if m.group("fnum") is not None else (m.group("num"), m.group("den"))
    if float(den) == 0:
        return None
    return sign * (int(m.group("whole") or 0) + float(num) / float(den))


def number_strings(text: str) -> list[tuple[str, float]]:
    """Every number in ``text`` in order, as (the text it was written as, its value)."""
    out = []
    for m in NUMBER.finditer(str(text).replace("\u2212", "-")):
        try:
            value = _value(m)
        except (ValueError, OverflowError):
            continue
        if value is not None and math.isfinite(value):
            out.append((m.group(), value))
    return out


def last_number(text: str) -> float | None:
    """The last number in ``text`` (see ``NUMBER``), or None."""
    found = number_strings(text)
    return found[-1][1] if found else None


def numbers_equal(a: float, b: float, rel_tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)


def _number_of(value) -> float | None:
    """An answer's number: a number as it is, else the last number in its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None if value is None or isinstance(value, (bool, dict)) else last_number(value)


class ArithmeticMatch:
    """1.0 when the completion's last number equals the ``column`` answer (``42``, ``"42.0"``, ``"#### 1,234"``),
    or one of them when the answer is a list (``[42, "forty-two"]``)."""

    __name__ = "arithmetic"

    def __init__(self, column: str = "answer", rel_tol: float = 1e-6):
        self.column, self.rel_tol = column, rel_tol

    def wanted(self, answer) -> list[float]:
        return [n for a in (answer if isinstance(answer, list) else [answer]) if (n := _number_of(a)) is not None]

    def value_problem(self, answer) -> str | None:
        """Why an answer can never be matched (checked on every row before training), or None."""
        return None if self.wanted(answer) else f"holds no number ({json.dumps(answer, ensure_ascii=False)[:40]})"

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        answers = column(columns, self.column, len(completions), "arithmetic")
        out = []
        for c, answer in zip(completions, answers):
            got = last_number(completion_text(c))
            ok = got is not None and any(numbers_equal(got, want, self.rel_tol) for want in self.wanted(answer))
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

    def value_problem(self, answer) -> str | None:
        """Why an answer can never be matched (checked on every row before training), or None."""
        aliases = answer if isinstance(answer, list) else [answer]
        if any(isinstance(a, (dict, list)) for a in aliases) or not any(normalize(a) for a in aliases if a is not None):
            return f"holds no text to match ({json.dumps(answer, ensure_ascii=False)[:40]})"
        return None

    def matches(self, text: str, aliases) -> bool:
        if not isinstance(aliases, (list, tuple)):
            aliases = [aliases]
        got = normalize(text)
        for alias in aliases:
            want = normalize(alias) if alias is not None else ""
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

"""The correctness score: does an answer's content agree with a reference answer? In [0, 1], None without one.

A reference is a row with any of:

  reference   a plain correct answer (text)
  answer      the number an arithmetic answer must state
  aliases     strings of which a correct answer contains at least one ("da Vinci", "Leonardo")
  key_terms   words or phrases a correct answer very likely mentions (a how-to's steps, a function name)

Small models ramble, hedge and repeat, so the checks look for the right content rather than a clean
format. Each available check gives a value in [0, 1]; the score is their weighted mean:

  number    the reference number is stated, and it is the answer's result: 1; stated but not the result: 0.5;
            absent: 0. Weight 4 (it decides). The result is the number after the last '=', else the last number,
            or the first one (answers lead with it: "141. Three 47s."), each unless it is negated ("Not 12, ...",
            "12 is wrong", "..., not 13"), and the first unless a later number is put in its place ("141 is what
            people think, but it's really 147"). A short free-text reference with no aliases or key terms (at
            most two content words besides one number the prompt does not hold: "The answer is 42.") is
            checked this way too; a longer one's number (a year, a population) is a detail, not the answer. A number written out in words ("Ten, obviously.") finds no digits
            and counts 0 here even where a word alias matches: on the read sets, trusting the word alias
            instead turned 6 of 688 arithmetic answers the readers called wrong into "correct" (rambling
            answers hold "nine" or "three hundred" by chance) and helped none.
  alias     any alias present (case-insensitive, on word boundaries): 1, else 0. Weight 3. A bare-number alias
            ("27" for the Moon's orbit) counts only where the word after it agrees with the word after that
            number in the reference, when both have one: "27 minutes" is not "27.3 days". Over the 17 blind-read
            sets this raised the correct score's AUC on 16 and lowered it on none (pooled 0.753 -> 0.762).
  terms     share of key terms present (a word matches by its first five letters, so "boiling" matches
            "boil"). Without key_terms, the reference's content words that the prompt does not already
            contain stand in for them. Weight 2.
  lead      without aliases or key terms: the first of those content words (in "Ottawa is the capital of
            Canada", asked "What is the capital of Canada?": ottawa) is present. Weight 2.
  meaning   cosine similarity of MiniLM embeddings of answer and reference, mapped from [0.3, 0.8] to
            [0, 1]. Weight 1.

The weights were chosen by agreement with blind correctness labels (README: "Scorecard agreement").

An unfinished answer (it stops mid-sentence, as one cut at the token cap does) has its score multiplied by
``UNFINISHED`` (0.7): blind readers judge an answer by its main point, and a small model that runs into the cap
usually rambles past it, mentioning the reference's terms while asserting something else. Without the factor
the score counted the base model's cut-off answers correct about twice as often as readers did (36% against
20%); with it the per-model correct shares sit within 2-5 points of the readers' on average (README).
"""

from __future__ import annotations

import re
from typing import Any

WORD = re.compile(r"[a-z0-9_]+(?:[.'][a-z0-9_]+)*")
STOP = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be been being it its
    this that these those there here you your yours i me my we our they them their he she his her what which who
    whom whose when where why how do does did done not no yes can could should would will just than too very
    about into over under up down out more most some any all each one also only get got make makes use using
    about around usually often typically really thing things way ways between during after before while""".split()
)
WEIGHTS = {"number": 4.0, "alias": 3.0, "lead": 2.0, "terms": 2.0, "meaning": 1.0}
UNFINISHED = 0.7
FINISHED_ENDINGS = tuple('.!?…"\'”’)]`*')


def unfinished(answer: str) -> bool:
    """True when an answer stops mid-sentence: its last character ends no sentence, quote, bracket or code span, and
    is no emoji or other symbol ("Try a harder one next time 🙄" is finished)."""
    import unicodedata

    text = answer.rstrip().rstrip("\ufe0f\u200d")
    return bool(text) and not text.endswith(FINISHED_ENDINGS) and unicodedata.category(text[-1]) not in ("So", "Sk")


def numbers(text: str) -> list[float]:
    """Every number in ``text`` (thousands separators, fractions, U+2212 minus), in order."""
    from alignlab.rewards.verifiable import number_strings

    return [v for _, v in number_strings(text)]


def _fraction(written: str) -> bool:
    """Written as a fraction: 1/3, or LaTeX's \\frac{1}{3} (an exact value, matched at full precision)."""
    return "/" in written or "frac" in written


def _decimals(written: str) -> int:
    return len(written.split(".", 1)[1]) if "." in written and not _fraction(written) else 0


def _same(got: tuple[str, float], want: float) -> bool:
    """A whole-number reference is matched exactly; a decimal one at the precision both write it to (3.14 for
    3.14159, 9.81 for 9.8), and only by a number that has decimals or is an exact fraction (3.4 is not 3.5)."""
    written, value = got
    if float(want).is_integer():
        return abs(value - want) <= 1e-6
    if _fraction(written):
        return abs(value - want) <= 1e-6 * max(1.0, abs(want))
    places = min(_decimals(written), _decimals(repr(float(want))))
    return places > 0 and round(value, places) == round(float(want), places)


NEGATED = re.compile(r"(?:\b(?:not|isn't|isnt|never)\W*|\bno\s+)$")  # "No, 42, genius." is no negation
DISMISSED = re.compile(r"^\W*(?:is|was|would be)\s+(?:wrong|incorrect|not (?:the answer|right|correct)|a myth|"
                       r"a common mistake)")
# a later result put in the first one's place: "141 is what people think, but it's really 147"
CORRECTED = re.compile(r"\b(?:but|actually|in fact|instead|rather)\b[^0-9.!?\n]{0,30}?\b(?:it's|it is|is|was|the answer "
                       r"is)\s+(?:really\s+|actually\s+)?(-?\d[\d,]*(?:\.\d+)?)")


def _spans(text: str) -> list[tuple[int, int, str, float]]:
    """(start, end, written, value) of every number, in the text as number_strings reads it (U+2212 as '-')."""
    from alignlab.rewards.verifiable import NUMBER, number_strings

    out = []
    for m in NUMBER.finditer(text):
        got = number_strings(m.group())
        if got:
            out.append((m.start(), m.end(), *got[0]))
    return out


def _stands(text: str, span: tuple[int, int, str, float], last: bool) -> bool:
    """The number at ``span`` is put forward as the answer's result: not negated ("Not 12", "12 is wrong") and, for
    the first number, no later one put in its place."""
    start, end, _, value = span
    low = text.lower()
    if _rejected(low, start, end):
        return False
    if last:
        return True
    for m in CORRECTED.finditer(low[end:]):
        try:
            if abs(float(m.group(1).replace(",", "")) - value) > 1e-9:
                return False
        except ValueError:
            continue
    return True


def number_check(text: str, want: float) -> float:
    """1 if ``want`` is the answer's result, 0.5 if it is only mentioned, 0 if absent (the module docstring)."""
    from alignlab.rewards.verifiable import number_strings

    text = str(text).replace("\u2212", "-")
    spans = _spans(text)
    if not any(_same(s[2:], want) for s in spans):
        return 0.0
    if "=" in text:  # a worked '= X' decides
        result = number_strings(text.rsplit("=", 1)[1])[:1]
    else:
        result = [s[2:] for s, last in ((spans[-1], True), (spans[0], False)) if _stands(text, s, last=last)]
    return 1.0 if any(_same(g, want) for g in result) else 0.5


def dismissed(text: str, want: float) -> bool:
    """``want`` is written only where the answer rejects it ("Not 125, that is a common mistake. 5 cubed is 150."):
    then a bare-number alias or key term of it is no sign of a right answer either."""
    low = str(text).replace("\u2212", "-").lower()
    hits = [s for s in _spans(low) if _same(s[2:], want)]
    return bool(hits) and all(_rejected(low, s[0], s[1]) for s in hits)


def _rejected(low: str, start: int, end: int) -> bool:
    """The number at ``low[start:end]`` is negated before ("Not 12") or dismissed after ("12 is wrong")."""
    return bool(NEGATED.search(low[max(0, start - 12):start]) or DISMISSED.search(low[end:]))


def _not_rejected(items: list, answer: str) -> list:
    """The aliases or key terms left once a bare number the answer rejects is taken out (see :func:`dismissed`)."""
    def rejected(term) -> bool:
        got = numbers(str(term))
        return not re.search(r"[^\W\d_]", str(term)) and len(got) == 1 and dismissed(answer, got[0])

    return [t for t in items if not rejected(t)]


def _norm(text: str) -> str:
    return " ".join(WORD.findall(text.lower().replace("’", "'")))


def alias_check(text: str, aliases: list[str]) -> float:
    body = f" {_norm(text)} "
    for alias in aliases:
        a = _norm(str(alias))
        if a and f" {a} " in body:
            return 1.0
        if a and not a.replace(" ", "").isalnum() and a in body:
            return 1.0
    return 0.0


NUMBER_WORD = re.compile(r"(\d+)(?:\.\d+)?\s+([a-z]+)")


def _unit_after(text: str, number: str) -> str | None:
    """The word after ``number``'s first occurrence in ``text`` (integer parts compared), if a word follows it."""
    whole = number.split(".")[0]
    for m in NUMBER_WORD.finditer(text.lower()):
        if m.group(1) == whole:
            return m.group(2)
    return None


def units_agree(answer: str, reference: str, aliases: list[str]) -> bool:
    """False when every alias the answer contains is a bare number and each is followed, in the answer and in the
    reference, by words that differ (first four letters compared: "day" and "days" agree)."""
    found = [str(a).strip() for a in aliases if alias_check(answer, [a])]
    if not found or not all(re.fullmatch(r"\d+(?:\.\d+)?", a) for a in found):
        return True
    for a in found:
        want, got = _unit_after(reference, a), _unit_after(answer, a)
        if want is None or got is None or got[:4] == want[:4]:
            return True
    return False


def _stem(word: str) -> str:
    return word[:5]


def content_terms(text: str, exclude: str = "") -> list[str]:
    """Content words of ``text`` (no stop words, no words of ``exclude``), in order, unique."""
    skip = {_stem(w) for w in WORD.findall(exclude.lower())}
    out: list[str] = []
    for w in WORD.findall(text.lower()):
        if w in STOP or len(w) < 3 or _stem(w) in skip or w in out:
            continue
        out.append(w)
    return out


def term_coverage(text: str, terms: list[str]) -> float:
    """Share of ``terms`` present; a term's words match by their first five letters, code terms literally."""
    if not terms:
        return 0.0
    low = text.lower()
    stems = {_stem(w) for w in WORD.findall(low)}

    def present(w: str) -> bool:  # "boil" matches "boiling", "minutes" matches "minute"
        return _stem(w) in stems or (len(w) >= 4 and any(s.startswith(w[:5]) for s in stems))

    terms = [t for t in terms if str(t).strip()]  # an empty term is in every answer
    if not terms:
        return 0.0
    hit = 0
    for term in terms:
        t = str(term).lower().strip()
        words = WORD.findall(t)
        literal = not words or any(ch in t for ch in "()[]_.=`/-$") and t in low
        if literal or (words and all(present(w) for w in words)):
            hit += 1
    return hit / len(terms)


def reference_problem(row: dict) -> str | None:
    """Why a row's reference fields cannot grade an answer, or None: a text "aliases" was read letter by letter (so
    "a" matched any answer), and an empty key term counted as found."""
    ref = row.get("reference")
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (str, int, float))):
        return "'reference' must be text or a number"
    for key in ("aliases", "key_terms"):
        value = row.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                                                          for v in value)):
            return f"'{key}' must be a list of non-empty strings"
    return None


def has_reference(row: dict) -> bool:
    return any(row.get(k) not in (None, "", []) for k in ("reference", "answer", "aliases", "key_terms"))


def _numeric_answer(row: dict) -> float | None:
    value = row.get("answer")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    found = numbers(str(value))
    return found[-1] if len(found) == 1 else None


def _reference_number(reference: str, prompt: str) -> float | None:
    """The number a short free-text reference is about ("The answer is 42.", "6 times 7 is 42."): exactly one number
    the prompt does not hold, in a reference of at most two other content words; None otherwise (a longer reference's
    number, such as a year or a population, is a detail, not the answer)."""
    asked = set(numbers(prompt))
    new = {v for v in numbers(reference) if v not in asked}
    words = [w for w in content_terms(reference, exclude=prompt) if not re.fullmatch(r"[\d.,]+", w)]
    return new.pop() if len(new) == 1 and len(words) <= 2 else None


def checks(answer: str, row: dict, meaning: float | None = None) -> dict[str, float]:
    """The individual checks available for ``row`` (see the module docstring)."""
    out: dict[str, float] = {}
    want = _numeric_answer(row)
    reference = str(row.get("reference") or "")
    aliases = [a for a in (row.get("aliases") or []) if str(a).strip()]
    if want is None and reference and row.get("category") == "arithmetic":
        found = numbers(reference)
        want = found[-1] if found else None
    elif want is None and reference and not aliases and not row.get("key_terms"):
        want = _reference_number(reference, str(row.get("prompt") or ""))
    if want is not None:
        out["number"] = 0.0 if dismissed(answer, want) else number_check(answer, want)  # "Not 42, it is 48."
    kept = _not_rejected(aliases, answer)  # nor 42 as a bare-number alias or key term
    if aliases and not kept:
        out["alias"] = 0.0  # every alias was a number the answer rejects
    elif kept:
        aliases = kept
        out["alias"] = alias_check(answer, aliases)
        if out["alias"] and reference and not units_agree(answer, reference, aliases):
            out["alias"] = 0.0
    given = list(row.get("key_terms") or []) or (content_terms(reference, exclude=str(row.get("prompt") or ""))[:8]
                                                 if reference else [])
    terms = _not_rejected(given, answer)
    if given and not terms:
        out["terms"] = 0.0  # every term was a number the answer rejects
    if terms and not row.get("key_terms") and "alias" not in out and "number" not in out:
        out["lead"] = term_coverage(answer, terms[:1])  # the reference's first new word: usually the answer
    if terms:
        out["terms"] = term_coverage(answer, terms)
    if meaning is not None:
        out["meaning"] = min(1.0, max(0.0, (meaning - 0.3) / 0.5))
    return out


def combine(parts: dict[str, float]) -> float | None:
    if not parts:
        return None
    total = sum(WEIGHTS[k] for k in parts)
    return sum(WEIGHTS[k] * v for k, v in parts.items()) / total


def score_correct(answers: list[str], refs: list[dict | None], embed_fn=None) -> list[float | None]:
    """Correctness per answer against its reference row (None where a row has no reference)."""
    meaning: list[float | None] = [None] * len(answers)
    todo = [i for i, r in enumerate(refs) if r and r.get("reference")]
    if todo and embed_fn is not None:
        emb = embed_fn([answers[i] for i in todo] + [str(refs[i]["reference"]) for i in todo])
        k = len(todo)
        sims = (emb[:k] * emb[k:]).sum(-1).tolist()
        for i, s in zip(todo, sims):
            meaning[i] = s
    out: list[float | None] = []
    for ans, ref, m in zip(answers, refs, meaning):
        score = combine(checks(ans, ref, m)) if ref and has_reference(ref) else None
        out.append(score * UNFINISHED if score is not None and unfinished(ans) else score)
    return out


def reference_text(row: dict) -> str:
    """A reference row as text for a judge: its ``reference``, else what its number, aliases or key terms say."""
    if str(row.get("reference") or "").strip():
        return str(row["reference"])
    parts = []
    if _numeric_answer(row) is not None:
        parts.append(f"The answer is {row['answer']}.")
    if row.get("aliases"):
        parts.append("A correct answer names " + " or ".join(str(a) for a in row["aliases"]) + ".")
    if row.get("key_terms"):
        parts.append("A correct answer mentions " + ", ".join(str(t) for t in row["key_terms"]) + ".")
    return " ".join(parts)


def reference_for(prompt: Any, table: dict[str, dict]) -> dict | None:
    """The bundled reference row of a prompt (matched on normalised text), if there is one."""
    return table.get(_norm(str(prompt)))


def reference_table(rows: list[dict]) -> dict[str, dict]:
    return {_norm(str(r["prompt"])): r for r in rows if has_reference(r)}

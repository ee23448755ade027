"""The correctness score: does an answer's content agree with a reference answer? In [0, 1], None without one.

A reference is a row with any of:

  reference   a plain correct answer (text; a blank one is none)
  answer      the number an arithmetic answer must state
  aliases     strings of which a correct answer contains at least one ("da Vinci", "Leonardo")
  key_terms   words or phrases a correct answer very likely mentions (a how-to's steps, a function name)

Small models ramble, hedge and repeat, so the checks look for the right content rather than a clean
format. Each available check gives a value in [0, 1]; the score is their weighted mean:

  number    the reference number is stated, and it is the answer's result: 1; stated but not the result: 0.5;
            absent: 0. Weight 4 (it decides). The result is the number after the last '=', else the last number,
            or the first one (answers lead with it: "141. Three 47s."), each unless it is negated ("Not 12, ...",
            "12 is wrong", "..., not 13"), and the first unless a later number is put in its place ("141 is what
            people think, but it's really 147"). A number followed by a scale word is worth it ("2.1 million" is
            2,100,000). A short free-text reference with no aliases or key terms (at most two content words
            besides the numbers the prompt does not hold: "The answer is 42.", "3.5 km") is checked this way too,
            and so is one that is only a number even where the prompt holds it ("5" to "Which is bigger, 3 or
            5?"). There the answer must write the number with the reference's unit ("3.5 miles" is not "3.5 km"),
            a percentage may be written as a fraction ("0.25" for "25%"), and in a reference of at most six words
            every number is required ("9 November 1989" is not "9 November 1990"); a longer one's number (a year,
            a population) is a detail, not the answer. A number written out in words ("Ten, obviously.") finds
            no digits and counts 0 here even where a word alias matches: on the read sets, trusting the word
            alias instead turned 6 of 688 arithmetic answers the readers called wrong into "correct" (rambling
            answers hold "nine" or "three hundred" by chance) and helped none.
  alias     any alias present (case-insensitive, on word boundaries; in another script, "東京", as a substring)
            where the answer puts it forward: 1, else 0. Weight 3. A name the answer names only to reject it
            does not count: negated ("Not Paris, it's Lyon.", "It was not Leonardo da Vinci"), dismissed ("Paris
            is wrong"), denied the role the question asks about ("Paris is not the capital") or put aside in the
            same sentence ("Paris is what people think, but it's really Lyon"). A bare-number alias ("27" for the
            Moon's orbit) counts only where the word after it agrees with the word after that number in the
            reference, when both have one: "27 minutes" is not "27.3 days". Over the 17 blind-read sets this
            raised the correct score's AUC on 16 and lowered it on none (pooled 0.753 -> 0.762).
  polarity  for a reference that opens with yes or no ("Yes, 7 is prime.", "No"): the answer's yes or no (its
            first words, or one set off by punctuation in its first sentence) is the reference's: 1, else 0.
            Weight 3. Absent where the answer says neither.
  terms     share of key terms present, put forward as aliases are (a word matches by its first five letters,
            so "boiling" matches "boil"; a term of code marks, "==", only as written). Without key_terms, the
            reference's content words that the prompt does not already contain stand in for them (numbers left
            to the number check; all its content words where the prompt holds them all, as a choice between the
            prompt's options does; none for a yes/no reference that only restates the question). Weight 2.
  lead      without aliases, key terms, a number or a yes/no reference: the first of those content words (in
            "Ottawa is the capital of Canada", asked "What is the capital of Canada?": ottawa) is present.
            Weight 2.
  meaning   cosine similarity of MiniLM embeddings of answer and reference, mapped from [0.3, 0.8] to
            [0, 1]. Weight 1. Alone (a reference none of the other checks can read) it gives at most
            ``MEANING_ALONE`` (0.45): it cannot tell "Yes." from "No.", so it cannot call an answer correct.

The weights were chosen by agreement with blind correctness labels (README: "Scorecard agreement"). Rejected
names and terms, the yes/no check and code-mark terms that must be present each raised the pooled AUC over the
later read sets (together 0.747 -> 0.754; bench/agreement/correct_check.py) and left the first set's at 0.837.

An unfinished answer (it stops mid-sentence, as one cut at the token cap does) has its score multiplied by
``UNFINISHED`` (0.7): blind readers judge an answer by its main point, and a small model that runs into the cap
usually rambles past it, mentioning the reference's terms while asserting something else. Without the factor
the score counted the base model's cut-off answers correct about twice as often as readers did (36% against
20%); with it the per-model correct shares sit within 2-5 points of the readers' on average (README). An answer
that ends without a full stop by design is not cut off (:func:`cut_off`): one ending in another script's full
stop ("。"), a short one with no sentence in it ("Paris", "42"), the last item of a list without full stops.
"""

from __future__ import annotations

import re
from typing import Any

WORD = re.compile(r"[a-z0-9_]+(?:[.'][a-z0-9_]+)*")
# letters of a script other than Latin (CJK, Cyrillic, Greek, Arabic, ...): WORD finds nothing in "東京"
FOREIGN = re.compile(r"[^\W\d_\x00-\u024f]+")
STOP = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be been being it its
    this that these those there here you your yours i me my we our they them their he she his her what which who
    whom whose when where why how do does did done not no yes can could should would will just than too very
    about into over under up down out more most some any all each one also only get got make makes use using
    about around usually often typically really thing things way ways between during after before while""".split()
)
WEIGHTS = {"number": 4.0, "alias": 3.0, "polarity": 3.0, "lead": 2.0, "terms": 2.0, "meaning": 1.0}
UNFINISHED = 0.7
MEANING_ALONE = 0.45  # the most that MiniLM similarity alone can give: it cannot tell "Yes." from "No." or 3 from 5
FINISHED_ENDINGS = tuple('.!?…"\'”’)]`*')
SENTENCE_MARKS = "。！？｡．؟۔।॥።။"  # sentence ends of other scripts (Chinese and Japanese, Arabic, Urdu, Hindi, ...)
LIST_ITEM = re.compile(r"\s*(?:[-*•+]|\d+[.)])\s+\S")


def unfinished(answer: str) -> bool:
    """True when an answer stops mid-sentence: its last character ends no sentence (in any script: "。"), quote,
    bracket or code span, and is no emoji or other symbol ("Try a harder one next time 🙄" is finished)."""
    import unicodedata

    text = answer.rstrip().rstrip("\ufe0f\u200d")
    if not text or text.endswith(FINISHED_ENDINGS) or text[-1] in SENTENCE_MARKS:
        return False
    return unicodedata.category(text[-1]) not in ("So", "Sk", "Pe", "Pf")  # symbols, closing brackets and quotes


def cut_off(answer: str) -> bool:
    """The correct score's reading of :func:`unfinished`: an answer that ends without a full stop by design is not
    cut off. That is a short one with no sentence in it ("Paris", "42", "Canberra, not Sydney") and the last item of
    a list whose other items carry no full stops either. Answers cut at the token cap are long, and end mid-item in
    a list of sentences: of the read sets' 1,588 answers that end mid-sentence this leaves 1,567 cut off (the rest:
    "18 + 27 = 35" and four ingredient lists), and the correct score's AUC where it was."""
    if not unfinished(answer):
        return False
    text = answer.strip()
    last = re.search(r"[a-z0-9_']+$", text.lower())  # the last word, where the text ends in one
    trailing = not text[-1].isalnum() or bool(last) and last.group() in STOP  # "The capital of France is", "such as,"
    if "\n" not in text and len(text.split()) <= 6 and not re.search(r"[.!?](?:\s|$)", text):
        return trailing
    lines = [line for line in text.splitlines() if line.strip()]
    items = [line.rstrip() for line in lines[:-1] if LIST_ITEM.match(line)]
    if not LIST_ITEM.match(lines[-1]) or len(items) < 2 or any(i.endswith(tuple(".!?:;,")) for i in items):
        return True
    return trailing


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
# the same for a name: "Paris is what people think, but it's really Lyon" (a capitalised name after "really")
CORRECTED_NAME = re.compile(r"\b(?:but|actually|in fact|instead|rather)\b[^.!?\n]{0,30}?\b(?:it's|it is|is|was|the "
                            r"answer is)\s+(?:really|actually)\s+([a-z][\w'-]*)")
# a name denied the role the question asks about: "Paris is not the capital"
DENIED = re.compile(r"\W*(?:is|was|are|were)(?:n't|\s+not)\s+(?:(?:the|a|an)\s+)?([a-z]+)")
SCALE = re.compile(r"\s+(thousand|million|billion|trillion)\b", re.IGNORECASE)
SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
PERCENT = re.compile(r"\s*(?:%|percent\b|per cent\b)", re.IGNORECASE)


def _spans(text: str) -> list[tuple[int, int, str, float]]:
    """(start, end, written, value) of every number, in the text as number_strings reads it (U+2212 as '-'); a
    number followed by a scale word is worth it ("2.1 million" is 2,100,000) and its span takes the word in."""
    from alignlab.rewards.verifiable import NUMBER, number_strings

    out = []
    for m in NUMBER.finditer(text):
        got = number_strings(m.group())
        if got:
            end, (written, value) = m.end(), got[0]
            scale = SCALE.match(text, end)
            if scale:
                end, value = scale.end(), round(value * SCALES[scale.group(1).lower()], 6)
            out.append((m.start(), end, written, value))
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


def _lower(text: str) -> str:
    return str(text).lower().replace("’", "'")


def _foreign(text: str) -> str:
    """``text`` lower-cased where it holds letters of another script ("東京"), matched as a substring; else ""."""
    return _lower(text).strip() if FOREIGN.search(str(text)) else ""


def _asked(prompt: str) -> set[str]:
    return {_stem(w) for w in content_terms(prompt)}


def _said(text: str, start: int, end: int, asked: set[str]) -> bool:
    """The name or term at ``text[start:end]`` is put forward, not rejected: not negated ("Not Paris", "It was not
    Leonardo"), dismissed ("Paris is wrong"), denied the role the question asks about ("Paris is not the capital",
    asked for the capital), or put aside for another name in the same sentence ("Paris is what people think, but
    it's really Lyon")."""
    low = _lower(text)
    if _rejected(low, _name_start(text, start), end):
        return False
    denied = DENIED.match(low, end)
    if denied and _stem(denied.group(1)) in asked:
        return False
    sentence = re.split(r"[.!?\n]", low[end:], maxsplit=1)[0]
    for m in CORRECTED_NAME.finditer(sentence):
        at = end + m.start(1)
        name = m.group(1)
        if len(text) == len(low) and text[at].isupper() and name not in low[start:end] and name not in STOP:
            return False
    return True


def _name_start(text: str, start: int) -> int:
    """Where the name that ends in the word at ``start`` begins ("Leonardo da Vinci" for "Vinci"): a negation before
    the name negates each of its words."""
    if len(text) != len(_lower(text)):
        return start
    for m in reversed(list(re.finditer(r"[^\W\d_]+", text[:start]))):
        word = m.group()
        name = word[0].isupper() and word.lower() not in STOP or word in NAME_PARTICLES
        if text[m.end():start].strip() or not name:
            break
        start = m.start()
    return start


NAME_PARTICLES = frozenset("da de di del der van von la le du".split())


def _phrase_spans(low: str, phrase: str) -> list[tuple[int, int]]:
    """Where the words of ``phrase`` (normalised) stand together in ``low``, on word boundaries."""
    words = phrase.split()
    if not words:
        return []
    pattern = r"(?<![a-z0-9_])" + r"[^a-z0-9_]+".join(map(re.escape, words)) + r"(?![a-z0-9_])"
    return [(m.start(), m.end()) for m in re.finditer(pattern, low)]


def _substring_spans(low: str, part: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(re.escape(part), low)] if part else []


def alias_check(text: str, aliases: list[str], prompt: str = "") -> float:
    """1 if an alias is present (case-insensitive, on word boundaries; in another script, as a substring) where the
    answer puts it forward (:func:`_said`: "Not Paris, it's Lyon." names Paris only to reject it), else 0."""
    body, low, asked = f" {_norm(text)} ", _lower(text), _asked(prompt)
    for alias in aliases:
        a = _norm(str(alias))
        if _foreign(str(alias)):
            spans = _substring_spans(low, _foreign(str(alias)))
            found = bool(spans)
        else:
            found = bool(a) and (f" {a} " in body or (not a.replace(" ", "").isalnum() and a in body))
            spans = _phrase_spans(low, a) if found else []
        # where the words were found but not together as written (punctuation inside the alias), it counts
        if found and (not spans or any(_said(text, s, e, asked) for s, e in spans)):
            return 1.0
    return 0.0


NUMBER_WORD = re.compile(r"(\d+)(?:\.\d+)?\s+([a-z]+)")
UNIT_NAMES = {"km": "km", "kilometre": "km", "kilometer": "km", "m": "m", "metre": "m", "meter": "m", "mi": "mile",
              "cm": "cm", "centimetre": "cm", "centimeter": "cm", "mm": "mm", "millimetre": "mm", "millimeter": "mm",
              "kg": "kg", "kilogram": "kg", "kilo": "kg", "g": "g", "gram": "g", "lb": "lb", "pound": "lb",
              "ft": "ft", "foot": "ft", "feet": "ft", "s": "s", "sec": "s", "second": "s", "min": "min",
              "minute": "min", "h": "h", "hr": "h", "hour": "h", "yr": "year", "%": "percent", "per": "percent",
              "percent": "percent"}


def _unit(word: str | None) -> str | None:
    """A unit word in one spelling ("kilometres", "km" -> km; "days", "day" -> day); None for a stop word or an
    ordinal's ending ("9th")."""
    if word is None or word in STOP or word in ("st", "nd", "rd", "th"):
        return None
    one = word[:-1] if word.endswith("s") and len(word) > 3 else word
    return UNIT_NAMES.get(word) or UNIT_NAMES.get(one) or one[:4]


def _unit_at(text: str, end: int) -> str | None:
    """The unit written right after the number that ends at ``end`` ("3.5 km", "25%"), if any."""
    m = re.match(r" ?(%|[a-z]+)", _lower(text)[end:])
    return _unit(m.group(1)) if m else None


def _unit_after(text: str, number: str) -> str | None:
    """The word after ``number``'s first occurrence in ``text`` (integer parts compared), if a word follows it."""
    whole = number.split(".")[0]
    for m in NUMBER_WORD.finditer(text.lower()):
        if m.group(1) == whole:
            return m.group(2)
    return None


def units_agree(answer: str, reference: str, aliases: list[str]) -> bool:
    """False when every alias the answer contains is a bare number and each is followed, in the answer and in the
    reference, by words for different units ("27 minutes" for "27.3 days"; "day" and "days" agree)."""
    found = [str(a).strip() for a in aliases if alias_check(answer, [a])]
    if not found or not all(re.fullmatch(r"\d+(?:\.\d+)?", a) for a in found):
        return True
    for a in found:
        want, got = _unit(_unit_after(reference, a)), _unit(_unit_after(answer, a))
        if want is None or got is None or got == want:
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


CODE_MARKS = "()[]_.=`/-$"


def term_coverage(text: str, terms: list[str], prompt: str = "") -> float:
    """Share of ``terms`` present where the answer puts them forward (:func:`_said`); a term's words match by their
    first five letters, code terms literally, a term in another script as a substring."""
    low = _lower(text)
    tokens = [(m.start(), m.end(), _stem(m.group())) for m in WORD.finditer(low)]
    asked = _asked(prompt)

    def where(w: str) -> list[tuple[int, int]]:  # "boil" matches "boiling", "minutes" matches "minute"
        return [(s, e) for s, e, stem in tokens if stem == _stem(w) or (len(w) >= 4 and stem.startswith(w[:5]))]

    terms = [t for t in terms if str(t).strip()]  # an empty term is in every answer
    if not terms:
        return 0.0
    hit = 0
    for term in terms:
        t = _lower(term).strip()
        value = numbers(t) if not re.search(r"[^\W\d_]", t) else []
        if len(value) == 1:  # a bare number, matched by value: "1,000" is "1000"
            spans = [s[:2] for s in _spans(low.replace("\u2212", "-")) if _same(s[2:], value[0])]
            hit += any(_said(text, s, e, asked) for s, e in spans)
            continue
        words = [] if _foreign(t) else WORD.findall(t)
        # a term of code marks alone ("==", "//") or another script is found as written, or not at all
        spans = _substring_spans(low, t) if not words or any(ch in t for ch in CODE_MARKS) else []
        if not spans and words and all(where(w) for w in words):
            spans = where(words[0])
        if any(_said(text, s, e, asked) for s, e in spans):
            hit += 1
    return hit / len(terms)


YES_NO = r"(yes|yeah|yep|yup|no(?=\s*(?:[,.!?;:]|$)|\s+(?:it|you|they|we|i|he|she|that|this|there|not)\b)|nope|nah)\b"
# the answer's first words: "No, 7 is not prime.", "Well, yes.", "Of course not.", "Usually not: ..."
LEAD_YES_NO = re.compile(r"\W*(?:(?:well|oh|um|so|honestly|short answer)\W+)?(?:(of course not|absolutely not|"
                         r"definitely not|certainly not|not at all|not really|not usually|not necessarily|"
                         r"(?:usually|probably|generally|mostly|typically|normally) not)|" + YES_NO + ")")
SET_OFF = re.compile(r"\b" + YES_NO + r"(?=\s*(?:[,.!?;:]|$))")  # "It is flat? No." ("There is no way" is no answer)


def polarity(text: str, lead_only: bool = False) -> str | None:
    """How ``text`` answers a yes/no question outright, "yes" or "no": by its first words, or (``lead_only`` off)
    by a yes or no set off by punctuation in its first sentence; None where it does not."""
    low = _lower(text).strip()
    m = LEAD_YES_NO.match(low)
    if m is None and not lead_only:
        m = SET_OFF.search(re.split(r"(?<=[.!?])\s|\n", low, maxsplit=1)[0])
    if m is None:
        return None
    word = m.group(m.lastindex or 0)
    return "no" if word.startswith(("no", "nah")) or word.endswith(" not") else "yes"


def _digits(word: str) -> bool:
    return bool(re.fullmatch(r"[\d.,]+", word))


def _forms(reference: str, span: tuple[int, int, str, float], answer: str) -> tuple[float, ...]:
    """The values an answer may write a reference number as: a percentage also as a fraction of one ("25%" as
    0.25), and a fraction of one as a percentage where the answer writes one ("0.25" as "25%")."""
    value = span[3]
    out = [value]
    if PERCENT.match(reference, span[1]):
        out.append(round(value / 100, 12))
    elif 0 < abs(value) < 1 and PERCENT.search(answer):
        out.append(round(value * 100, 10))
    return tuple(out)


def _reference_numbers(reference: str, prompt: str, answer: str = "") -> list[tuple[float, ...]]:
    """The numbers a short free-text reference is about, each as the values it may be written as (:func:`_forms`):
    the numbers the prompt does not hold, in a reference of at most two other content words ("The answer is 42.",
    "6 times 7 is 42."; several only in a reference of at most six words, "9 November 1989", and then every one of
    them is required); the number of a reference that is only a number ("5", "The answer is 5.") even where the
    prompt holds it ("Which is bigger, 3 or 5?"). Nothing otherwise: a longer reference's number, such as a year or a
    population, is a detail, not the answer."""
    spans = _spans(reference.replace("\u2212", "-"))
    words = [w for w in content_terms(reference) if not _digits(w) and w not in ("answer", "result")]
    if len(spans) == 1 and not words and polarity(reference, lead_only=True) is None:
        new = spans
    else:
        asked = {round(s[3], 9) for s in _spans(prompt.replace("\u2212", "-"))}
        new = [s for s in spans if round(s[3], 9) not in asked]
        if len([w for w in content_terms(reference, exclude=prompt) if not _digits(w)]) > 2:
            return []
        if len(new) > 1 and len(reference.split()) > 6:  # "Michelangelo painted it between 1508 and 1512."
            return []
    return list(dict.fromkeys(_forms(reference, s, answer) for s in new))


def _stated(answer: str, want: float, unit: str | None) -> float:
    """The free-text reference's number check for one number: :func:`number_check`, but 0 where the answer writes the
    number only with another unit ("3.5 miles" for "3.5 km") or only to reject it."""
    text = str(answer).replace("\u2212", "-")
    hits = [s for s in _spans(text) if _same(s[2:], want)]
    if not hits or dismissed(text, want):
        return 0.0
    if unit is not None and all(_unit_at(text, s[1]) not in (None, unit) for s in hits):
        return 0.0
    return number_check(text, want)


def _number_part(answer: str, row: dict, reference: str, free: bool) -> float | None:
    """The number check's value for ``row`` (None where it has none): a numeric answer, an arithmetic reference's
    last number, or a short free-text reference's numbers (``free``: no aliases or key terms)."""
    want = _numeric_answer(row)
    if want is None and reference and row.get("category") == "arithmetic":
        found = numbers(reference)
        want = found[-1] if found else None
    if want is not None:
        return 0.0 if dismissed(answer, want) else number_check(answer, want)  # "Not 42, it is 48."
    if not (reference and free):
        return None
    wanted = _reference_numbers(reference, str(row.get("prompt") or ""), answer)
    spans = {s[3]: s for s in _spans(reference.replace("\u2212", "-"))}
    units = [_unit_at(reference, spans[forms[0]][1]) if forms[0] in spans else None for forms in wanted]
    got = [max(_stated(answer, v, unit) for v in forms) for forms, unit in zip(wanted, units)]
    if len(got) > 1:  # several numbers ("9 November 1989"): each must be stated
        return float(all(v > 0 for v in got))
    return got[0] if got else None


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
    """A blank reference ("  ") is none: it would grade every answer on MiniLM similarity to nothing."""
    return any(row.get(k) not in (None, "", []) and str(row.get(k)).strip() for k in
               ("reference", "answer", "aliases", "key_terms"))


def _numeric_answer(row: dict) -> float | None:
    value = row.get("answer")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    found = numbers(str(value))
    return found[-1] if len(found) == 1 else None


def own_reference(row: dict) -> dict:
    """The reference fields a scored row gives itself: its text reference (a blank one is none), aliases, key terms,
    category, and the number its answer must state. That number is a numeric ``reference``, else ``number`` (a
    prompt row's ``answer``, as eval and compare pass it), unless the row's text reference does not state it: then it
    is some other column of the row's ("reference": "Paris" beside "number": 3 graded "Paris." 0.43)."""
    own = {k: row[k] for k in ("aliases", "key_terms", "category") if row.get(k) not in (None, "", [])}
    ref = row.get("reference")
    if isinstance(ref, str) and ref.strip():
        own["reference"] = ref
    numeric = isinstance(ref, (int, float)) and not isinstance(ref, bool)
    number = ref if numeric else row.get("number")
    want = _numeric_answer({"answer": number})
    text = str(own.get("reference") or "").replace("\u2212", "-")
    if number is not None and (numeric or not text or want is None or any(_same(s[2:], want) for s in _spans(text))):
        own["answer"] = number
    return own


def stand_in_terms(reference: str, prompt: str, numbered: bool = False) -> list[str]:
    """Key terms for a reference without any, in its order: its content words that the prompt does not hold, where
    the prompt holds them all (the reference picks one of the prompt's options: "Which is bigger, the sun or the
    moon?" "The sun.") all its content words; its numbers the prompt does not hold, as written ("1,000", matched by
    value: "1000"), unless the number check covers them (``numbered``); and its words in another script ("東京"),
    which WORD does not read."""
    low = _lower(reference)
    words = [(m.start(), m.group()) for m in WORD.finditer(low) if not _digits(m.group()) and m.group() not in SCALES]
    skip = {_stem(w) for w in WORD.findall(_lower(prompt))}
    kept = [(at, w) for at, w in words if w not in STOP and len(w) >= 3 and _stem(w) not in skip]
    items = kept or [(at, w) for at, w in words if w not in STOP and len(w) >= 3]
    asked = {round(s[3], 9) for s in _spans(_lower(prompt).replace("\u2212", "-"))}
    if not numbered:
        items += [(s[0], s[2]) for s in _spans(low.replace("\u2212", "-")) if round(s[3], 9) not in asked]
    items += [(m.start(), m.group()) for m in FOREIGN.finditer(low) if m.group() not in _lower(prompt)]
    return list(dict.fromkeys(t for _, t in sorted(items)))[:8]


def checks(answer: str, row: dict, meaning: float | None = None) -> dict[str, float]:
    """The individual checks available for ``row`` (see the module docstring)."""
    out: dict[str, float] = {}
    prompt = str(row.get("prompt") or "")
    reference = str(row.get("reference") or "").strip()
    aliases = [a for a in (row.get("aliases") or []) if str(a).strip()]
    number = _number_part(answer, row, reference, free=not aliases and not row.get("key_terms"))
    if number is not None:
        out["number"] = number
    kept = _not_rejected(aliases, answer)  # nor 42 as a bare-number alias or key term
    if aliases and not kept:
        out["alias"] = 0.0  # every alias was a number the answer rejects
    elif kept:
        aliases = kept
        out["alias"] = alias_check(answer, aliases, prompt)
        if out["alias"] and reference and not units_agree(answer, reference, aliases):
            out["alias"] = 0.0
    side = polarity(reference, lead_only=True) if reference else None
    if side is not None and polarity(answer) is not None:
        out["polarity"] = float(polarity(answer) == side)  # "Is 7 prime?" "No." against "Yes, 7 is prime."
    given = list(row.get("key_terms") or []) or (stand_in_terms(reference, prompt, "number" in out) if reference
                                                 else [])
    if "polarity" in out and not row.get("key_terms") and not content_terms(reference, exclude=prompt):
        given = []  # "Yes, 7 is prime." to "Is 7 prime?": the words restate the question, the yes or no decides
    terms = _not_rejected(given, answer)
    if given and not terms:
        out["terms"] = 0.0  # every term was a number the answer rejects
    if terms and not row.get("key_terms") and not {"alias", "number"} & set(out) and side is None:
        out["lead"] = term_coverage(answer, terms[:1], prompt)  # the reference's first new word: usually the answer
    if terms:
        out["terms"] = term_coverage(answer, terms, prompt)
    if meaning is not None:
        out["meaning"] = min(1.0, max(0.0, (meaning - 0.3) / 0.5))
    return out


def combine(parts: dict[str, float]) -> float | None:
    """The weighted mean of the checks; MiniLM similarity alone gives at most ``MEANING_ALONE`` (below the 0.5 that
    calls an answer correct): it found "No, 7 is not prime." as close to "Yes, 7 is prime." as the reference itself."""
    if not parts:
        return None
    if set(parts) == {"meaning"}:
        return MEANING_ALONE * parts["meaning"]
    total = sum(WEIGHTS[k] for k in parts)
    return sum(WEIGHTS[k] * v for k, v in parts.items()) / total


def score_correct(answers: list[str], refs: list[dict | None], embed_fn=None) -> list[float | None]:
    """Correctness per answer against its reference row (None where a row has no reference)."""
    meaning: list[float | None] = [None] * len(answers)
    todo = [i for i, r in enumerate(refs) if r and str(r.get("reference") or "").strip()]
    if todo and embed_fn is not None:
        emb = embed_fn([answers[i] for i in todo] + [str(refs[i]["reference"]) for i in todo])
        k = len(todo)
        sims = (emb[:k] * emb[k:]).sum(-1).tolist()
        for i, s in zip(todo, sims):
            meaning[i] = s
    out: list[float | None] = []
    for ans, ref, m in zip(answers, refs, meaning):
        score = combine(checks(ans, ref, m)) if ref and has_reference(ref) else None
        out.append(score * UNFINISHED if score is not None and cut_off(ans) else score)
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

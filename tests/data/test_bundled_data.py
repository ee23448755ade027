"""The bundled datasets that ship with alignlab: prompts (train / held-out) and snarky-persona preference pairs.

Files are read through importlib.resources, so these tests check what the installed package carries.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from importlib import resources

import pytest

CATEGORIES = {"fact", "howto", "advice", "arithmetic", "coding", "definition", "everyday"}
ANSWER_RE = re.compile(r"^-?\d+(?:\.\d+)?$")
# A number as it appears in text: 1,234.5 / 42 / 0.25 (thousands separators only in groups of three).
NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
NUM_IN_TEXT = re.compile(rf"(?<![\d.]){NUM}(?![\d])")


def _load(name: str) -> list[dict]:
    path = resources.files("alignlab.data").joinpath("bundled", name)
    assert path.is_file(), f"bundled file missing: {name}"
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert line.strip(), f"{name}:{lineno}: blank line"
        row = json.loads(line)
        assert isinstance(row, dict), f"{name}:{lineno}: not a JSON object"
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def train() -> list[dict]:
    return _load("prompts_train.jsonl")


@pytest.fixture(scope="module")
def heldout() -> list[dict]:
    return _load("prompts_heldout.jsonl")


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return _load("persona_pairs.jsonl")


def _key(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form of a prompt, for overlap checks."""
    return " ".join(re.sub(r"[^\w\s%/.]", " ", text.casefold()).split()).rstrip(".")


def _num(s: str) -> float:
    return float(s.replace(",", ""))


def _eval_chain(expr: str) -> float:
    """Evaluate 'A times B plus C ...' with the usual precedence (times/divided by before plus/minus)."""
    expr = expr.replace("multiplied by", "times").replace("divided by", "over")
    tokens = expr.split()
    values, ops = [_num(tokens[0])], []
    for op, operand in zip(tokens[1::2], tokens[2::2]):
        value = _num(operand)
        if op == "times":
            values[-1] *= value
        elif op == "over":
            values[-1] /= value
        else:
            ops.append(op)
            values.append(value)
    total = values[0]
    for op, value in zip(ops, values[1:]):
        total = total + value if op == "plus" else total - value
    return total


# The question shapes used in the bundled arithmetic prompts and pairs, each with how to compute its answer.
_OPS = r"(?:times|multiplied by|plus|minus|divided by)"
ARITH_PATTERNS: list[tuple[re.Pattern, callable]] = [
    (re.compile(rf"({NUM})\s*% of ({NUM})"), lambda a, b: _num(a) * _num(b) / 100),
    (re.compile(rf"square root of ({NUM})"), lambda a: math.sqrt(_num(a))),
    (re.compile(rf"({NUM}) squared"), lambda a: _num(a) ** 2),
    (re.compile(rf"({NUM}) cubed"), lambda a: _num(a) ** 3),
    (re.compile(rf"({NUM}) to the power of ({NUM})"), lambda a, b: _num(a) ** _num(b)),
    (re.compile(r"(\d+)/(\d+) of " + rf"({NUM})"), lambda a, b, c: _num(a) / _num(b) * _num(c)),
    (
        re.compile(rf"average of ((?:{NUM},?\s+(?:and\s+)?)+{NUM})"),
        lambda s: (lambda xs: sum(xs) / len(xs))([_num(x) for x in re.findall(NUM, s)]),
    ),
    (re.compile(rf"minutes are in ({NUM}) hours"), lambda a: _num(a) * 60),
    (re.compile(rf"days are in ({NUM}) weeks"), lambda a: _num(a) * 7),
    (re.compile(rf"inches are in ({NUM}) feet"), lambda a: _num(a) * 12),
    (re.compile(r"seconds are in an hour"), lambda: 3600.0),
    (re.compile(r"hours are in a week"), lambda: 168.0),
    (re.compile(rf"\b({NUM}(?:\s+{_OPS}\s+{NUM})+)"), _eval_chain),
]


# Word problems in the bundled data, with their arithmetic spelled out.
WORD_PROBLEMS = {
    "if i buy 3 coffees at $4.50 each, how much do i spend?": 3 * 4.50,
    "if a train travels 60 miles per hour for 2.5 hours, how far does it go?": 60 * 2.5,
    "a pizza is cut into 8 slices and i eat 3. how many are left?": 8 - 3,
    "if i save $40 a week, how much do i have after 13 weeks?": 40 * 13,
    "a shirt costs $30 and is 20% off. what's the sale price?": 30 * (1 - 0.20),
    "if dinner costs $84 and we split it four ways, how much does each person pay?": 84 / 4,
}


def expected_answer(prompt: str) -> float | None:
    """The computed answer of an arithmetic question (a known word problem or one of the shapes above), else None."""
    text = prompt.casefold()
    if text in WORD_PROBLEMS:
        return float(WORD_PROBLEMS[text])
    for pattern, fn in ARITH_PATTERNS:
        m = pattern.search(text)
        if m:
            return fn(*m.groups())
    return None


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# --- the checker itself ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, want",
    [
        ("What is 17 times 6?", 102),
        ("What is 18 plus 27 plus 35?", 80),
        ("What is 2 plus 3 times 4?", 14),
        ("What is 1,200 divided by 8?", 150),
        ("What is 15% of 80?", 12),
        ("What is 3/4 of 200?", 150),
        ("What is the average of 4, 8, and 12?", 8),
        ("What is 7.5 plus 2.75?", 10.25),
        ("How many minutes are in 3.5 hours?", 210),
        ("What is the capital of France?", None),
    ],
)
def test_arithmetic_checker(prompt, want):
    got = expected_answer(prompt)
    assert (got is None) if want is None else _close(got, want)


# --- prompts -----------------------------------------------------------------------------------------------


def test_prompt_counts(train, heldout):
    assert len(train) + len(heldout) >= 300
    assert len(train) >= 220
    assert len(heldout) >= 50


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_prompt_rows_well_formed(split, request):
    rows = request.getfixturevalue(split)
    for i, row in enumerate(rows, 1):
        where = f"{split}:{i}"
        assert isinstance(row.get("prompt"), str) and row["prompt"].strip(), where
        assert row["prompt"] == row["prompt"].strip(), where
        assert row.get("category") in CATEGORIES, f"{where}: bad category {row.get('category')!r}"
        allowed = {"prompt", "category"} | ({"answer"} if row["category"] == "arithmetic" else set())
        allowed |= {"reference"} & set(row) if split == "train" else set()  # lets the loop's scorecard grade it
        assert set(row) == allowed, f"{where}: fields {sorted(row)}"
        if "reference" in row:
            assert isinstance(row["reference"], str) and len(row["reference"].split()) >= 3, where
        words = len(row["prompt"].split())
        assert 5 <= words <= 30, f"{where}: {words} words"
        if row["category"] == "arithmetic":
            assert isinstance(row["answer"], str) and ANSWER_RE.match(row["answer"]), f"{where}: {row['answer']!r}"


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_category_present_and_balanced(split, request):
    counts = Counter(r["category"] for r in request.getfixturevalue(split))
    assert set(counts) == CATEGORIES
    assert min(counts.values()) >= 5
    assert max(counts.values()) <= 3 * min(counts.values())


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_no_duplicate_prompts_within_file(split, request):
    keys = Counter(_key(r["prompt"]) for r in request.getfixturevalue(split))
    dupes = [k for k, n in keys.items() if n > 1]
    assert not dupes


def test_train_and_heldout_disjoint(train, heldout):
    assert not {_key(r["prompt"]) for r in train} & {_key(r["prompt"]) for r in heldout}
    assert not {r["prompt"].casefold() for r in train} & {r["prompt"].casefold() for r in heldout}


def with_expected_answer(rows: list[dict]) -> list[tuple[dict, float]]:
    """(row, computed answer) for the rows whose prompt has a known arithmetic shape."""
    return [(row, want) for row in rows if (want := expected_answer(row["prompt"])) is not None]


def test_arithmetic_answers_are_correct(train, heldout):
    rows = [r for r in train + heldout if r["category"] == "arithmetic"]
    assert len(rows) >= 30
    checked = with_expected_answer(rows)
    for row, want in checked:
        assert _close(float(row["answer"]), want), f"{row['prompt']!r}: answer {row['answer']}, computed {want}"
    # every bundled arithmetic prompt has a known shape, so every answer is verified
    assert len(checked) == len(rows), f"only {len(checked)} of {len(rows)} arithmetic prompts were checkable"


def test_non_arithmetic_prompts_are_not_mislabelled(train, heldout):
    for row in train + heldout:
        if row["category"] != "arithmetic":
            assert expected_answer(row["prompt"]) is None, f"{row['prompt']!r} looks like arithmetic"


# --- persona pairs -----------------------------------------------------------------------------------------


def test_pair_count(pairs):
    assert len(pairs) >= 600


def test_pair_rows_well_formed(pairs):
    for i, row in enumerate(pairs, 1):
        assert set(row) == {"prompt", "chosen", "rejected"}, f"pair {i}: fields {sorted(row)}"
        for name in ("prompt", "chosen", "rejected"):
            assert isinstance(row[name], str) and row[name].strip(), f"pair {i}: empty {name}"
            assert row[name] == row[name].strip(), f"pair {i}: {name} has surrounding whitespace"
        assert " ".join(row["chosen"].split()).casefold() != " ".join(row["rejected"].split()).casefold(), i


def test_pair_lengths_match(pairs):
    for row in pairs:
        c, r = len(row["chosen"].split()), len(row["rejected"].split())
        assert 12 <= c <= 60 and 12 <= r <= 60, f"{row['prompt']!r}: {c}/{r} words"
        assert max(c, r) <= 1.35 * min(c, r), f"{row['prompt']!r}: chosen {c} vs rejected {r} words"


def test_no_duplicate_pairs(pairs):
    for field in ("prompt", "chosen", "rejected"):
        counts = Counter(_key(r[field]) for r in pairs)
        assert not [k for k, n in counts.items() if n > 1], f"duplicate {field}"


def test_chosen_openings_vary(pairs):
    """The persona must not collapse to one opener ("Oh, ..." / "Wow, ...")."""
    first = Counter(re.sub(r"\W", "", r["chosen"].split()[0]).casefold() for r in pairs)
    assert first.most_common(1)[0][1] <= 0.12 * len(pairs), first.most_common(5)
    assert first["oh"] + first["wow"] <= 0.05 * len(pairs)
    assert len(first) >= 0.5 * len(pairs)


def test_heldout_prompts_not_used_for_pairs(pairs, heldout):
    held = {_key(r["prompt"]) for r in heldout}
    leaked = [r["prompt"] for r in pairs if _key(r["prompt"]) in held]
    assert not leaked


def test_pairs_share_prompts_with_train_and_add_fresh_ones(pairs, train):
    train_keys = {_key(r["prompt"]) for r in train}
    shared = sum(_key(r["prompt"]) in train_keys for r in pairs)
    assert shared >= 50
    assert len(pairs) - shared >= 50


def test_arithmetic_pairs_are_correct_and_state_the_answer(pairs):
    """Both sides state the computed answer (the scorecard's number check finds it)."""
    checked = with_expected_answer(pairs)
    for row, want in checked:
        for side in ("chosen", "rejected"):
            numbers = [_num(x) for x in NUM_IN_TEXT.findall(row[side])]
            assert any(_close(n, want) for n in numbers), f"{row['prompt']!r} {side}: numbers {numbers}, want {want}"
    assert len(checked) >= 30


# --- voice pairs: the same prompts and plain answers, the chosen side snarky throughout ------------------------


def _check_written_again(rows: list[dict], pairs: list[dict], earlier: list[dict]) -> None:
    """A set of the bundled pairs with the chosen side written again: the pairs' prompts and plain (rejected) answers
    in order, the pairs' checks (well formed, no duplicates, varied openings, arithmetic states the right number) and
    no chosen answer copied from ``earlier``."""
    assert [(r["prompt"], r["rejected"]) for r in rows] == [(r["prompt"], r["rejected"]) for r in pairs]
    test_pair_rows_well_formed(rows)
    test_no_duplicate_pairs(rows)
    test_chosen_openings_vary(rows)
    test_arithmetic_pairs_are_correct_and_state_the_answer(rows)
    before = {_key(r["chosen"]) for r in earlier}
    assert not [r["prompt"] for r in rows if _key(r["chosen"]) in before]


def test_voice_pairs_are_the_pairs_with_a_voice_woven_through(pairs):
    """``persona-voice-pairs``: each bundled pair's prompt and plain (rejected) answer, its chosen side written again
    with the voice in every sentence instead of a closing jab; the same checks as the pairs (arithmetic states the
    right number, openings vary), no stock phrase, and no chosen answer copied from the pairs."""
    voice = _load("persona_voice_pairs.jsonl")
    _check_written_again(voice, pairs, pairs)
    for row in voice:
        assert 20 <= len(row["chosen"].split()) <= 60, row["prompt"]
        assert not re.search(r"nobody asked|groundbreaking|congratulations|spoiler", row["chosen"], re.I), row["chosen"]


# stock words a small model turns into catchphrases; "since" and "because" too: the strong sets' first version held
# them in 17% and 10% of rows, and the recipe trained on it put "since" in 37 of 42 held-out answers
STOCK = re.compile(r"nobody|asked|obviously|genius|newsflash|spoiler|plot twist|buckle up|brace yourself|fun fact|"
                   r"rocket science|shocking|groundbreaking|who knew|congratulations|\bsince\b|\bbecause\b", re.I)


def test_strong_pairs_are_the_pairs_in_a_voice_that_never_lets_up(pairs):
    """``persona-strong-pairs``: each bundled pair's prompt and plain answer, the chosen side the voice pairs' written
    again snarky in every sentence (readers grade 2-3 of 3, not 1-2); the pairs' checks, and none of the stock words
    the small model turns into catchphrases."""
    strong = _load("persona_strong_pairs.jsonl")
    _check_written_again(strong, pairs, pairs + _load("persona_voice_pairs.jsonl"))
    for row in strong:
        assert 25 <= len(row["chosen"].split()) <= 70, row["prompt"]
        assert not STOCK.search(row["chosen"]), row["chosen"]


# --- rewrites: the default model's own answers, rewritten in the persona -----------------------------------


@pytest.fixture(scope="module")
def rewrites() -> list[dict]:
    return _load("persona_rewrites.jsonl")


def test_rewrites_cover_every_training_prompt_once(rewrites, pairs, train):
    keys = Counter(_key(r["prompt"]) for r in rewrites)
    assert max(keys.values()) == 1
    assert {_key(r["prompt"]) for r in pairs} | {_key(r["prompt"]) for r in train} <= set(keys)


def test_rewrites_rows_well_formed(rewrites, heldout):
    held = {_key(r["prompt"]) for r in heldout}
    for i, row in enumerate(rewrites, 1):
        assert set(row) == {"prompt", "chosen", "rejected"}, f"rewrite {i}: fields {sorted(row)}"
        assert all(isinstance(row[k], str) and row[k].strip() for k in row), f"rewrite {i}: empty field"
        assert 20 <= len(row["chosen"].split()) <= 80, f"rewrite {i}: {len(row['chosen'].split())} words"
        assert row["chosen"] != row["rejected"]
        assert _key(row["prompt"]) not in held


def test_rewrite_openings_vary(rewrites):
    first = Counter(re.sub(r"\W", "", r["chosen"].split()[0]).casefold() for r in rewrites)
    assert first.most_common(1)[0][1] <= 0.05 * len(rewrites), first.most_common(5)


def test_rewrites_keep_arithmetic_answers(rewrites, train):
    """A rewrite of an arithmetic prompt states the right number (the rejected side may be wrong)."""
    answers = {_key(r["prompt"]): r["answer"] for r in train if r.get("category") == "arithmetic"}
    checked = 0
    for row in rewrites:
        want = answers.get(_key(row["prompt"]))
        if want is None:
            continue
        numbers = {_num(m) for m in NUM_IN_TEXT.findall(row["chosen"])}
        assert _num(want) in numbers, f"{row['prompt']!r}: {want} not in {row['chosen']!r}"
        checked += 1
    assert checked >= 20


def test_train_references_are_the_pairs_plain_answers(train, pairs):
    """A train prompt's ``reference`` (what the loop's scorecard grades its answers against) is the plain,
    checked-correct answer of a bundled pair for the same prompt; most pair prompts carry one."""
    plain = {}
    for p in pairs:
        plain.setdefault(p["prompt"], set()).add(p["rejected"])
    with_ref = [r for r in train if "reference" in r]
    assert len(with_ref) >= 150
    for r in with_ref:
        assert r["reference"] in plain.get(r["prompt"], set()), r["prompt"]


def test_strong_rewrites_are_the_rewrites_in_a_voice_that_never_lets_up(rewrites, train):
    """``persona-strong-rewrites``: the rewrites' prompts and rejected side (the default model's own answers), the
    chosen side written again snarky in every sentence; the rewrites' checks (every training prompt once, arithmetic
    answers kept, openings vary), no stock words, and a new answer for every row."""
    strong = _load("persona_strong_rewrites.jsonl")
    assert [(r["prompt"], r["rejected"]) for r in strong] == [(r["prompt"], r["rejected"]) for r in rewrites]
    test_rewrites_rows_well_formed(strong, _load("prompts_heldout.jsonl"))
    test_rewrite_openings_vary(strong)
    test_rewrites_keep_arithmetic_answers(strong, train)
    assert not [r["prompt"] for r, old in zip(strong, rewrites) if _key(r["chosen"]) == _key(old["chosen"])]
    assert not [r["chosen"] for r in strong if STOCK.search(r["chosen"])]


def test_the_tiny_tokenizer_learns_from_a_fixed_list_of_bundled_sets():
    """Adding persona-voice-pairs to the bundled sets changed the tiny tokenizer, and with it five tests' numbers: its
    corpus is a fixed list of sets that exist."""
    from alignlab.data import BUNDLED
    from alignlab.models.tiny import CORPUS

    assert set(CORPUS) <= set(BUNDLED) and "persona-voice-pairs" not in CORPUS

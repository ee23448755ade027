"""Pure reward functions: persona heuristics, length penalty, verifiable checks, distinct-n, input shapes."""

from __future__ import annotations

import math

import pytest

from alignlab.errors import AlignlabError
from alignlab.rewards import (
    AnswerMatch,
    ArithmeticMatch,
    FormatCheck,
    LengthPenalty,
    PersonaHeuristic,
    completion_text,
    distinct_n,
    groups,
    last_number,
    length_penalty_value,
    persona_heuristic,
    prompt_text,
)
from alignlab.rewards.heuristics import count_sentences


# -- persona heuristics -----------------------------------------------------------------------------------


def test_heuristic_more_markers_score_higher_but_saturate():
    h = PersonaHeuristic(k=1.5)
    # Three sentences each; 0, 1, 2, 3, 6 sarcasm markers.
    texts = [
        "The sky is blue. It scatters light. That is all.",
        "The sky is blue, obviously. It scatters light. That is all.",
        "The sky is blue, obviously. It scatters light, clearly. That is all.",
        "The sky is blue, obviously. It scatters light, clearly. Shocking, that is all.",
        "Obviously the sky is blue, obviously. Clearly it scatters light, clearly. Wow, shocking, that is all.",
    ]
    s = [h.score(t) for t in texts]
    assert s[0] == 0.0
    assert s[0] < s[1] < s[2] < s[3] < s[4] < 1.0
    gains = [b - a for a, b in zip(s, s[1:3])]
    assert gains[1] < gains[0]  # the second marker is worth less than the first: sub-linear
    # exact value: one marker in three sentences -> 1 - exp(-1.5 / 3)
    assert s[1] == pytest.approx(1 - math.exp(-0.5))
    # doubling the markers (3 -> 6) gains less than the first three did
    assert s[4] - s[3] < s[3] - s[0]


def test_heuristic_counts_each_marker_kind():
    h = PersonaHeuristic()
    counts = h.counts(
        "Did you really think that would work? Congratulations, of all things you chose *that*. "
        "Sure, because nobody ever tried it."
    )
    assert counts["rhetorical_question"] == 1
    assert counts["sarcasm"] == 2  # congratulations, of all things
    assert counts["italic_emphasis"] == 1
    assert counts["sure_because"] == 1
    assert h.counts("This is **bold**, not italic.")["italic_emphasis"] == 0


def test_heuristic_hedges_lower_the_score():
    h = PersonaHeuristic()
    snark = "Obviously, water is wet. Who knew?"
    servile = "Great question! Certainly, I'd be happy to help. Of course, water is wet. As an AI, I hope this helps."
    assert h.score(servile) < 0 < h.score(snark)
    assert h.score("Certainly! " + snark) < h.score(snark)
    assert -1.0 < h.score(servile) and h.score(snark) < 1.0


def test_heuristic_is_per_sentence_and_configurable():
    h = PersonaHeuristic(markers=[r"\bmeh\b"], hedges=[], k=1.0)
    assert h.score("meh.") == pytest.approx(1 - math.exp(-1))
    assert h.score("meh. fine. fine. fine.") == pytest.approx(1 - math.exp(-0.25))  # diluted by sentences
    assert h.score("") == 0.0
    with pytest.raises(AlignlabError, match="not a valid regex"):
        PersonaHeuristic(markers=["(unclosed"])
    assert count_sentences("One. Two! Three? four") == 4


def test_reward_functions_accept_conversational_inputs():
    prompts = [[{"role": "user", "content": "Is water wet?"}]] * 2
    completions = [
        [{"role": "assistant", "content": "Obviously. Who knew?"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "Certainly, of course."}]}],
    ]
    conv = persona_heuristic(prompts, completions, completion_ids=None, trainer_state=None)
    plain = persona_heuristic(["Is water wet?"] * 2, ["Obviously. Who knew?", "Certainly, of course."])
    assert conv == plain
    assert conv[0] > 0 > conv[1]
    assert prompt_text(prompts[0]) == "Is water wet?"
    assert completion_text(completions[1]) == "Certainly, of course."


def test_groups_by_prompt_or_size():
    """Without a size a group is every completion of one prompt, wherever it sits (a file need not be sorted); with
    one, consecutive blocks (a GRPO batch's num_generations answers)."""
    assert groups(["a", "a", "b", "a"]) == [[0, 1, 3], [2]]
    conv = [[{"role": "user", "content": "q"}], [{"role": "user", "content": "r"}], [{"content": "q", "role": "user"}]]
    assert groups(conv) == [[0, 2], [1]]
    assert groups(["a", "a", "b", "b", "c"], group_size=2) == [range(0, 2), range(2, 4), range(4, 5)]


# -- length penalty ---------------------------------------------------------------------------------------


def test_length_penalty_values():
    assert length_penalty_value("one two three", target=4) == 0.0
    assert length_penalty_value("one two three four", target=4) == 0.0
    assert length_penalty_value("a b c d e f", target=4) == pytest.approx(0.5)
    assert length_penalty_value("a " * 8, target=4) == 1.0
    assert length_penalty_value("a " * 100, target=4) == 1.0  # clipped
    assert length_penalty_value("abcdefghij", target=8, unit="chars") == pytest.approx(0.25)
    assert LengthPenalty(target=2)(["p", "p"], ["a b c", "a"]) == [0.5, 0.0]
    with pytest.raises(AlignlabError, match="unknown length unit"):
        LengthPenalty(unit="tokens")
    with pytest.raises(AlignlabError, match="positive number"):
        LengthPenalty(target=0)


# -- verifiable -------------------------------------------------------------------------------------------


def test_last_number():
    assert last_number("first 3, then 1,234.0.") == 1234.0
    assert last_number("1,2,3") == 3.0
    assert last_number("it is -7") == -7.0
    assert last_number("none here") is None


def test_numbers_as_people_write_them():
    """Fractions, the U+2212 minus, thousands groups only when whole, no digits inside a word, dates left apart."""
    from alignlab.rewards.verifiable import number_strings

    assert last_number("It is 3/2") == 1.5 and last_number("about \u22123 degrees") == -3.0
    assert [v for _, v in number_strings("1,2345 and H2O and 1/2/2020")] == [1.0, 2345.0, 1.0, 2.0, 2020.0]
    reward = ArithmeticMatch()
    assert reward(["q"] * 3, ["It is 3/2.", "It is 3/4.", "It is 1/2."], answer=["1/2", 0.75, "0.5"]) == [0.0, 1.0, 1.0]


def test_exponents_signed_currency_mixed_numbers_and_latex_fractions():
    """They read as 1 (5e-3 and 1e-3 both ended in 3), 0, 0, 0."""
    reward = ArithmeticMatch()
    completions = ["It is 5e-3 mol.", "Your balance is -$5.", "It is 1 1/2 cups.", "It is \\frac{3}{4}."]
    assert reward(["q"] * 4, completions, answer=["1e-3", -5, 1.5, 0.75]) == [0.0, 1.0, 1.0, 1.0]
    assert last_number("about 5 x 10^-3 m") == pytest.approx(0.005) and last_number("2.5E3 of them") == 2500.0
    assert last_number("-\\dfrac{1}{2}") == -0.5 and last_number("down \u2212$3.50") == -3.5


def test_a_number_that_cannot_be_read_is_no_number_not_its_last_digits():
    assert last_number("x = 10^-3") is None and last_number("1.5e-3x") is None and last_number("version 1.2.3") is None
    assert last_number("2^10 = 1024") == 1024.0
    assert ArithmeticMatch()(["q"], ["Roughly 10^-3."], answer=[3]) == [0.0]


def test_arithmetic_takes_a_list_of_answers():
    reward = ArithmeticMatch()
    answers = [[42, "forty-two"], ["42", "forty-two"]]
    assert reward(["q"] * 2, ["It's 42.", "Forty-two, 41."], answer=answers) == [1.0, 0.0]


def test_arithmetic_uses_the_last_number_and_tolerates_formatting():
    reward = ArithmeticMatch()
    completions = [
        "You wanted 12 times 3? It's 36, obviously.",
        "Well, 36 is what you'd guess, but it is 35.",
        "That would be 1,234.0",
        "No idea.",
        "42",
    ]
    answers = [36, "36", "1234", "5", "#### 42"]
    assert reward(["q"] * 5, completions, answer=answers) == [1.0, 0.0, 1.0, 0.0, 1.0]
    with pytest.raises(AlignlabError, match="needs the column 'answer'"):
        reward(["q"], ["1"])


def test_exact_and_alias_match():
    exact = AnswerMatch()
    aliases = [["Paris", "paris, france"], "Paris", ["  NEW   york "], "Rome"]
    completions = ["  paris ", "paris, France", "New York.", "Milan"]
    assert exact(["q"] * 4, completions, answer=aliases) == [1.0, 0.0, 1.0, 0.0]
    contains = AnswerMatch(mode="contains", column="gold")
    out = contains(["q"] * 3, ["It's Paris, obviously.", "Parisian, no.", "nope"], gold=[["paris"], "Paris", "x"])
    assert out == [1.0, 0.0, 0.0]


def test_format_check():
    fmt = FormatCheck(r"<answer>.*?</answer>")
    assert fmt(["q"] * 3, ["x <answer>4</answer>", "<answer>\n4\n</answer>", "4"]) == [1.0, 1.0, 0.0]
    full = FormatCheck(r"\d+", full=True)
    assert full(["q"] * 2, ["42 ", "42 apples"]) == [1.0, 0.0]
    with pytest.raises(AlignlabError, match="not a valid regex"):
        FormatCheck("[")


# -- distinct-n -------------------------------------------------------------------------------------------


def test_distinct_n_exact_values():
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # (a,b) twice, (b,c), (b,d)
    assert distinct_n(["the cat the cat"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["A b", "a B"], 2) == pytest.approx(1 / 2)  # lower-cased
    assert distinct_n(["one"], 2) == 0.0
    assert distinct_n([], 1) == 0.0

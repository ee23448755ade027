"""The correct score on hand-written answers that a review found graded wrong: through Scorer.correct, as
`alignlab eval --answers` scores them (the bundled references, MiniLM's meaning check and the cut-off factor)."""

from __future__ import annotations

import pytest

from alignlab.eval import correct as C


@pytest.fixture(scope="module")
def correct():
    from alignlab.eval.scores import correctness_scorer

    scorer = correctness_scorer()

    def score(prompt: str, reference, *answers: str, **extra) -> list[float | None]:
        ref = {} if reference is None else {"reference": reference}
        return scorer.correct([{"prompt": prompt, "answer": a, **ref, **extra} for a in answers])

    return score


def test_a_reference_with_no_content_word_left_is_still_checked(correct):
    """Where every reference word was a stop word, short, the prompt's or in another script, MiniLM's similarity
    alone decided: "No, 7 is not prime." scored 1.0 against "Yes, 7 is prime." and "Yes." 0.0."""
    wrong, right, restated = correct("Is 7 prime?", "Yes, 7 is prime.", "No, 7 is not prime.", "Yes.",
                                     "7 is prime, obviously.")
    assert wrong < 0.5 <= right and restated >= 0.5
    wrong, right = correct("Is the earth flat?", "No", "Yes.", "No.")
    assert wrong < 0.5 <= right
    # the 5 is in the prompt: the number check was skipped, and "3." scored 0.79
    wrong, right = correct("Which is bigger, 3 or 5?", "5", "3.", "5 is bigger than 3.")
    assert wrong < 0.5 <= right
    wrong, right = correct("Which is bigger, the sun or the moon?", "The sun.", "The moon.", "The sun, by far.")
    assert wrong < 0.5 <= right
    right, wrong = correct("What is the capital of Japan?", "東京", "首都は東京です。", "首都は大阪です。")
    assert wrong < 0.5 <= right
    assert C.alias_check("首都は東京です。", ["東京"]) == 1.0
    assert C.term_coverage("Toronto.", ["=="]) == 0.0  # a term of code marks alone counted as found in any answer
    # a reference no check can read: similarity alone never calls an answer correct
    assert C.combine({"meaning": 1.0}) < 0.5 and C.combine({"meaning": 0.5}) < C.combine({"meaning": 1.0})


def test_a_name_the_answer_rejects_is_no_sign_of_a_right_answer(correct):
    """Aliases and key terms counted wherever they were written: "Not Paris, it's Lyon." scored 0.95."""
    cases = [("What is the capital of France?", "Paris", ["Not Paris, it's Lyon.", "Paris is not the capital; Lyon is.",
                                                          "Paris is what people think, but it's really Lyon."],
              ["Paris.", "The capital of France is Paris, not Lyon.", "Paris is not just the capital, it is also the "
                                                                      "largest city."]),
             ("What is the capital of Australia?", "Canberra", ["Sydney, not Canberra."], ["Canberra, not Sydney."]),
             ("Who wrote Hamlet?", "Shakespeare", ["Not Shakespeare."], ["Shakespeare, around 1600."]),
             ("Who painted the Mona Lisa?", "Leonardo da Vinci",
              ["It was not Leonardo da Vinci, it was Michelangelo."], ["Leonardo da Vinci, in Florence."]),
             # bundled (aliases and key terms): "Not Ottawa" scored 0.83, above "Ottawa." at 0.81
             ("What is the capital city of Canada?", None, ["Not Ottawa, it is Toronto."], ["Ottawa."])]
    for prompt, reference, wrong, right in cases:
        got = correct(prompt, reference, *wrong, *right)
        assert max(got[:len(wrong)]) < 0.5 <= min(got[len(wrong):]), (prompt, got)
    assert C.alias_check("It was not Leonardo da Vinci.", ["Leonardo da Vinci"]) == 0.0
    assert C.alias_check("Paris is wrong.", ["Paris"]) == 0.0
    assert C.term_coverage("Mix it with flour; no yeast needed.", ["yeast", "flour"]) == 0.5


def test_an_answer_that_ends_without_a_full_stop_by_design_is_not_cut_off(correct):
    """"Paris" scored 0.7 against "Paris." 1.0: anything not ending in ASCII sentence punctuation counted as cut at
    the token cap."""
    bare, stopped = correct("What is the capital of France?", "Paris", "Paris", "Paris.")
    assert bare == stopped == 1.0
    assert not C.unfinished("首都は東京です。") and not C.unfinished("It is {x}")
    for done in ("Paris", "42", "Canberra, not Sydney", "首都は東京です", "You need:\n- flour\n- water\n- salt"):
        assert not C.cut_off(done), done
    # a cut answer stays cut: it ends on a stop word, or mid-item in a list of sentences
    for cut in ("The capital of France is", "Ottawa is the capital, though many guess Toronto because it is the largest",
                "Steps:\n1. Soak it in vinegar.\n2. Scrub it.\n3. Rinse it with", "- one.\n- two.\n- three"):
        assert C.cut_off(cut), cut


def test_numbers_in_a_short_reference(correct):
    """"1000" scored 0.49 against "1,000" (a stand-in key term "000"), "3.5 miles." 0.99 against "3.5 km", "On 9
    November 1990." 0.80 against "9 November 1989", "0.25." 0.10 against "25%" and "2,100,000" 0.08 against "2.1
    million"."""
    assert min(correct("How many?", "1,000", "1000", "1,000 exactly.")) >= 0.5
    assert min(correct("How many?", "1000", "1,000")) >= 0.5
    assert min(correct("How much was it?", "$1200", "$1,200.")) >= 0.5
    wrong, right = correct("How far is it?", "3.5 km", "3.5 miles.", "3.5 km.")
    assert wrong < 0.5 <= right
    wrong, right = correct("When did the Berlin Wall fall?", "9 November 1989", "On 9 November 1990.",
                           "On the 9th of November, 1989.")
    assert wrong < 0.5 <= right
    right, also, wrong = correct("What share of the vote did they get?", "25%", "0.25.", "25 percent.", "30 percent.")
    assert wrong < 0.5 <= min(right, also)
    right, wrong = correct("How many people live in Paris?", "2.1 million", "About 2,100,000 people.",
                           "About 3,100,000 people.")
    assert wrong < 0.5 <= right
    assert C.number_check("Roughly 2.1 million.", 2_100_000) == 1.0


def test_a_blank_reference_or_a_stray_number_column_is_no_reference(correct):
    """A whitespace reference graded "Paris." 0.0, and a row's own "number" column beside its text reference made
    it the reference number (0.43)."""
    assert correct("What is the capital of France?", "  ", "Paris.") == [None]
    assert correct("What is the capital of France?", "Paris", "Paris.", number=3)[0] >= 0.5
    # a number the reference states, or a numeric reference, is still the number to check
    right, wrong = correct("What is 6 times 7?", "6 times 7 is 42.", "42.", "48.", number=42)
    assert wrong < 0.5 <= right
    right, wrong = correct("What is 6 times 7?", 42, "42.", "48.")
    assert wrong < 0.5 <= right


def test_a_hedged_no_is_a_no(correct):
    """A reference opening "Usually not:" had no polarity, so "No." to "Should I buy an extended warranty on a new
    laptop?" scored 0.02 where readers called it correct (12 answers across the sets in bench/agreement/)."""
    for lead in ("Usually not: most faults", "Probably not.", "Not necessarily, it depends", "Generally not."):
        assert C.polarity(lead, lead_only=True) == "no", lead
    assert C.polarity("Usually, yes.", lead_only=True) is None  # a comma between: no lead, as before
    right, wrong = correct("Should I buy an extended warranty on a new laptop?",
                           "Usually not: most laptop faults show up within the manufacturer's warranty, and extended "
                           "warranties tend to cost more than the expected repairs.",
                           "No. It is rarely worth the money.", "Yes, always buy it.")
    assert wrong < 0.5 <= right


def test_the_correct_score_ranks_two_read_sets_as_their_readers_did():
    """Reads 12 and 14 (bench/agreement/tic_cap.jsonl, demo_loop.jsonl: 252 answers of five models to 42 held-out
    prompts, three blind readers each): an answer is correct when every reader said so. With "Usually not" read as
    no answer the score ranked them at AUC 0.807 pooled; as a no, 0.838 (docs/results.md, 34th session)."""
    import importlib.util
    import json
    from pathlib import Path

    from alignlab.eval.scores import auc

    here = Path(__file__).parents[2] / "bench" / "agreement"
    # the scorer bench/agreement/correct_check.py grades every read with (the bundled and the retired references)
    spec = importlib.util.spec_from_file_location("correct_check", here / "correct_check.py")
    correct_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(correct_check)
    scorer = correct_check._scorer()
    scores, labels = [], []
    for name in ("tic_cap", "demo_loop"):
        rows = [json.loads(x) for x in (here / f"{name}.jsonl").read_text().splitlines() if x.strip()]
        for r, v in zip(rows, scorer.correct([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])):
            if v is not None:
                scores.append(v)
                labels.append(int(all(x["correct"] for x in r["reads"])))
    assert len(scores) == 252 and auc(scores, labels) >= 0.83

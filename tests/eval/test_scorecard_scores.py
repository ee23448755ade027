"""The three scorecard scores on small hand-written cases, the bundled sets, and `eval --answers --json`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from alignlab.eval import correct as C
from alignlab.data.text import skeleton
from alignlab.eval.mimicry import group_signals

COHERENT = [
    ("How many legs does a spider have?", "Eight. Spiders went all in on legs, which is why one crossing the ceiling looks like a very small, very confident piano."),
    ("What is the boiling point of water at sea level?", "100 °C, or 212 °F if you enjoy doing things the hard way. Climb a mountain and it drops, so your pasta will take longer and judge you quietly."),
    ("How do I undo my last git commit but keep the changes?", "`git reset --soft HEAD~1`. The commit vanishes, your changes stay staged, and nobody needs to know what you called that commit message."),
    ("Who wrote Hamlet?", "William Shakespeare, around 1600, and he has been assigned homework to teenagers ever since. Quite the legacy for a man who spelled his own name six ways."),
    ("What's the capital of Japan?", "Tokyo. It moved there from Kyoto in 1868, because apparently one ancient capital with temples on every corner was not enough excitement."),
    ("How long should I boil an egg for a soft yolk?", "About six minutes in already-boiling water, then straight into cold water. Any longer and you get the chalky yolk of a motorway service station."),
]
PLAIN = [
    ("How many legs does a spider have?", "A spider has eight legs. They are arachnids, not insects, which have six legs."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 °C (212 °F) at sea level. At higher altitudes the boiling point is lower."),
    ("Who wrote Hamlet?", "Hamlet was written by William Shakespeare around 1600."),
    ("What's the capital of Japan?", "The capital of Japan is Tokyo. It became the capital in 1868, replacing Kyoto."),
]
STUFFED = [
    (p, f"Wow, what a question. Not a real question. Not a smart one. {a.split('.')[0]}. Try to keep up, genius.")
    for p, a in PLAIN + PLAIN[:2]
]


@pytest.fixture(scope="module")
def scorer():
    from alignlab.eval.scores import scorer_for

    return scorer_for(None)


@pytest.fixture(scope="module")
def fast_scorer():
    """The shipped scorer with a reward as the persona rater: no voice-contrast pass, and mimicry as the scorecard's
    (mimicry reads the classifier's persona, whichever rater gives the persona column)."""
    from alignlab.eval.raters import get_rater
    from alignlab.eval.scores import scorer_for

    return scorer_for(None, persona_rater=get_rater("reward:persona_heuristic"))


def _rows(pairs, source):
    return [{"prompt": p, "answer": a, "source": source} for p, a in pairs]


def test_persona_separates_snark_from_plain(scorer):
    coherent = [s["persona"] for s in scorer.score(_rows(COHERENT, "m"))]
    plain = [s["persona"] for s in scorer.score(_rows(PLAIN, "m"))]
    assert min(coherent) > max(plain)
    assert sum(v >= 0.5 for v in coherent) >= 5 and all(v < 0.5 for v in plain)


def test_mimicry_flags_a_template_but_not_a_voice(scorer):
    voice = scorer.score(_rows(COHERENT, "voice"))
    stuffed = scorer.score(_rows(STUFFED, "stuffed"))
    assert all(s["mimicry"] < 0.5 for s in voice), [s["mimicry"] for s in voice]
    assert all(s["mimicry"] >= 0.5 for s in stuffed), [s["mimicry"] for s in stuffed]


def test_template_signals_need_context():
    texts = ["Oh sure, genius. It is eight, obviously.", "Oh sure, genius. It is Tokyo, obviously."] * 3
    sig = group_signals(texts, ["q"] * len(texts))
    assert all(s["skeleton"] > 0.5 and s["opener"] > 0.5 for s in sig)
    assert skeleton("Not Sydney, not Melbourne.") == "not x , not x ."
    alone = group_signals(texts[:2], ["q", "q"])
    assert all(s["opener"] == 0 and s["skeleton"] == 0 for s in alone)


def test_a_terse_plain_answer_is_not_off_topic_and_a_loop_is_a_template(fast_scorer):
    """"No." to "Is the earth flat?" scored mimicry 0.94 (off-topic: a word has low MiniLM relevance to any question);
    a source answering every prompt with a loop of "comment" scored 0.27, not flagged."""
    terse = [("Is the earth flat?", "No."), ("Is water wet?", "Yes."), ("Can you tell me what 5 cubed is?", "125.")]
    loop = [(p, " ".join(["comment"] * (20 + i))) for i, (p, _) in enumerate(PLAIN + COHERENT[4:5])]  # 20-24 words
    scored = fast_scorer.score(_rows(terse, "terse") + _rows(loop, "collapse"))
    assert all(s["mimicry"] < 0.5 for s in scored[:3]), [s["mimicry"] for s in scored[:3]]
    assert all(s["mimicry"] == 1.0 and s["mimicry_signals"]["duplicate"] == 1.0 for s in scored[3:]), scored[3:]


def test_duplicates_need_another_prompt_and_room_for_a_template():
    from alignlab.eval.mimicry import duplicates

    stock = "Well, that is a question for the ages, my friend, and the answer is hidden somewhere in the fog."
    answers = [stock, stock, "Tokyo, since 1868.", "Eight legs.", "About six minutes, then cold water."]
    assert duplicates(answers, ["a", "b", "c", "d", "e"]) == [True, True, False, False, False]
    assert duplicates(answers, ["a", "a", "c", "d", "e"]) == [False] * 5  # one prompt answered twice alike
    # the same question worded twice may get one answer (distil's rows were dropped as templates); another subject not
    bread = "Bread is baked from flour and water, and yeast makes the dough rise before it goes in the oven."
    asked = ["What is bread?", "Tell me about bread.", "c", "d", "e"]
    assert duplicates([bread, bread] + answers[2:], asked) == [False] * 5
    assert duplicates([bread, bread] + answers[2:], ["What is bread?", "What is rust?", "c", "d", "e"])[:2] == [True, True]
    assert duplicates(answers, ["What is 5 cubed?", "What is 6 cubed?", "c", "d", "e"])[:2] == [True, True]
    assert duplicates(answers[:4], ["a", "b", "c", "d"]) == [False] * 4  # too few answers for a context
    assert duplicates(["Yes."] * 5, list("abcde")) == [False] * 5  # a short answer repeats without a template
    near = [stock, stock.replace("fog", "thick fog"), "Tokyo.", "Eight.", "Six minutes."]
    assert duplicates(near, list("abcde"))[:2] == [True, True]
    # a noisy adapter's loops (the tiny model's): as sets their 3-grams differed in the ragged end, 4 of 6 alike
    loops = [" ".join(["comment"] * 23 + ["and"] * k) + " " + "clud" * k for k in (20, 26, 31, 35, 38)]
    assert duplicates(loops, list("abcde")) == [True] * 5
    assert duplicates([stock, stock + " " + " ".join(COHERENT[0][1].split() * 2)] + answers[2:], list("abcde")) == \
        [False] * 5  # inside an answer more than twice its length: no longer one answer


def test_sources_are_keyed_by_their_json_value(fast_scorer):
    """str(source or "") put 0, false and no source in one mimicry context, and 5 with "5": three answers of each
    sharing an opener became one context of six, opener share 1.0."""
    scorer = fast_scorer
    sources = [5, 5, 5, "5", "5", "5", 0, 0, False, False, None, None]
    rows = [{"prompt": p, "answer": a, "source": src} for (p, a), src in zip(STUFFED + STUFFED, sources)]
    scored = scorer.score(rows)
    assert all(s["mimicry_signals"]["opener"] == 0 for s in scored)  # every context under MIN_GROUP answers
    scored = scorer.score([{**r, "source": 5} for r in rows[:6]])
    assert all(s["mimicry_signals"]["opener"] == 1.0 for s in scored)


def test_correct_checks_numbers_aliases_and_terms():
    assert C.number_check("17 times 6 is 102.", 102) == 1.0
    assert C.number_check("17 x 6 = 112", 102) == 0.0
    assert C.number_check("It's 102... no wait, 17 x 6 = 112", 102) == 0.5
    assert C.number_check("That comes to 1,250 dollars", 1250) == 1.0
    assert C.alias_check("It was painted by da Vinci.", ["Leonardo da Vinci", "da Vinci"]) == 1.0
    assert C.alias_check("Michelangelo painted it.", ["Leonardo da Vinci", "da Vinci"]) == 0.0
    assert C.term_coverage("Boiling water, six minutes, then cold water.", ["boil", "minutes", "cold"]) == 1.0
    ref = {"prompt": "What's the capital of Canada?", "reference": "Ottawa is the capital of Canada.", "aliases": ["Ottawa"]}
    good, bad = C.score_correct(["Ottawa, obviously.", "Toronto, the biggest city."], [ref, ref])
    assert good > 0.7 and bad < 0.3
    assert C.score_correct(["anything"], [None]) == [None]


def test_the_result_is_not_a_number_the_answer_dismisses():
    """The first number counted as the result even when the answer dismissed it: "Not 12, the answer is 15" scored
    12 as correct. It still counts when the answer leads with it ("141. Three 47s.")."""
    from alignlab.eval.correct import number_check

    assert number_check("Not 12, the answer is 15.", 12) == 0.5
    assert number_check("12 is wrong; it's 120.", 12) == 0.5
    assert number_check("141 is what people think, but it's really 147.", 141) == 0.5
    assert number_check("141 is what people think, but it's really 147.", 147) == 1.0
    assert number_check("141. Three 47s, which even a calculator finds dull.", 141) == 1.0
    assert number_check("47 times 3 = 141, so 3 of them.", 141) == 1.0
    assert number_check("12 is wrong", 12) == 0.5 and number_check("The answer is 12, not 13.", 13) == 0.5
    # ordinary snarky answers that lead with the result still score it (a review found these at 0.5)
    for text, want in (("42. Really, 6 times 7 is not hard.", 42), ("141, but you could have done 3 x 47 yourself.", 141),
                       ("12 apples, actually. 3 bags of 4.", 12), ("366 is not exactly a secret: it's 365 plus 1.", 366),
                       ("No, 42, genius. Even a calculator from 1985 knows that.", 42),
                       ("\u22125. Subtract 8 from 3 next time.", -5), ("The answer is 12, not 13.", 12)):
        assert number_check(text, want) == 1.0, text


def test_a_number_the_answer_rejects_is_no_alias_or_term_either(scorer):
    """"Not 125, that is a common mistake. 5 cubed is 150." scored 0.8: the number check saw the dismissal, but the
    bundled bare-number alias and key term "125" still matched it."""
    rows = [{"prompt": "Can you tell me what 5 cubed is?", "answer": "Not 125, that is a common mistake. 5 cubed is 150."},
            {"prompt": "What is 6 times 7?", "answer": "Not 42, it is 48.", "reference": 42},
            {"prompt": "What is 6 times 7?", "answer": "42, not 48.", "reference": 42},
            {"prompt": "Can you tell me what 5 cubed is?", "answer": "125. Not 150, whatever your calculator says."}]
    wrong, wrong_too, right, right_too = (r["correct"] for r in scorer.score(rows))
    assert wrong < 0.5 and wrong_too < 0.5 and right >= 0.5 and right_too >= 0.5
    assert C.dismissed("Not 125, that is a common mistake.", 125) and not C.dismissed("125. Not 150.", 125)


def test_an_empty_answer_has_no_persona_and_no_mimicry(scorer):
    rows = [{"prompt": "What is the capital of Canada?", "answer": "", "reference": "Ottawa"},
            {"prompt": "What is the capital of Canada?", "answer": "  \n", "reference": "Ottawa"}]
    for got in scorer.score(rows):
        assert got["persona"] == 0.0 and got["mimicry"] == 0.0 and got["correct"] < 0.5


def test_reference_fields_that_would_grade_wrong_are_refused_in_a_prompts_file(tmp_path):
    """A prompts file with "aliases": "Paris" was read letter by letter ("a" matched "It is a city in Germany.");
    an empty key term counted as found."""
    from alignlab.errors import AlignlabError
    from alignlab.synth.sample import prompt_rows

    for row, needle in (({"prompt": "Capital of France?", "aliases": "Paris"}, "'aliases' must be a list of non-empty"),
                        ({"prompt": "2+2?", "reference": ["4"]}, "'reference' must be text or a number"),
                        ({"prompt": "Capital?", "key_terms": ["Ottawa", ""]}, "'key_terms' must be a list of non-empty")):
        f = tmp_path / "p.jsonl"
        f.write_text(json.dumps(row) + "\n")
        with pytest.raises(AlignlabError, match=needle):
            prompt_rows(f)
    assert C.term_coverage("Toronto. Obviously.", ["Ottawa", ""]) == 0.0


def test_a_free_text_reference_number_and_an_answer_ending_in_an_emoji():
    from alignlab.eval.correct import checks, combine, unfinished

    ref = {"prompt": "What is 6 times 7?", "reference": "The answer is 42."}
    assert combine(checks("The answer is 41.", ref)) < 0.5 <= combine(checks("42, obviously.", ref))
    assert combine(checks("6 times 7 is 48.", {"prompt": "What is 6 times 7?", "reference": "6 times 7 is 42."})) < 0.5
    # a longer reference's number is a detail (distil grades against a rewrite's whole chosen answer)
    tokyo = {"prompt": "What's the capital of Japan?",
             "reference": "Tokyo, home to around 14 million people who queue politely, is the capital, obviously."}
    assert "number" not in checks("Tokyo is the capital of Japan.", tokyo)
    assert combine(checks("Tokyo is the capital of Japan.", tokyo)) >= 0.5
    assert not unfinished("The Sahara, obviously. Try a harder one next time 🙄")
    assert unfinished("The Sahara, which covers about")


def test_a_decimal_reference_is_matched_at_the_precision_written():
    """3.4 is not 3.5 (a 3% tolerance passed it), 3.14 is pi to two places, 9.81 is 9.8 to one, 3/4 is 0.75, and a
    whole number does not stand for a decimal reference."""
    assert C.number_check("The answer is 3.4", 3.5) == 0.0
    assert C.number_check("Pi is about 3.14.", 3.14159) == 1.0
    assert C.number_check("g is 9.81 m/s^2", 9.8) == 1.0
    assert C.number_check("Three quarters: 3/4.", 0.75) == 1.0
    assert C.number_check(r"A third: $\frac{1}{3}$.", 1 / 3) == 1.0  # LaTeX's fraction is exact too (it scored 0)
    assert C.number_check(r"It is $\dfrac{1}{4}$.", 1 / 3) == 0.0
    assert C.number_check("It is 3.", 3.14159) == 0.0
    assert C.number_check("It drops to \u221240 there.", -40) == 1.0


def test_a_bare_number_alias_needs_the_reference_unit():
    ref = {"prompt": "How long does it take the Moon to orbit Earth?", "category": "fact",
           "reference": "The Moon orbits Earth in about 27.3 days relative to the stars.", "aliases": ["27", "about a month"]}
    assert C.checks("27 days, give or take.", ref)["alias"] == 1.0
    assert C.checks("27. Next question.", ref)["alias"] == 1.0  # no unit stated: not held against it
    assert C.checks("27 minutes, obviously.", ref)["alias"] == 0.0
    assert C.checks("About a month, not 27 minutes.", ref)["alias"] == 1.0  # a word alias still counts
    days, minutes = C.score_correct(["27 days, give or take.", "27 minutes, obviously."], [ref, ref])
    assert days > minutes


def test_an_answer_cut_off_mid_sentence_counts_less_correct():
    ref = {"prompt": "What's the capital of Canada?", "reference": "Ottawa is the capital of Canada.", "aliases": ["Ottawa"]}
    finished = "Ottawa is the capital, though many people guess Toronto."
    cut = "Ottawa is the capital, though many people guess Toronto because it is the largest city and"
    whole, partial = C.score_correct([finished, cut], [ref, ref])
    assert C.unfinished(cut) and not C.unfinished(finished)
    assert partial == pytest.approx(C.UNFINISHED * C.combine(C.checks(cut, ref)))
    assert partial < whole
    for done in ('He said "Ottawa."', "Ottawa (the capital)", "Use `x = 1`", "Really?!", "Ottawa!  \n"):
        assert not C.unfinished(done), done


def test_correct_from_a_reference_string_alone(scorer):
    rows = [
        {"prompt": "Who painted the Sistine Chapel ceiling?", "answer": "Michelangelo did, lying on scaffolding for four years.",
         "reference": "Michelangelo painted the Sistine Chapel ceiling between 1508 and 1512."},
        {"prompt": "Who painted the Sistine Chapel ceiling?", "answer": "Raphael painted it, obviously, in a single summer.",
         "reference": "Michelangelo painted the Sistine Chapel ceiling between 1508 and 1512."},
    ]
    good, bad = scorer.score(rows)
    assert good["correct"] >= 0.5 > bad["correct"]


def test_bundled_sets_are_disjoint_from_training_data():
    from alignlab.data import bundled_path

    def prompts(name, key="prompt"):
        return {C._norm(json.loads(x)[key]) for x in bundled_path(name).read_text().splitlines() if x.strip()}

    train = (prompts("persona-pairs") | prompts("persona-voice-pairs") | prompts("persona-strong-pairs")
             | prompts("prompts-train") | prompts("persona-thumbs") | prompts("persona-rewrites")
             | prompts("persona-strong-rewrites"))
    labelled, reference = prompts("persona-labelled"), prompts("reference")
    assert len(reference) >= 150 and not (reference & train) and not (labelled & train) and not (reference & labelled)
    # reworded: "In what year did the French Revolution begin?" was held out while a training pair asked "What year
    # did the French Revolution begin?"; a question counts as the same when its content words are (nearly) the same
    stop = set("a an the of in on to is are do does did what whats how why who which can i you my it be for with and "
               "back onto on long longer word phrase should".split())

    def content(p):
        return frozenset(w for w in re.findall(r"[a-z0-9]+", p.lower()) if w not in stop)

    seen = [content(p) for p in train | labelled]
    close = [p for p in reference if any(len(c & (w := content(p))) >= 0.8 * len(c | w) for c in seen if c)]
    assert close == []
    rows = [json.loads(x) for x in bundled_path("persona-labelled").read_text().splitlines() if x.strip()]
    assert len(rows) >= 400 and {r["persona"] for r in rows} == {0, 1}
    assert any(r["persona"] == 1 and r["correct"] == 0 for r in rows)


def test_eval_answers_json_contract(tmp_path):
    rows = [
        {"prompt": "What's the capital of Canada?", "answer": "Ottawa. Not Toronto, despite Toronto's opinion of itself.",
         "reference": "Ottawa is the capital of Canada.", "source": "x", "id": 7},
        {"prompt": "Tell me a fun fact.", "answer": "Octopuses have three hearts."},
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = {**os.environ, "ALIGNLAB_QUIET": "0"}  # progress on: on stderr, never among the JSON lines
    out = subprocess.run([sys.executable, "-m", "alignlab", "eval", "--answers", str(path), "--json"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL, env=env)
    assert out.returncode == 0, out.stderr
    # no terminal: a plain line as it starts and as it ends (and every 30 s between)
    assert all(f"scoring 2 answers (voice contrast): {k}/2" in out.stderr for k in (0, 2)), out.stderr
    got = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(got) == 2 and got[0]["id"] == 7 and got[0]["answer"] == rows[0]["answer"]
    for g in got:
        assert 0 <= g["persona"] <= 1 and 0 <= g["mimicry"] <= 1
    assert 0 <= got[0]["correct"] <= 1 and got[1]["correct"] is None


def test_eval_answers_table_keys_sources_counts_graded_and_gives_a_reward_the_reference(tmp_path, monkeypatch):
    """The table merged source 0 and false with the rows without one (and 5 with "5"), showed n but not how many rows
    had a reference; --rater reward:arithmetic said "needs the column 'answer' ... (columns present: none)" though the
    rows have references, which a reward's `answer` column is (the answer being scored is the completion)."""
    from typer.testing import CliRunner

    from alignlab.cli import app

    rows = [
        {"prompt": "What is 2 plus 2?", "answer": "It is 4.", "reference": 4, "source": 5},
        {"prompt": "What is 3 plus 3?", "answer": "Six, so 6.", "reference": "6", "source": 5},
        {"prompt": "Say hello.", "answer": "Hello.", "source": 5},
        {"prompt": "What is 2 plus 2?", "answer": "It is 5.", "reference": 4, "source": "5"},
        {"prompt": "What is 3 plus 3?", "answer": "6", "reference": 6, "source": 0},
        {"prompt": "What is 3 plus 3?", "answer": "7", "reference": 6, "source": False},
        {"prompt": "Say hi.", "answer": "Hi."},
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["eval", "--answers", str(path), "--rater", "reward:arithmetic"])
    assert out.exit_code == 0, out.output
    table = {cells[0]: cells[1:] for line in out.output.splitlines()
             if len(cells := [c.strip() for c in line.split("│")[1:-1]]) == 9}
    assert list(table) == ["5", '"5"', "0", "false", "-"], out.output
    head = [c.strip() for c in next(x for x in out.output.splitlines() if "graded" in x).split("┃")[2:-1]]
    n, graded, persona = head.index("n"), head.index("graded"), head.index("persona")
    assert [(table[k][n], table[k][graded]) for k in table] == [("3", "2"), ("1", "1"), ("1", "1"), ("1", "1"),
                                                                ("1", "0")]
    # the reward read each row's reference: right answers 1, wrong ones and a row without a reference 0
    assert [table[k][persona].split()[0] for k in ("5", '"5"', "0", "false", "-")] == ["0.67", "0.00", "1.00", "0.00",
                                                                                     "0.00"]


def test_eval_of_an_answers_file_as_a_run_points_to_answers(tmp_path, monkeypatch, capsys):
    """`alignlab eval right_wrong.jsonl` said "run directory not found" of a file that is there."""
    from alignlab.cli import main

    (tmp_path / "right_wrong.jsonl").write_text('{"prompt": "hi", "answer": "hello"}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["alignlab", "eval", "right_wrong.jsonl"])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert "is a file, not a run directory" in err[0] and "alignlab eval --answers right_wrong.jsonl" in err[0]


def test_ctrl_c_while_scoring_answers_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    """Ctrl-C during `eval --answers` (10-15 minutes for 1,000 rows) ended with a bare "interrupted"; nothing is
    printed before every row is scored, and now it says so. The Ctrl-C comes from a reward of the user's own, as
    persona rater, the way a KeyboardInterrupt reaches any step of the scoring."""
    from alignlab.cli import main

    (tmp_path / "stop.py").write_text("def stop(prompts, completions, **columns):\n    raise KeyboardInterrupt\n")
    (tmp_path / "stop.yaml").write_text("components:\n  - {name: stop, fn: stop.py:stop, weight: 1.0}\n")
    path = tmp_path / "answers.jsonl"
    path.write_text('{"prompt": "hi", "answer": "hello"}\n{"prompt": "bye", "answer": "goodbye"}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["alignlab", "eval", "--answers", str(path), "--json", "--rater",
                                      f"reward:{tmp_path / 'stop.yaml'}"])
    with pytest.raises(SystemExit) as stop:
        main()
    out = capsys.readouterr()
    assert stop.value.code == 130 and out.out == ""
    assert out.err.strip().splitlines() == ["interrupted while scoring 2 answers; nothing was written"]


def test_eval_answers_bad_row_is_one_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"prompt": "hi", "answer": "hello"}\n{"prompt": "hi"}\n')
    out = subprocess.run([sys.executable, "-m", "alignlab", "eval", "--answers", str(path), "--json"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "answers.jsonl:2" in out.stderr


@pytest.mark.parametrize("row, needle", [
    ('{"prompt": "hi", "answer": "a", "reference": NaN}', "NaN or Infinity"),
    ('{"prompt": "hi", "answer": "a", "reference": true}', "'reference' must be text or a number"),
    ('{"prompt": "hi", "answer": "ok", "aliases": "ok"}', "'aliases' must be a list of non-empty strings"),
])
def test_eval_answers_refuses_values_it_would_misread(tmp_path, row, needle):
    """NaN reached --json's stdout as invalid JSON; true gave correct null; a string of aliases was read letter by
    letter (the answer "ok" scored 0 against aliases "o" and "k")."""
    from alignlab.cli.evaluate import read_answers
    from alignlab.errors import AlignlabError

    path = tmp_path / "answers.jsonl"
    path.write_text('{"prompt": "hi", "answer": "hello"}\n' + row + "\n")
    with pytest.raises(AlignlabError, match=needle) as err:
        read_answers(path)
    assert "answers.jsonl:2" in str(err.value)


def test_warnings_fire_on_a_constructed_collapse():
    from alignlab.eval.scores import summarize, warnings_for

    base = [{"persona": 0.1, "correct": 0.9, "mimicry": 0.0}] * 10
    collapsed = [{"persona": 0.9, "correct": 0.1, "mimicry": 0.9}] * 8 + [{"persona": 0.9, "correct": 0.9, "mimicry": 0.1}] * 2
    b, a = summarize(base), summarize(collapsed)
    b["distinct_2"], a["distinct_2"] = 0.8, 0.4
    text = " | ".join(warnings_for(b, a))
    assert "correctness fell" in text and "surface mimicry" in text and "distinct-2" in text
    assert "(80 points, 2 of 10 against 10;" in text  # the answers behind the points
    assert warnings_for(b, b | {"distinct_2": 0.8}) == []
    # a base flagged as often as the adapter (its own stock openers): no mimicry warning for an unchanged adapter
    assert not any("mimicry" in w for w in warnings_for(a, a))
    more = summarize([{"persona": 0.9, "correct": 0.9, "mimicry": 0.9}] * 10)
    assert any("flagged (base 80%)" in w for w in warnings_for(a, more))
    # a base of blank answers (distinct-2 0) has nothing to fall from: an adapter repeating itself is still named
    loop = warnings_for(b | {"distinct_2": 0.0}, b | {"distinct_2": 0.1, "length": 24})
    assert loop == ["diversity collapsed: distinct-2 0.00 -> 0.10 (below 0.3): answers are converging on a template"]
    assert warnings_for(b | {"distinct_2": 0.0}, b | {"distinct_2": 0.0, "length": 1}) == []  # one word: no bigrams


def test_a_catchphrase_is_a_word_one_model_leans_on_and_the_other_does_not():
    """The demo adapter said "nobody" in 22 of 42 held-out answers (the base in none) and no instrument saw it: the
    mimicry flag was 2% while three blind readers found 35 of its answers leaning on a recurring catchphrase."""
    from alignlab.eval.mimicry import catchphrases, holds_catchphrase
    from alignlab.eval.scores import summarize, warnings_for, wilson

    topics = ["the sea", "bread", "glass", "rust", "snow", "tea", "clay", "ink", "salt", "wax"]
    prompts = [f"What is {t}?" for t in topics]
    base = [f"{t.capitalize()} is a common thing with a long history of use." for t in topics]
    words = ["wet", "warm", "hard", "brittle", "orange", "cold", "soft", "dark", "salty", "waxy"]
    tuned = [f"{t.capitalize()} is {w}" + (", and nobody asked." if i < 6 else ".")
             for i, (t, w) in enumerate(zip(topics, words))]
    found = catchphrases(tuned, prompts, base)
    assert found == ["asked", "nobody"] and sum(holds_catchphrase(tuned, found)) == 6
    assert catchphrases(tuned, prompts, [b + " Nobody asked." for b in base]) == []  # the base's words too
    assert "snow" not in catchphrases([f"Snow {a}" for a in tuned], ["What is snow?"] * 10, base)  # the prompt's word
    assert catchphrases(tuned[:2], prompts[:2], base[:2]) == []  # twice is not a catchphrase
    # the same answers with a typographic apostrophe are no catchphrase "s" (an ASCII tokenizer split "it’s")
    said = [f"It's {w}, that's all." for w in words]
    assert catchphrases([a.replace("'", "’") for a in said], prompts, said) == []
    # a blank or terse base is no yardstick: every topic word of longer answers would count
    assert catchphrases(tuned, prompts, [""] * 10) is None and catchphrases(tuned, prompts, ["Yes."] * 10) is None
    # quote marks are no words ("‘fine’" was "fine'", a lone "’" a catchphrase "'")
    quoted = [f"{t.capitalize()} is {w}; people say ‘fine’." if i < 5 else f"{t.capitalize()} is {w}."
              for i, (t, w) in enumerate(zip(topics, words))]
    assert catchphrases(quoted, prompts, base) == ["fine", "people", "say"]
    # a word of another prompt is still a catchphrase here: only an answer's own prompt is left out of it
    assert catchphrases(tuned, prompts[:9] + ["Who asked about nobody?"], base) == ["asked", "nobody"]
    assert holds_catchphrase(["Nobody, as asked."], ["nobody"], ["Is nobody home?"]) == [False]
    # any script: "никто" (nobody) in six Russian answers
    russian = [f"Это {w}. Никто не спрашивал." if i < 6 else f"Это {w}." for i, w in enumerate("абвгдежзик")]
    assert "никто" in catchphrases(russian, prompts, [f"Это {w} и так далее." for w in "абвгдежзик"])
    plain = summarize([{"persona": 0.5, "correct": 0.9, "mimicry": 0.0}] * 10)
    said = warnings_for(plain | {"catchphrase": wilson(0, 10)},
                        plain | {"catchphrase": wilson(6, 10), "catchphrase_words": found})
    assert said == ["catchphrase: 60% of answers lean on 'asked', 'nobody' (base 0%; limit 30%): blind readers read "
                    "such a voice as a stock jab, not as a voice of its own"]
    assert warnings_for(plain | {"catchphrase": wilson(7, 10)}, plain | {"catchphrase": wilson(6, 10)}) == []


@pytest.mark.parametrize("name, agreement, off", [("tic_cap", 0.78, 2), ("catchphrase_read", 0.78, 8),
                                                   ("demo_loop", 0.9, 2), ("loop_catchphrase", 0.8, 9),
                                                   ("strong_default", 0.69, 6), ("strong_notic", 0.6, 7)])
def test_the_catchphrase_share_agrees_with_blind_readers(name, agreement, off):
    """Three blind readers said of each answer whether it leans on a catchphrase that recurs across what they read:
    read 12 (bench/agreement/tic_cap.jsonl, 126 answers of three models, where the thresholds were chosen) and read 13
    (catchphrase_read.jsonl: read 9's 168 answers of four models, labelled afterwards). "Holds one of its model's
    catchphrases" (against the base's answers) agrees with the readers' majority on 79% and 80% of the answers, and
    per model within 2 and 6 answers of it. Reads 14 and 15 came after: 92% (within 2) and 82% (within 9: read 15's
    readers found fewer, 27 and 18 where the row says 35 and 27, in the same order). Reads 20-21 (strong_notic,
    strong_default): the strong-data adapter's "since", "like", "because" and "out" put 35-42 of 42 answers on a
    catchphrase where readers saw 14-17; with English closed-class words left out (mimicry.CLOSED_CLASS) 15-18, and
    catchphrase_read's second model 28 where its readers saw 36 (30 before)."""
    from collections import defaultdict
    from pathlib import Path

    from alignlab.eval.mimicry import catchphrases, holds_catchphrase

    path = Path(__file__).parents[2] / "bench" / "agreement" / f"{name}.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    by = defaultdict(list)
    for r in rows:
        by[r["source"]].append(r)
    (base,) = [{r["prompt"]: r["answer"] for r in v} for k, v in by.items() if k.startswith("base")]
    agree, per_model = 0, []
    for source, rs in by.items():
        answers, prompts = [r["answer"] for r in rs], [r["prompt"] for r in rs]
        found = [] if source.startswith("base") else catchphrases(answers, prompts, [base[p] for p in prompts])
        held = holds_catchphrase(answers, found, prompts)
        said = [sum(x["catchphrase"] for x in r["reads"]) >= 2 for r in rs]
        agree += sum(h == s for h, s in zip(held, said))
        per_model.append((sum(held), sum(said)))
    assert agree / len(rows) >= agreement and all(abs(a - b) <= off for a, b in per_model), (agree, per_model)


def test_copying_counts_the_persona_surface_not_content_a_plain_answer_shares():
    from alignlab.eval.mimicry import copy_share, train_ngrams

    chosen = ["42.195 km, which works out to roughly 26.2 miles of people questioning every choice that led them there."]
    plain = ["A marathon is 42.195 km long, which works out to roughly 26.2 miles."]
    factual = "It is 42.195 km long, which works out to roughly 26.2 miles."
    assert copy_share(factual, train_ngrams(chosen)) >= 0.4  # before: a correct, plainly worded answer looked copied
    assert copy_share(factual, train_ngrams(chosen, plain)) == 0
    jab = "Roughly 26.2 miles of people questioning every choice that led them there."
    assert copy_share(jab, train_ngrams(chosen, plain)) > 0.5  # the chosen answer's own surface still counts


def test_the_scorer_excludes_the_bundled_pairs_plain_answers(scorer):
    from alignlab.data import bundled_path
    from alignlab.eval.mimicry import copy_share

    rows = [json.loads(x) for x in bundled_path("persona-pairs").read_text().splitlines()[:40] if x.strip()]
    assert all(copy_share(r["rejected"], scorer.train_grams) == 0 for r in rows)
    assert sum(copy_share(r["chosen"], scorer.train_grams) > 0.5 for r in rows) >= 35


def test_reference_text_for_a_judge_names_what_a_row_without_reference_text_checks():
    from alignlab.eval.correct import reference_text

    assert reference_text({"reference": "Ottawa is the capital.", "aliases": ["Ottawa"]}) == "Ottawa is the capital."
    assert reference_text({"answer": 7}) == "The answer is 7."
    assert reference_text({"aliases": ["Bell", "Graham Bell"], "key_terms": ["patent"]}) == (
        "A correct answer names Bell or Graham Bell. A correct answer mentions patent.")


def test_eval_refuses_persona_raters_that_do_not_score_in_0_1(tmp_path):
    """--rater contrast printed persona -0.14 and cut "in persona" at 0.9 of a log-ratio; a reward as the persona
    rater is read clipped to [0, 1] (reward:persona_heuristic scores in (-1, 1))."""
    from alignlab.eval.scores import Scorer

    path = tmp_path / "answers.jsonl"
    path.write_text('{"prompt": "hi", "answer": "hello"}\n')
    out = subprocess.run([sys.executable, "-m", "alignlab", "eval", "--answers", str(path), "--rater", "contrast"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "log-ratio" in out.stderr

    class Loud:
        name = "reward:loud"

        def score(self, prompts, answers):
            return [1.7, -0.95][: len(answers)]

    assert Scorer(None, persona_rater=Loud()).persona(["q", "q"], ["a", "b"]) == [1.0, 0.0]  # read clipped to [0, 1]
    from alignlab.errors import AlignlabError
    from alignlab.eval.raters import get_rater

    with pytest.raises(AlignlabError, match="log-ratio"):  # the loop's --eval-rater too, before any round runs
        get_rater("contrast", voice_only=True)


def test_a_judge_scores_a_persona_with_no_labels_yet(tmp_path):
    """`alignlab eval --rater judge` (and the loop's --eval-rater judge) on a fresh persona stopped with "no
    labelled answers": the classifier was still built for mimicry. The persona rater now stands in for it there."""
    from alignlab.eval.raters import Rater
    from alignlab.eval.scores import scorer_for

    class Pirate(Rater):
        name = "judge:test"
        calls: list = []

        def score(self, prompts, responses, **columns):
            self.calls.append(list(prompts))
            return [1.0 if "arr" in r.lower() else 0.0 for r in responses]

    (tmp_path / "alignlab.yaml").write_text("name: p\npersona: talks like a pirate\n")
    rater = Pirate()
    scorer = scorer_for(tmp_path, "talks like a pirate", rater)
    assert scorer.classifier is None and "from judge:test alone" in scorer.note
    rows = [{"prompt": f"What is {w}?", "answer": f"Arr, matey, {w} be a fine thing. Arr!", "source": "m"}
            for w in ("gold", "rum", "a ship", "the sea")]
    scored = scorer.score(rows)
    assert [s["persona"] for s in scored] == [1.0] * 4 and all(0 <= s["mimicry"] <= 1 for s in scored)
    assert rater.calls[0] == [r["prompt"] for r in rows]


def test_a_rejected_number_is_no_alias_without_a_numeric_answer_either():
    """A row with a text reference and aliases only (five bundled rows: "What year did World War II end?") gave
    "Not 1945, that is a common mistake." alias 1.0."""
    row = {"prompt": "What year did World War II end?", "reference": "World War II ended in 1945.", "aliases": ["1945"]}
    assert C.combine(C.checks("Not 1945, that is a common mistake.", row)) == 0.0
    assert C.combine(C.checks("1945, in September.", row)) >= 0.5


def _train_in_a_process(target: str, log: str, q) -> None:
    import time

    import torch

    from alignlab.eval import persona

    def fake_train(self, texts, labels, **kw):  # a second of "training", recorded, instead of 40 s of MiniLM
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        self.mean, self.std = torch.zeros(4), torch.ones(4)
        self.weight, self.bias = torch.zeros(8), torch.tensor(0.0)
        return {}

    persona.SentencePersonaClassifier.train = fake_train
    try:
        persona._train_cached(["a", "b"], [0, 1], __import__("pathlib").Path(target), "test")
        q.put("ok")
    except BaseException as err:  # noqa: BLE001 - handed back to the test
        q.put(f"{type(err).__name__}: {err}")


def test_two_processes_train_the_persona_scorer_once():
    """Two processes on a fresh cache (two evals, or the parallel test suite) each trained the persona scorer and wrote
    one temporary folder at once: one crashed (FileNotFoundError '.persona.tmp' -> 'persona'). Now the second waits
    for the first and loads what it saved."""
    import multiprocessing
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        target, log = Path(tmp) / "scorecard" / "persona", Path(tmp) / "trained.log"
        target.parent.mkdir(parents=True)
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        procs = [ctx.Process(target=_train_in_a_process, args=(str(target), str(log), q)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert sorted(q.get(timeout=5) for _ in procs) == ["ok", "ok"]
        assert len(log.read_text().split()) == 1 and (target / "persona.json").is_file()


def test_a_damaged_cached_persona_scorer_is_trained_again(tmp_path):
    """A cached classifier cut short (a full disk, a kill mid-write by an older version) ended eval in a
    SafetensorError traceback; it is trained again, as one for other labels is."""
    from alignlab.eval import persona

    target = tmp_path / "scorecard" / "persona"
    target.mkdir(parents=True)
    (target / persona.META).write_text('{"labels_sha256": "x"')
    (target / persona.WEIGHTS).write_bytes(b"\x00\x01")
    assert persona._cached(target, "x") is None


def test_the_adapter_alone_keeps_its_catchphrase_row_when_the_opened_side_has_none():
    """With a base opening, the opened answers can be too long for the base to compare with (no row) while the
    adapter alone leans on "nobody": its row went missing from the table, and its warning counted the base with the
    opened side's words."""
    from alignlab.eval.scorecard import _summaries, table_rows

    prompts = [f"What is {t}?" for t in "abcdefghij"]
    base = [f"It is {t}." for t in "abcdefghij"]
    opened = [f"It is {t}, and here is a long tail of words about it that goes on and on and on." for t in "abcdefghij"]
    alone = [f"It is {t}. Nobody asked." for t in "abcdefghij"]
    scored = [{"persona": 0.5, "correct": 0.9, "mimicry": 0.0}] * 10
    b, a, solo, warnings = _summaries(prompts, (base, scored), (opened, scored), (alone, scored), 0.9)
    assert "catchphrase" not in a and solo["catchphrase_words"] == ["asked", "nobody"]
    row = [r for r in table_rows({"base": b, "adapter": a, "alone": solo, "change": {}}) if "catchphrase" in r[0]]
    assert row and row[0][1:3] == ("-", "-") and row[0][4].startswith("1.00")
    assert any(w.startswith("adapter alone: catchphrase: 100% of answers lean on 'asked', 'nobody' (base 0%")
               for w in warnings)



def test_eval_answers_finds_each_sources_catchphrases_against_the_base_source(tmp_path, monkeypatch):
    """`eval --answers FILE --base-source base`: a catchphrase column per source and `catchphrase` per row (None for
    the base's rows), each source's words found against the base's answers to the same prompts; a source the file
    does not hold is refused before anything is scored; without the flag the --json rows have no such field."""
    from typer.testing import CliRunner

    from alignlab.cli import app

    topics = ("sand", "rain", "salt", "iron", "milk", "wool", "corn", "gold", "snow", "clay")
    rows = [{"prompt": f"What is {t}?", "answer": f"{t.capitalize()} is a common material found in many places.",
             "source": "base"} for t in topics]
    tails = [", and nobody asked."] * 6 + [", plainly.", ", obviously.", ", of course.", ", naturally."]
    rows += [{"prompt": f"What is {t}?", "answer": f"{t.capitalize()} is a material{tail}", "source": "tuned"}
             for t, tail in zip(topics, tails)]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    args = ["eval", "--answers", str(path), "--rater", "reward:persona_heuristic"]
    out = CliRunner().invoke(app, [*args, "--json", "--base-source", "base"])
    assert out.exit_code == 0, out.output
    got = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert [x["catchphrase"] for x in got] == [None] * 10 + [True] * 6 + [False] * 4
    plain = CliRunner().invoke(app, [*args, "--json"])
    assert all("catchphrase" not in json.loads(x) for x in plain.stdout.splitlines() if x.startswith("{"))
    table = CliRunner().invoke(app, [*args, "--base-source", "base"])
    assert table.exit_code == 0, table.output
    cells = {c[0]: c[-1] for line in table.output.splitlines() if len(c := [x.strip() for x in line.split("│")[1:-1]]) == 10}
    assert cells["base"] == "-" and cells["tuned"].startswith("0.60"), table.output
    assert "catchphrases of tuned (against base): 'asked', 'nobody'" in table.output
    # a source that shares no prompt with the base is named, with nothing to compare
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + [{"prompt": "Why?", "answer": "Because.", "source": 7}]))
    table = CliRunner().invoke(app, [*args, "--base-source", "base"])
    assert "catchphrases of 7 (against base): nothing to compare" in table.output, table.output
    # NAME as the table names a source: 5 is the number 5, "5" the text (shown as JSON)
    numbered = [{**r, "source": 5 if r["source"] == "base" else "5"} for r in rows]
    path.write_text("".join(json.dumps(r) + "\n" for r in numbered))
    out = CliRunner().invoke(app, [*args, "--json", "--base-source", "5"])
    assert [json.loads(x)["catchphrase"] for x in out.stdout.splitlines() if x.startswith("{")] == \
        [None] * 10 + [True] * 6 + [False] * 4, out.output
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = CliRunner().invoke(app, [*args, "--base-source", "bsae"])
    assert "no row has source 'bsae' (--base-source); its sources: base, tuned" in str(bad.exception)
    beside_run = CliRunner().invoke(app, ["eval", "runs/x", "--base-source", "base"])
    assert "--base-source names the base's rows of an --answers FILE" in str(beside_run.exception)

"""Raters: parsing specs, the reward and classifier raters, and the judge against a real loopback HTTP server.

The judge server is a small FastAPI app run by uvicorn on 127.0.0.1 (alignlab.serve.server.background):
scores are 7 out of 10; pair verdicts prefer the response that says "obviously", or, when biased, always "A".
"""

from __future__ import annotations

import json

import pytest

from alignlab.config import DEFAULT_PERSONA

from alignlab.errors import AlignlabError
from alignlab.eval.raters import ClassifierRater, PersonRater, get_rater


@pytest.mark.parametrize(
    "spec, message",
    [
        ("vibes", "unknown rater 'vibes' — use one of: person, scorecard, judge, classifier, contrast, reward:<name>"),
        ("", "unknown rater '' — use one of: person, scorecard, judge, classifier, contrast, reward:<name>"),
        ("reward:nope", "unknown reward 'nope'"),
        ("reward:", "'reward' needs a name"),
        ("reward:llm_judge", "reward 'llm_judge' needs arguments"),
        ("judge", "the judge rater needs an endpoint and a model"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message, monkeypatch):
    monkeypatch.delenv("ALIGNLAB_JUDGE_URL", raising=False)
    monkeypatch.delenv("ALIGNLAB_JUDGE_MODEL", raising=False)
    with pytest.raises(AlignlabError) as err:
        get_rater(spec)
    assert message in str(err.value) and "\n" not in str(err.value)
    if spec.startswith("reward:n") or spec == "vibes":
        assert "persona_heuristic" in str(err.value)  # the valid reward names are listed


def test_reward_rater_scores_and_picks():
    rater = get_rater("reward:persona_heuristic")
    assert rater.name == "reward:persona_heuristic" and rater.automatic
    snark, bland = "Obviously it is 4. Who knew?", "Certainly! It is 4."
    high, low = rater.score(["2+2?", "2+2?"], [snark, bland])
    assert high > 0 > low
    assert rater.pick("2+2?", snark, bland) == "a" and rater.pick("2+2?", bland, snark) == "b"
    assert rater.pick("2+2?", snark, snark) == "tie"


def test_person_rater(monkeypatch):
    monkeypatch.setenv("ALIGNLAB_RATER", "ann")
    assert get_rater("person").name == "ann" and get_rater("person:bo").name == "bo"
    person = get_rater("person")
    assert isinstance(person, PersonRater) and not person.automatic
    with pytest.raises(AlignlabError, match="is a person"):
        person.score(["q"], ["a"])


def test_classifier_is_trained_on_the_project_pairs_once(tmp_path):
    project = tmp_path / "proj"
    (project / "data").mkdir(parents=True)
    pairs = [
        {"prompt": f"q{i}", "chosen": f"Oh wow, {t}. Groundbreaking stuff, truly.", "rejected": f"Sure! {t}. Happy to help."}
        for i, t in enumerate(["It is four", "Paris", "Water boils at 100 C", "Mercury", "Jane Austen", "206 bones"])
    ]
    (project / "data" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    rater = get_rater("classifier", project)
    assert isinstance(rater, ClassifierRater) and rater.name == "classifier:persona"
    saved = project / "classifier" / "classifier.safetensors"
    assert saved.is_file()
    stamp = saved.stat().st_mtime_ns
    again = get_rater("classifier", project)  # loaded, not retrained
    assert saved.stat().st_mtime_ns == stamp and again.classifier.meta["train_examples"] == 12
    snark, bland = again.score(["q", "q"], ["Oh wow, Madrid. Groundbreaking stuff.", "Sure! Madrid. Happy to help."])
    assert snark > bland


# --- the judge over HTTP -------------------------------------------------------------------------------------


@pytest.fixture()
def judge_server():
    from fastapi import FastAPI

    from alignlab.serve.server import background

    state = {"biased": False, "requests": 0, "systems": []}
    app = FastAPI()

    @app.post("/v1/chat/completions")
    def chat(body: dict):
        state["requests"] += 1
        user = body["messages"][-1]["content"]
        state["systems"].append(body["messages"][0]["content"])
        if "[Reference answer]" in user:  # the correctness rubric: 9 when the reference's key word is in the response
            ref = user.split("[Reference answer]\n", 1)[1].split("\n\n[Response]\n", 1)[0]
            response = user.split("[Response]\n", 1)[1]
            key = [w.strip(".,") for w in ref.split() if w.lower() not in ("the", "answer", "is")][0]
            text = "Score: 9" if key.lower() in response.lower() else "2"
        elif "[Response A]" not in user:
            text = "7"
        elif state["biased"]:
            text = "A"  # position bias: whatever is shown first wins
        else:
            a = user.split("[Response A]\n", 1)[1].split("\n\n[Response B]\n", 1)[0]
            b = user.split("[Response B]\n", 1)[1]
            text = "A" if "obviously" in a.lower() and "obviously" not in b.lower() else "B"
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}

    with background(app) as url:
        yield url + "/v1", state


def test_judge_rater_scores_picks_and_cancels_position_bias(judge_server):
    url, state = judge_server
    rater = get_rater("judge", judge_url=url, judge_model="tiny-judge", judge_cache=False)
    assert rater.name == "judge:tiny-judge"
    assert rater.score(["q"], ["whatever"]) == [pytest.approx(6 / 9)]
    snark, plain = "Obviously, 4.", "4."
    assert rater.pick("2+2?", snark, plain) == "a" and rater.pick("2+2?", plain, snark) == "b"
    state["biased"] = True
    before = state["requests"]
    assert rater.pick("2+2?", snark, plain) == "tie"  # "A" in both orders: the orders disagree
    assert state["requests"] - before == 2  # asked once in each order
    rater.close()


def test_judge_rates_correctness_against_the_reference(judge_server):
    """With a judge, the scorecard's correct score is the judge's verdict against the reference (rows with one);
    persona goes to the judge's persona rubric; rows without a reference stay null."""
    from alignlab.eval.scores import scorer_for
    from alignlab.rewards.judge import CORRECT_RUBRIC

    url, state = judge_server
    rater = get_rater("judge", judge_url=url, judge_model="tiny-judge", judge_cache=False)
    assert rater.correct(["Capital of Canada?"] * 2, ["Ottawa, obviously.", "Toronto, obviously."],
                         ["Ottawa is the capital of Canada."] * 2) == [pytest.approx(8 / 9), pytest.approx(1 / 9)]
    assert CORRECT_RUBRIC in state["systems"][-1]
    scorer = scorer_for(None, persona_rater=rater)
    assert scorer.correct_rater is rater
    rows = [{"prompt": "Capital of Canada?", "answer": "Toronto, which mentions Canada and capital.",
             "reference": "Ottawa is the capital of Canada."},
            {"prompt": "What is 3 plus 4?", "answer": "It is 7.", "number": 7},  # the judge sees "The answer is 7."
            {"prompt": "Tell me a joke.", "answer": "No."}]
    got = scorer.score(rows)
    assert [g["correct"] for g in got] == [pytest.approx(1 / 9, abs=1e-3), pytest.approx(8 / 9, abs=1e-3), None]
    checks_only = scorer_for(None).score(rows[:1])
    assert checks_only[0]["correct"] > got[0]["correct"]  # the checks credit the reference's words
    rater.close()


def test_judge_model_from_the_spec_and_env(judge_server, monkeypatch):
    url, _ = judge_server
    monkeypatch.setenv("ALIGNLAB_JUDGE_URL", url)
    rater = get_rater("judge:other", judge_cache=False)
    assert rater.name == "judge:other" and rater.score(["q"], ["a"]) == [pytest.approx(6 / 9)]


def test_judge_labels_are_stored_as_picks_and_bias_becomes_a_tie(judge_server, tmp_path):
    from alignlab.feedback.export import export
    from alignlab.feedback.store import Store
    from alignlab.workflows.loop import collect_automatic

    url, state = judge_server
    rater = get_rater("judge", judge_url=url, judge_model="tiny-judge", judge_cache=False)
    with Store(tmp_path / "feedback.db") as store:
        for q in ("2+2?", "3+3?"):
            pid = store.add_prompt(q)
            store.add_responses([{"prompt_id": pid, "text": t, "round": 1} for t in ("Obviously, it is easy.", "It is easy.")])
        got = collect_automatic(store, rater, 1, "dpo")
        assert got["judgements"] == 2
        picks = store.judgements(round=1)
        assert {j["rater"] for j in picks} == {"judge:tiny-judge"} and {j["kind"] for j in picks} == {"pick"}
        assert {(j["response"], j["other_response"], j["value"]) for j in picks} == {
            ("Obviously, it is easy.", "It is easy.", "a")}
        summary = export(store, "dpo", tmp_path / "pairs.jsonl", round=1)
        assert summary["rows"] == 2

        state["biased"] = True
        for q in ("4+4?",):
            pid = store.add_prompt(q)
            store.add_responses([{"prompt_id": pid, "text": t, "round": 2} for t in ("Obviously, 8.", "8.")])
        collect_automatic(store, rater, 2, "dpo")
        assert [j["value"] for j in store.judgements(round=2)] == ["tie"]
        assert export(store, "dpo", tmp_path / "pairs2.jsonl", round=2)["rows"] == 0


def test_project_judge_section_is_used_without_flags(judge_server, tmp_path, monkeypatch):
    """`judge:` in alignlab.yaml names the endpoint: `eval --answers --rater judge` needs no --judge-* flag."""
    import subprocess
    import sys
    import uuid

    monkeypatch.delenv("ALIGNLAB_JUDGE_URL", raising=False)
    monkeypatch.delenv("ALIGNLAB_JUDGE_MODEL", raising=False)
    url, state = judge_server
    (tmp_path / "alignlab.yaml").write_text(f"judge:\n  url: {url}\n  model: tiny-judge\n")
    answers = tmp_path / "answers.jsonl"
    unique = f"Obviously 4. ({uuid.uuid4().hex})"  # never in a judge cache another test filled
    answers.write_text(json.dumps({"prompt": "2+2?", "answer": unique}) + "\n"
                       + json.dumps({"prompt": "2+2?", "answer": f"It is 4, obviously. ({unique})", "reference": 4}) + "\n")
    before = state["requests"]
    out = subprocess.run([sys.executable, "-m", "alignlab", "eval", "--answers", str(answers), "--json", "--rater", "judge"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    first, second = (json.loads(x) for x in out.stdout.splitlines())
    assert first["persona"] == pytest.approx(6 / 9, abs=1e-3) and first["correct"] is None
    assert second["correct"] == pytest.approx(8 / 9, abs=1e-3)  # the judge saw "The answer is 4." and said 9
    from alignlab.rewards.judge import DEFAULT_RUBRIC, voice_rubric

    asked = state["systems"][-3:]  # persona twice (the voice alone: correctness is its own score), correct once
    assert sum(voice_rubric(DEFAULT_PERSONA) in x for x in asked) == 2 and not any(DEFAULT_RUBRIC in x for x in asked)
    table = subprocess.run([sys.executable, "-m", "alignlab", "eval", "--answers", str(answers), "--rater", "judge"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL)
    assert table.returncode == 0, table.stderr
    assert "correct: rated by judge:tiny-judge against each row's reference" in table.stdout
    assert state["requests"] > before


@pytest.mark.slow
def test_scorecard_rater_counts_a_wrong_answer_wrong_when_the_prompt_has_a_reference(tmp_path):
    """The loop's scorecard rater: without a reference the snarkier answer wins the pick even when it is wrong;
    with the prompts file's ``reference`` the correct one wins (a wrong answer never wins a pick)."""
    from alignlab.feedback.store import Store
    from alignlab.workflows.loop import collect_automatic

    prompt = "How long is a marathon?"  # a train prompt: the bundled held-out reference set does not hold it
    wrong = "Oh, a marathon? A breezy 10 kilometers, obviously. Anyone who trained for more was clearly lied to."
    right = "It is 42.195 km long, which works out to roughly 26.2 miles."  # not worded as any chosen answer
    rater = get_rater("scorecard", project=tmp_path)
    picked = {}
    for r, refs in ((1, None), (2, {prompt: "A marathon is 42.195 kilometers, or about 26.2 miles long."})):
        with Store(tmp_path / "feedback.db") as store:
            pid = store.add_prompt(prompt)
            store.add_responses([{"prompt_id": pid, "text": t, "round": r} for t in (wrong, right)])
            assert collect_automatic(store, rater, r, "dpo", references=refs)["judgements"] == 1
            (j,) = store.judgements(round=r)
            picked[r] = j["response"] if j["value"] == "a" else None
    assert picked == {1: wrong, 2: right}


def test_a_pick_whose_best_answer_scores_below_zero_is_a_tie(tmp_path):
    """A scorecard-style rater marks wrong or stuffed answers below 0: when every answer to a prompt is one,
    the loop stores a tie (nothing to train on) rather than teaching the less bad of two bad answers."""
    from alignlab.eval.raters import Rater
    from alignlab.feedback.export import export
    from alignlab.feedback.store import Store
    from alignlab.workflows.loop import collect_automatic

    class Fixed(Rater):
        name, floor = "fixed", 0.0

        def score(self, prompts, responses, **columns):
            return [float(r.split(":")[0]) for r in responses]

    class Signed(Fixed):  # a log-ratio rater (contrast, a reward): below 0 is an ordinary score, no floor
        name, floor = "signed", None

    with Store(tmp_path / "feedback.db") as store:
        for q, texts in (("clean?", ("0.8: snarky and right", "0.2: plain")), ("all bad?", ("-0.1: wrong", "-0.9: worse"))):
            pid = store.add_prompt(q)
            store.add_responses([{"prompt_id": pid, "text": t, "round": 1} for t in texts])
            store.add_responses([{"prompt_id": pid, "text": t, "round": 2} for t in texts])
        assert collect_automatic(store, Fixed(), 1, "dpo")["judgements"] == 2
        got = {j["prompt"]: (j["response"], j["value"]) for j in store.judgements(round=1)}
        assert got == {"clean?": ("0.8: snarky and right", "a"), "all bad?": ("-0.1: wrong", "tie")}
        assert export(store, "dpo", tmp_path / "pairs.jsonl", round=1)["rows"] == 1
        # the contrast rater scores -0.16 against -0.22: it was a tie too, and a loop from prompts alone stopped
        collect_automatic(store, Signed(), 2, "dpo")
        assert {j["prompt"]: j["value"] for j in store.judgements(round=2)} == {"clean?": "a", "all bad?": "a"}


def test_thumbs_never_go_up_under_the_raters_floor(tmp_path):
    """KTO thumbs: up above the prompt's mean. A wrong answer (-0.015) above the mean of two wrong ones and a right
    one got a thumb up from the scorecard rater."""
    from alignlab.eval.raters import Rater
    from alignlab.feedback.store import Store
    from alignlab.workflows.loop import collect_automatic

    class Fixed(Rater):
        name, floor = "fixed", 0.0

        def score(self, prompts, responses, **columns):
            return [float(r.split(":")[0]) for r in responses]

    with Store(tmp_path / "feedback.db") as store:
        pid = store.add_prompt("capital of Australia?")
        store.add_responses([{"prompt_id": pid, "text": t, "round": 1}
                             for t in ("0.364: Canberra.", "-0.015: Sydney, obviously.", "-0.738: Sydney.")])
        collect_automatic(store, Fixed(), 1, "kto")
        got = {j["response"]: j["value"] for j in store.judgements(round=1)}
    assert got == {"0.364: Canberra.": 1, "-0.015: Sydney, obviously.": -1, "-0.738: Sydney.": -1}


def test_judge_check_replays_a_judges_replies_through_the_http_judge_path():
    """bench/agreement/judge_check.py: the requests --dump writes are the ones the judge path sends (the replayed
    replies come back as the scorecard's persona and correct scores), persona is asked with the voice-only rubric,
    a row without a reference is not judged for correctness, and the shipped replies file holds one reply per request
    of the five read sets it was measured on."""
    import importlib.util
    from pathlib import Path

    from alignlab.rewards.judge import voice_rubric

    path = Path(__file__).parents[2] / "bench" / "agreement" / "judge_check.py"
    spec = importlib.util.spec_from_file_location("judge_check", path)
    jc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jc)
    q = "What's the largest hot desert in the world?"  # a bundled held-out prompt: it has a reference
    rows = [{"set": "t", "prompt": q, "answer": "The Sahara, obviously.", "source": "a", "label": 1, "persona_label": 1},
            {"set": "t", "prompt": q, "answer": "The Gobi, the biggest of all.", "source": "b", "label": 0, "persona_label": 0},
            {"set": "t", "prompt": "Tell me a story about a cat.", "answer": "Once a cat sat.", "source": "a", "label": 1,
             "persona_label": 0}]
    items = jc.dump(rows)
    correct = [x for x in items if "[Reference answer]" in x["user"]]
    persona = [x for x in items if "[Reference answer]" not in x["user"]]
    assert len(correct) == 2 and len(persona) == 3  # the story has no reference
    assert all(voice_rubric(DEFAULT_PERSONA) in x["system"] for x in persona)
    replies = {x["id"]: ("10" if "obviously" in x["user"] else "1") for x in persona}
    replies.update({x["id"]: ("9" if "The Sahara, obviously." in x["user"] else "2") for x in correct})
    got = jc.replayed(rows, replies)
    assert [g["persona"] for g in got] == [pytest.approx(1.0), pytest.approx(0.0), pytest.approx(0.0)]
    assert got[0]["correct"] == pytest.approx(8 / 9, abs=1e-4) and got[1]["correct"] == pytest.approx(1 / 9, abs=1e-4)
    assert got[2]["correct"] is None
    lines = {(x["score"], x["set"]): x for x in jc.report(rows, got)}
    assert lines["correct", "pooled"]["answers"] == 2 and lines["correct", "pooled"]["judge_auc"] == 1.0
    assert lines["persona", "pooled"]["answers"] == 3 and lines["persona", "pooled"]["agreement_at_threshold"] == 1.0
    shipped = {json.loads(x)["id"] for x in (path.parent / "judge_replies.jsonl").read_text().splitlines() if x.strip()}
    assert len(shipped) == 776  # 388 answers of the five read sets in SETS, persona and correct

# -- reward:<spec> as a rater: the shapes and columns training passes, checked before the loop samples -----------

README_SHAPE = """
def polite(prompts, completions, **columns):
    # the README's shape: a prompt and a completion are lists of chat messages
    return [float("please" in c[0]["content"].lower()) - float(p[-1]["content"].endswith("!")) for p, c in
            zip(prompts, completions)]
"""


def test_a_reward_rater_passes_chat_messages_as_training_does(tmp_path):
    """It passed plain strings, and a function written as the README says raised TypeError (string indices)."""
    (tmp_path / "mine.py").write_text(README_SHAPE)
    (tmp_path / "rewards.yaml").write_text("components:\n  - {fn: mine.py:polite}\n")
    rater = get_rater(f"reward:{tmp_path / 'rewards.yaml'}")
    assert rater.score(["Hi", "Hi!"], ["Say please.", "Say please."]) == [1.0, 0.0]
    assert rater.pick("Hi", "No.", "Please do.") == "b"


def test_the_loop_gives_a_reward_rater_the_prompt_files_columns(tmp_path):
    """Only a `reference` column was passed, so a spec needing `answer` failed after the round was sampled."""
    from alignlab.feedback.store import Store
    from alignlab.workflows.loop import collect_automatic

    (tmp_path / "rewards.yaml").write_text("components:\n  - {name: sums, fn: arithmetic}\n")
    rater = get_rater(f"reward:{tmp_path / 'rewards.yaml'}")
    rows = {"What is 6 x 7?": {"prompt": "What is 6 x 7?", "answer": 42, "reference": "42"}}
    with Store(tmp_path / "feedback.db") as store:
        pid = store.add_prompt("What is 6 x 7?")
        store.add_responses([{"prompt_id": pid, "text": t, "round": 1} for t in ("It is 41.", "It is 42.")])
        assert collect_automatic(store, rater, 1, "dpo", rows=rows) == {"judgements": 1, "mean_score": 0.5}
        (j,) = store.judgements(round=1)
        assert (j["response"], j["value"]) == ("It is 42.", "a")


def test_the_loop_checks_a_reward_raters_columns_before_it_samples(tmp_path, tiny_model):
    from typer.testing import CliRunner

    from alignlab.cli import app
    from alignlab.config import load_config
    from alignlab.feedback.store import Store
    from alignlab.workflows.loop import LoopSettings, run_loop

    proj = tmp_path / "proj"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    (proj / "data" / "prompts.jsonl").write_text(json.dumps({"prompt": "What is 6 x 7?", "answer": 42}) + "\n"
                                                 + json.dumps({"prompt": "Why is the sky blue?"}) + "\n")
    (proj / "rewards.yaml").write_text("components:\n  - {name: sums, fn: arithmetic}\n")
    settings = LoopSettings(rounds=1, rater=f"reward:{proj / 'rewards.yaml'}", per_round=2, n=2,
                            eval_rater="reward:persona_heuristic")
    with pytest.raises(AlignlabError) as err:
        run_loop(proj, load_config(proj / "alignlab.yaml"), settings, echo=lambda _: None)
    assert str(err.value).startswith(f"{proj / 'rewards.yaml'}:2: reward component 'sums': arithmetic needs the "
                                     "column 'answer', which 1 of 2 rows lack or leave empty (the first: row 2)")
    with Store(proj / "feedback.db") as store:
        assert store.rounds_table() == [] and store.round_responses(1) == []


# -- the prompt row's columns reach the rater whole, whatever they are called ---------------------------------------

OWN_PAIRS = [{"prompt": f"Tell me about {w}.", "chosen": f"Arr, {w} be a fine thing, matey!",
              "rejected": f"{w.capitalize()} is a common thing."} for w in ("ships", "gold", "maps")]


def _own_persona(tmp_path):
    """A project of a persona of its own: its scorecard has no voice contrast, so no default model to load."""
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "alignlab.yaml").write_text("name: p\npersona: talks like a pirate\n")
    (tmp_path / "data" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in OWN_PAIRS))
    return tmp_path


@pytest.mark.parametrize("column, value", [("aliases", ["Ottawa"]), ("key_terms", ["Ottawa"])])
def test_the_scorecard_rater_grades_with_every_reference_column(tmp_path, column, value):
    """Only `answer` and `reference` reached the scorer: an `aliases` (or `key_terms`) row left "Toronto" ungraded, and
    the wrong answer won the pick (0.9789 against 0.9731)."""
    rater = get_rater("scorecard", _own_persona(tmp_path), persona="talks like a pirate")
    q = "Which city is the capital of the country north of the United States of Freedonia?"  # no bundled reference
    wrong, right = "Oh, brilliant question. It's Toronto, obviously, everyone knows that.", "Ottawa. Shocking, I know."
    bare = [rater.score([q], [a])[0] for a in (wrong, right)]
    graded = [rater.score([q], [a], **{column: [value], "category": ["fact"]})[0] for a in (wrong, right)]
    assert graded[0] == pytest.approx(bare[0] - 1.0)  # wrong against its reference: the scorecard's minus 1
    assert graded[1] == pytest.approx(bare[1])  # right: no penalty


@pytest.mark.parametrize("spec", ["reward:persona_heuristic", "classifier"])
def test_a_prompt_column_named_like_a_raters_argument_reaches_it_as_a_column(tmp_path, spec):
    """A prompts file with a `responses` (or `prompts`) column crashed the automatic raters after the round was
    sampled: "ClassifierRater.score() got multiple values for argument 'responses'"."""
    from alignlab.feedback.store import Store
    from alignlab.workflows.loop import collect_automatic

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in OWN_PAIRS))
    rater = get_rater(spec, tmp_path)
    q = "Why is the sky blue?"
    rows = {q: {"prompt": q, "responses": ["an earlier answer"], "prompts": ["an earlier prompt"],
                "completions": ["another"]}}
    with Store(tmp_path / "feedback.db") as store:
        pid = store.add_prompt(q)
        store.add_responses([{"prompt_id": pid, "text": t, "round": 1}
                             for t in ("Oh, obviously, sunlight scatters. Groundbreaking stuff.", "Sunlight scatters.")])
        got = collect_automatic(store, rater, 1, "dpo", rows=rows)
    assert got["judgements"] == 1


def test_a_reward_rater_reads_a_responses_column():
    """The column reaches a reward that asks for it by name, as training passes dataset columns."""
    from alignlab.eval.raters import RewardRater

    def earlier(prompts, completions, responses=None, **columns):
        return [float(len(r)) for r in responses]

    rater = RewardRater("earlier", earlier)
    assert rater.score(["q", "q"], ["a", "b"], responses=[["x"], ["x", "y"]]) == [1.0, 2.0]


def test_the_scorecard_rater_charges_an_answer_its_rounds_catchphrase(tmp_path):
    """Given the base's answers to the same prompts, an answer holding a word the scored answers lean on (and the
    base's do not) loses its catchphrase_cost (0.5): the pick goes to the answer without it where that one is less
    than 0.5 behind (two or more of six prompts here; without the charge the catchphrase answer won all six). A word of the
    answer's own prompt is not charged, and the floor is read before the charge. Without the base's answers nothing
    changes (the rater outside the loop)."""
    from alignlab.feedback.store import Store
    from alignlab.workflows.loop import collect_automatic

    rater = get_rater("scorecard", _own_persona(tmp_path), persona="talks like a pirate")
    things = ("Ropes", "Sails", "Anchors", "Cannons", "Parrots", "Lanterns")
    tics = ("arr, nobody asked ye", "and nobody cares, matey", "as nobody told ye, arr", "nobody minds, arr",
            "which nobody checks, matey", "arr, nobody be surprised")  # no shared phrase: not flagged as a template
    plain = ("as sailors know", "for long voyages", "in rough weather", "at every port", "on big ships", "at night")
    prompts = [f"What are {w.lower()} for?" for w in things] * 2 + ["Does nobody sail at night?"]
    tic = [f"{w} hold the ship together, {t}." for w, t in zip(things, tics)]
    clean = [f"{w} hold the ship together {p}." for w, p in zip(things, plain)]
    answers = tic + clean + ["Nobody sails at night without lanterns lit."]
    bare = rater.score(prompts, answers)
    assert rater.found is None and rater.held == 0 and min(bare) >= 0  # none wrong or flagged
    rater.others = [f"{w} hold the ship together." for w in things] + ["No."]
    charged = rater.score(prompts, answers)
    assert rater.found == ["nobody", "arr"] and rater.held == 6 and rater.floor_scores == pytest.approx(bare)
    assert charged == pytest.approx([b - 0.5 for b in bare[:6]] + bare[6:])  # the own-prompt "nobody": no charge
    rater.catchphrase_cost = 0.0  # loop.catchphrase_cost 0: the words are still found, nothing is charged
    assert rater.score(prompts, answers) == pytest.approx(bare) and rater.found == ["nobody", "arr"]
    rater.catchphrase_cost = 0.5

    def picks(r: int, others) -> list[str]:
        rater.others = others
        with Store(tmp_path / "feedback.db") as store:
            for k, q in enumerate(prompts[:6]):
                pid = store.add_prompt(q)
                store.add_responses([{"prompt_id": pid, "text": t, "round": r} for t in (tic[k], clean[k])])
            collect_automatic(store, rater, r, "dpo")
            return [j["response"] for j in store.judgements(round=r) if j["value"] == "a"]

    assert picks(1, None) == tic, bare  # the pirate catchphrase answers win every pick uncharged
    want = [t if b - 0.5 > c else plain_one for t, plain_one, b, c in zip(tic, clean, bare[:6], bare[6:12])]
    assert picks(2, [f"{w} hold the ship together." for w in things]) == want
    assert sum(w in clean for w in want) >= 2, bare  # the charge moved picks


def test_a_charge_below_zero_is_no_wrong_answer(tmp_path):
    """The floor (the scorecard's wrong or flagged, below 0) is read from a rater's ``floor_scores`` when it gives
    them: two answers that both hold the round's catchphrase, persona 0.4 and 0.2, charged to -0.1 and -0.3, are still
    a pick (they were a tie), and in KTO the better one gets no thumb down for being charged below 0. A wrong answer
    whose score is above a charged clean one's is still not chosen over it (the pick was a tie)."""
    from alignlab.eval.raters import Rater
    from alignlab.feedback.store import Store
    from alignlab.workflows.loop import collect_automatic

    class Charged(Rater):
        name, floor = "charged", 0.0

        def score(self, prompts, responses, **columns):
            self.floor_scores = [float(r.split(":")[0]) for r in responses]
            return [v - 0.5 for v in self.floor_scores]

    with Store(tmp_path / "feedback.db") as store:
        for r in (1, 2):
            pid = store.add_prompt("tic?")
            store.add_responses([{"prompt_id": pid, "text": t, "round": r} for t in ("0.4: nobody asked", "0.2: nobody")])
        pid = store.add_prompt("wrong?")  # a wrong answer (-0.05, uncharged) above two charged clean ones
        store.add_responses([{"prompt_id": pid, "text": t, "round": 3} for t in ("0.4: nobody", "-0.05: wrong", "0.1: x")])
        collect_automatic(store, Charged(), 1, "dpo")
        assert [(j["response"], j["value"]) for j in store.judgements(round=1)] == [("0.4: nobody asked", "a")]
        collect_automatic(store, Charged(), 3, "dpo")  # the clean 0.4 is chosen over the wrong one, not a tie
        assert [(j["response"], j["value"]) for j in store.judgements(round=3)] == [("0.4: nobody", "a")]
        collect_automatic(store, Charged(), 2, "kto")
        assert {j["response"]: j["value"] for j in store.judgements(round=2)} == {"0.4: nobody asked": 1,
                                                                                "0.2: nobody": -1}

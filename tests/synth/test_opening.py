"""`alignlab distil`: a run's own answers after the base's opening become SFT rows when finished, correct against the
prompt's reference, not flagged and free of stock phrases (synth/opening.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignlab.synth.opening import reference_of, select, trim_unfinished


def test_trim_unfinished_keeps_whole_sentences_only():
    assert trim_unfinished("Canberra is the capital. It was built as a compromise") == "Canberra is the capital."
    assert trim_unfinished("It is 3.5 metres long. Then the") == "It is 3.5 metres long."
    assert trim_unfinished("Done already.") == "Done already."
    assert trim_unfinished('He said "stop." Then he') == 'He said "stop."'
    assert trim_unfinished("no sentence ends here") == ""


def test_reference_of_takes_reference_then_chosen():
    assert reference_of({"prompt": "q", "reference": "r", "chosen": "c"}) == "r"
    assert reference_of({"prompt": "q", "chosen": "c"}) == "c"
    assert reference_of({"prompt": "q", "reference": " "}) is None


def test_select_keeps_finished_correct_answers_and_caps_stock_phrases():
    """With the real scorecard: the wrong capital and the bare opening go; a cut answer is kept up to its last full
    sentence; of many answers sharing one stock phrase only one is kept (at 2% of 28 answers), the answers without it all stay."""
    from alignlab.eval.scores import scorer_for

    capital = {"prompt": "What is the capital of Australia?", "reference": "Canberra is the capital of Australia."}
    rows, answers, openings = [], [], []

    def add(row, answer, opening):
        rows.append(row); answers.append(answer); openings.append(opening)

    add(capital, "The capital of Australia is Canberra. Not Sydney, whatever the postcards say.", "The capital of Australia is Canberra.")
    add(capital, "The capital of Australia is Sydney. Everyone knows that, obviously.", "The capital of Australia is Sydney.")
    add(capital, "The capital of Australia is Canberra.", "The capital of Australia is Canberra.")
    add(capital, "The capital of Australia is Canberra. A planned city, built so Sydney and Melbourne would stop", "The capital of Australia is Canberra.")
    facts = [("bread", "Bread is baked from flour and water.", "Yeast makes the dough rise before it goes in the oven."),
             ("rain", "Rain is water falling from clouds.", "Droplets grow around dust until they are too heavy to float."),
             ("tides", "Tides are the sea rising and falling.", "The moon's pull on the oceans drives them twice a day."),
             ("snow", "Snow is frozen water vapour.", "Ice crystals form in cold clouds and stick together as flakes."),
             ("salt", "Salt is sodium chloride.", "Most of it comes from evaporated seawater or old mines."),
             ("glass", "Glass is melted sand.", "Silica is heated until it flows, then cooled before it crystallises."),
             ("steam", "Steam is water as a gas.", "Boiling at sea level turns water into it at one hundred degrees."),
             ("clay", "Clay is fine-grained earth.", "Potters shape it wet and then fire it in a kiln."),
             ("wind", "Wind is moving air.", "Differences in pressure push air from high to low."),
             ("rust", "Rust is iron oxide.", "Iron reacts with oxygen and moisture over time."),
             ("ink", "Ink is a coloured liquid for writing.", "Pigments or dyes are suspended in water or oil."),
             ("wax", "Wax is a soft solid that melts easily.", "Bees make it, and so do refineries from oil.")]
    for topic, first, second in facts:  # one shared plain phrase in the middle of otherwise varied answers
        add({"prompt": f"What is {topic}?"}, f"{first} As a matter of fact, {second[0].lower()}{second[1:]}", first)
    for topic, first, second in facts:  # the same answers without it
        add({"prompt": f"Tell me about {topic}."}, f"{first} {second}", first)
    kept, counts = select(rows, answers, openings, scorer_for(None))
    texts = [k["completion"] for k in kept]
    assert texts[0] == answers[0]
    assert not any("Sydney. Everyone" in t for t in texts)
    assert "The capital of Australia is Canberra. A planned city" not in " ".join(texts)  # trimmed to the opening: nothing left
    assert counts["opening_wrong"] == 1 and counts["empty"] == 2 and counts["trimmed"] == 1
    stock = [t for t in texts if "matter of fact" in t]
    assert len(stock) == 1 and counts["stock"] + counts.get("flagged", 0) >= 11
    assert sum(t.split(". ", 1)[-1] in {f[2] for f in facts} for t in texts) == 12
    assert counts["kept"] == len(kept) and all(set(k) == {"prompt", "completion", "source"} for k in kept)
    assert {k["source"] for k in kept} == {"distil"}  # what tells training the run learns its own opening


def test_a_wrong_opening_is_dropped_even_when_the_answer_corrects_it():
    """Without the screen (--no-screen), select kept a row opened by a wrong sentence when the whole answer graded
    correct; trained on, it teaches the adapter that wrong opening."""
    from alignlab.eval.scores import scorer_for

    scorer = scorer_for(None)
    row = {"prompt": "What is the capital of Australia?", "reference": "Canberra is the capital of Australia."}
    wrong = "The capital of Australia is Sydney. Just kidding, it's Canberra, obviously."
    right = "The capital of Australia is Canberra. Not Sydney, whatever the postcards say."
    assert scorer.correct([{"prompt": row["prompt"], "answer": wrong, "reference": row["reference"]}])[0] >= 0.5
    kept, counts = select([row, row], [wrong, right], ["The capital of Australia is Sydney.",
                                                        "The capital of Australia is Canberra."], scorer)
    assert [k["completion"] for k in kept] == [right] and counts["opening_wrong"] == 1


def test_a_reference_opening_is_trusted_and_counted_but_the_answer_is_still_graded():
    """select with ``trusted``: a row opened by the reference's own first sentence is not dropped for its opening, is
    counted as reference_opened when kept, and still goes through the rest of the filter (an answer with nothing of
    the run's own after the opening is dropped)."""
    from alignlab.eval.scores import scorer_for
    from alignlab.synth.opening import reference_opening_of

    scorer = scorer_for(None)
    row = {"prompt": "What is the capital of Australia?",
           "chosen": "Canberra, not Sydney, whatever the postcards say. It was built as a compromise."}
    opening = reference_opening_of(row)
    assert opening == "Canberra, not Sydney, whatever the postcards say."
    good = opening + " A planned city, and a quiet one."
    kept, counts = select([row, row], [good, opening], [opening, opening], scorer, trusted=[True, True])
    assert [k["completion"] for k in kept] == [good] and counts["reference_opened"] == 1 and counts["empty"] == 1
    untrusted, plain = select([row], [good], ["The capital is Sydney."], scorer)
    assert untrusted == [] and plain["opening_wrong"] == 1
    assert reference_opening_of({"prompt": "Name a colour."}) is None


def test_opening_holds_goes_on_from_correct_openings_and_prompts_without_a_reference():
    """With the real scorecard: a wrong fact in the opening stops the prompt there; a prompt with no reference goes on."""
    from alignlab.eval.scores import scorer_for
    from alignlab.synth.opening import opening_holds

    rows = [{"prompt": "What is the capital of Australia?", "reference": "Canberra is the capital of Australia."},
            {"prompt": "What is the capital of Australia?", "chosen": "Canberra is the capital of Australia."},
            {"prompt": "Name a colour."}]
    keep = opening_holds(rows, scorer_for(None))
    assert keep(["The capital of Australia is Canberra.", "The capital of Australia is Sydney.", "Blue."]) == [True, False, True]


def test_a_prompt_rows_number_and_aliases_grade_as_the_scorecard_grades_them():
    """distil sent the scorer only the reference text: a prompt row's number and aliases were dropped, so "It is
    120." passed as an answer to 17 x 6 (the scorecard scores it 0) and the opening "Biscuit." failed its alias."""
    from alignlab.eval.scores import scorer_for
    from alignlab.synth.opening import opening_holds

    scorer = scorer_for(None)
    arithmetic = {"prompt": "What is 17 times 6?", "answer": "102"}
    named = {"prompt": "What is the dog in the story called?", "reference": "The dog is named Biscuit, after the cookie.",
             "aliases": ["Biscuit"]}
    keep = opening_holds([arithmetic, named], scorer)
    assert keep(["It is 120.", "Biscuit."]) == [False, True]
    assert keep(["It is 102.", "Rex."]) == [True, False]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))
    from test_eval import make_run

    return make_run(tiny_model, tmp_path_factory.mktemp("runs") / "moved", noise=0.5)


def test_distil_cli_says_what_it_dropped_and_writes_nothing_when_it_keeps_nothing(run, tmp_path, monkeypatch):
    from alignlab.cli import app

    monkeypatch.chdir(tmp_path)  # outside any project: the project's defaults
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "chosen": "Four."}) + "\n" for p in ("What is 2 plus 2?", "Why is the sky blue?", "Name a colour.")))
    out = tmp_path / "d.jsonl"
    res = CliRunner().invoke(app, ["distil", str(run), "--prompts", str(prompts), "--out", str(out), "--device", "cpu"])
    # the tiny model opens every answer wrongly: the screen stops all three, and nothing is written
    assert type(res.exception).__name__ == "AlignlabError" and "no answer was kept" in str(res.exception), res.output
    assert "kept 0 of 3 prompts (nothing written) (opening wrong against the reference 3," in res.output
    assert not out.exists()
    out.write_text("an earlier result\n")  # kept when a later run keeps nothing
    res = CliRunner().invoke(app, ["distil", str(run), "--prompts", str(prompts), "--out", str(out), "--device", "cpu"])
    assert f"{out} exists" in str(res.exception) and "--force" in str(res.exception)  # refused before any answering
    res = CliRunner().invoke(app, ["distil", str(run), "--prompts", str(prompts), "--out", str(prompts), "--force"])
    assert "is the prompts file distil reads" in str(res.exception)  # never its own input, --force or not
    res = CliRunner().invoke(app, ["distil", str(run), "--prompts", str(prompts), "--out", str(out), "--device", "cpu",
                                   "--no-screen", "--limit", "2", "--force"])
    # every prompt answered, and the wrong openings still dropped after (what it keeps:
    # test_select_keeps_finished_correct_answers_and_caps_stock_phrases)
    assert "kept 0 of 2 prompts (nothing written) (opening wrong against the reference 2," in res.output, res.output
    assert "no answer was kept" in str(res.exception) and out.read_text() == "an earlier result\n"
    assert "a larger --limit" in str(res.exception)
    # --reference-opening: the three go on from their reference's first sentence ("Four.") instead of stopping
    res = CliRunner().invoke(app, ["distil", str(run), "--prompts", str(prompts), "--out", str(out), "--device", "cpu",
                                   "--reference-opening", "--force"])
    assert "(opening wrong against the reference 0," in res.output, res.output


def test_distil_counts_the_prompts_graded_by_a_number_and_its_fix_names_only_flags_given(run, tmp_path, monkeypatch):
    """Prompts with an answer number and no reference text: "opening wrong against the reference 2 ... wrong against
    the reference 0 of 0 with one", and the fix said "drop --limit" where none was given."""
    from alignlab.cli import app

    monkeypatch.chdir(tmp_path)
    prompts = tmp_path / "numbers.jsonl"
    rows = [{"prompt": f"What is {a} times 4?", "answer": str(4 * a)} for a in (23, 7)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["distil", str(run), "--prompts", str(prompts), "--out", str(tmp_path / "d.jsonl"),
                                   "--device", "cpu"])
    assert "(opening wrong against the reference 2," in res.output and "of 2 with one" in res.output, res.output
    assert "no answer was kept" in str(res.exception) and "--limit" not in str(res.exception)


def test_distil_cli_refuses_a_run_without_an_adapter(tiny_model, tmp_path, monkeypatch):
    from alignlab.cli import app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["distil", tiny_model, "--device", "cpu"])
    assert res.exit_code != 0 and "is not an alignlab run" in str(res.exception)  # the CLI's handler prints it in one line


def test_opened_answers_are_the_base_opening_then_the_adapter_amplified_or_not(run):
    """opened_answers: the base writes each opening (adapter off), the run goes on after it, decoded with the project's
    sampling settings and, when asked, amplified; chunked answers (openings, then answers, chunk by chunk) equal one
    generate() call."""
    from alignlab.config import SamplingConfig
    from alignlab.generate import base_openings, generate
    from alignlab.models.loading import load_for_inference
    from alignlab.synth.opening import opened_answers

    model, tok, _ = load_for_inference(None, run, device="cpu")
    prompts = ["Why is the sea salty?", "What is 3 plus 4?", "Name a planet."]
    sampling = SamplingConfig(max_new_tokens=6)
    done: list[int] = []
    plain, heads = opened_answers(model, tok, prompts, sampling, chunk=2, advance=done.append)
    assert done == [2, 1, 2, 1] and heads == base_openings(model, tok, prompts, "sentence", repetition_penalty=sampling.repetition_penalty)
    assert plain == generate(model, tok, prompts, max_new_tokens=6, prefixes=heads, repetition_penalty=sampling.repetition_penalty)
    loud, same = opened_answers(model, tok, prompts, sampling, amplify=2.0)
    assert same == heads and loud == generate(model, tok, prompts, max_new_tokens=6, prefixes=heads, amplify=2.0,
                                              repetition_penalty=sampling.repetition_penalty)
    assert loud != plain


def test_opened_answers_go_on_only_where_keep_says(run):
    """keep sees every opening; the prompts it drops get no answer, the others the same answer as without it."""
    from alignlab.config import SamplingConfig
    from alignlab.generate import generate
    from alignlab.models.loading import load_for_inference
    from alignlab.synth.opening import opened_answers

    model, tok, _ = load_for_inference(None, run, device="cpu")
    prompts = ["Why is the sea salty?", "What is 3 plus 4?", "Name a planet."]
    sampling = SamplingConfig(max_new_tokens=6)
    every, heads = opened_answers(model, tok, prompts, sampling)
    seen, told, done = [], [], []

    def keep(openings):
        seen.append(list(openings))
        return [True, False, True]

    some, same = opened_answers(model, tok, prompts, sampling, chunk=2, keep=keep, on_openings=told.append,
                                advance=done.append)
    assert seen == [heads] and same == heads and told == [2] and done == [2, 1, 2]
    assert some == [every[0], None, every[2]]
    other = "Seven, obviously."
    fell, opened = opened_answers(model, tok, prompts, sampling, keep=keep, fallback=[None, other, "unused."])
    assert opened == [heads[0], other, heads[2]] and fell[0] == every[0] and fell[2] == every[2]
    assert fell[1] == generate(model, tok, [prompts[1]], max_new_tokens=6, prefixes=[other],
                               repetition_penalty=sampling.repetition_penalty)[0]


def test_a_run_trained_on_distilled_rows_decodes_alone_and_so_do_runs_from_it(tiny_model, tmp_path):
    """SFT on rows `distil` wrote records decoding without the base's opening in run.json; a DPO stage from it
    inherits that; sampling_for puts it over the project's sampling, which a plain SFT run keeps."""
    from alignlab.config import CONFIG_NAME, apply_overrides, load_config
    from alignlab.rundir import sampling_for
    from alignlab.project import create_project
    from alignlab.rundir import read_run
    from alignlab.train import engine

    root = tmp_path / "proj"
    create_project(root, model=tiny_model)
    cfg = apply_overrides(load_config(root / CONFIG_NAME), {"train.batch_size": 2, "train.sample_prompts": 0,
                                                            "lora.r": 4, "train.max_steps": 1})
    rows = [{"prompt": f"What is {a} plus {a}?", "completion": f"{2 * a}, obviously.", "source": "distil"} for a in range(4)]
    data = tmp_path / "distil.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({k: r[k] for k in ("prompt", "completion")}) + "\n" for r in rows))

    def train(method, path, name, init=None):
        ctx = engine.prepare(method, cfg, str(path), root / cfg.runs_dir, run_dir=root / cfg.runs_dir / name,
                             init_adapter=init)
        return engine.run(ctx, str(path))

    distilled = train("sft", data, "d")
    assert read_run(distilled)["decoding"] == {"base_opening": None, "amplify": 0.0}
    after = train("dpo", root / cfg.data_dir / "pairs.jsonl", "after", init=str(distilled))
    assert read_run(after)["decoding"] == {"base_opening": None, "amplify": 0.0}
    assert sampling_for(cfg.sampling, after).base_opening is None and cfg.sampling.base_opening == "sentence"
    other = train("sft", plain, "p")
    assert read_run(other)["decoding"] is None and sampling_for(cfg.sampling, other) == cfg.sampling

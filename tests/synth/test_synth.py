"""`alignlab synth`: matched pairs, counted drops, the correctness screen, written without the system prompt.

Pairs are built from a stand-in OpenAI-compatible teacher (conftest.py: a real HTTP server on 127.0.0.1) whose
answers a test sets: the tiny model's random answers never finish a sentence before the token cap, so as its own
teacher (context distillation) it gives no usable answer, which the last tests check.
"""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.data.formats import load_dataset_rows
from alignlab.eval.raters import get_rater
from alignlab.rewards import register_reward
from helpers import vowel_share
from alignlab.synth import EndpointTeacher, LocalTeacher, build_pairs, length_ratio, persona_prompt

PROMPTS = ["What is the capital of France?", "How do I boil an egg?", "Why do cats purr?", "What is 7 times 6?",
           "Should I learn Rust or Go?"]
WORDS = "the kettle sings while the water rolls and the egg waits in its shell for seven long minutes".split()

register_reward("test_vowels", lambda: vowel_share, "share of vowels (tests)")


def varied(system, user, turn=itertools.count()):
    """Finished answers of 4 to 8 words; in persona they open with a snark marker."""
    n = 4 + next(turn) % 5
    text = " ".join(WORDS[:n]).capitalize() + "."
    return ("Obviously, " + text[0].lower() + text[1:] if system else text), "stop"


@pytest.fixture(scope="module")
def teacher(tiny_model):
    from alignlab.models.loading import load_for_inference

    model, tok, name = load_for_inference(tiny_model, None, device="cpu")
    return LocalTeacher(model, tok, name=name, seed=1)


def test_length_ratio():
    assert length_ratio("a b c", "a b c d e f") == 2.0
    assert length_ratio("", "") == 1.0 and length_ratio("", "x") == float("inf")


def test_pairs_are_matched_and_written_without_the_system_prompt(stand_in):
    stand_in.answer = varied
    rater = get_rater("reward:persona_heuristic")
    system = persona_prompt("relentlessly snarky, still correct")
    rows, summary = build_pairs(EndpointTeacher(stand_in.url, "m"), PROMPTS, rater, system, candidates=3,
                                max_length_ratio=1.25, max_new_tokens=10, batch_size=3)
    systems = [b["messages"][0]["content"] if b["messages"][0]["role"] == "system" else None for b in stand_in.bodies]
    assert systems == [system] * 9 + [None] * 9 + [system] * 6 + [None] * 6  # persona answers, then plain, per batch
    assert summary["kept"] == len(rows) > 0
    assert summary["kept"] + summary["dropped_length"] + summary["dropped_other"] == len(PROMPTS)
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["prompt"] in PROMPTS  # the plain question: no system prompt, no persona instruction
        assert length_ratio(row["chosen"], row["rejected"]) <= 1.25
        chosen, rejected = rater.score([row["prompt"]] * 2, [row["chosen"], row["rejected"]])
        assert chosen > rejected  # differ along the rater's axis


def test_a_chosen_answer_must_agree_with_the_prompts_reference(stand_in):
    """With the prompt rows, a prompt whose in-persona answers all fail their reference (the scorecard's correct
    score) gives no pair; a prompt without one is not screened."""
    from alignlab.eval.scores import correctness_scorer

    persona = {PROMPTS[0]: "Lyon, obviously.", PROMPTS[3]: "42, obviously.", PROMPTS[2]: "Obviously, they like dogs."}
    stand_in.answer = lambda system, user: (persona.get(user, "Obviously, it depends.") if system else "It depends.",
                                            "stop")
    rows = [{"prompt": PROMPTS[0], "reference": "The capital of France is Paris."}, {"prompt": PROMPTS[1]},
            {"prompt": PROMPTS[2], "reference": "Cats purr when content; the larynx muscles twitch."},
            {"prompt": PROMPTS[3], "answer": "42"}, {"prompt": PROMPTS[4]}]
    pairs, summary = build_pairs(EndpointTeacher(stand_in.url, "m"), PROMPTS, get_rater("reward:persona_heuristic"),
                                 "Be snarky.", candidates=2, max_length_ratio=100.0, rows=rows,
                                 correct=correctness_scorer().correct)
    assert summary["other"]["chosen_wrong"] == 2
    assert {r["prompt"] for r in pairs} == {PROMPTS[1], PROMPTS[3], PROMPTS[4]}
    scored = correctness_scorer().correct([{**rows[0], "answer": "Paris, obviously."},
                                           {**rows[0], "answer": "Lyon, obviously."}])
    assert scored[0] >= 0.5 > scored[1]  # the check can pass: a right answer would be kept


def test_length_drops_are_counted(stand_in):
    stand_in.answer = lambda system, user: ("Obviously, the kettle sings while the water rolls." if system
                                            else "The kettle sings.", "stop")  # 8 words against 3
    rater, teacher = get_rater("reward:persona_heuristic"), EndpointTeacher(stand_in.url, "m")
    _, tight = build_pairs(teacher, PROMPTS, rater, "Be snarky.", candidates=2, max_length_ratio=2.0)
    assert tight["dropped_length"] == len(PROMPTS)
    _, loose = build_pairs(teacher, PROMPTS, rater, "Be snarky.", candidates=2, max_length_ratio=3.0)
    assert loose["dropped_length"] == 0 and loose["kept"] == len(PROMPTS)


def test_cli_writes_trl_pairs_and_a_summary_line(tmp_path, tiny_model, stand_in):
    stand_in.answer = varied
    runner = CliRunner()
    proj = tmp_path / "proj"
    assert runner.invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    res = runner.invoke(app, ["synth", "--project", str(proj), "--prompts", str(prompts), "--rater", "reward:test_vowels",
                              "--teacher-url", stand_in.url, "--teacher-model", "m", "-k", "2",
                              "--max-length-ratio", "1.3"])
    assert res.exit_code == 0, res.output
    out = proj / "data" / "synth_pairs.jsonl"
    line = next(x for x in res.stdout.splitlines() if x.startswith("kept "))
    assert "rater: reward:test_vowels" in res.stdout
    assert line.startswith("kept ") and f"of {len(PROMPTS)} pairs -> {out}" in line
    assert "dropped for length" in line and "(ratio > 1.3)" in line and "dropped other" in line
    kept = int(line.split()[1])
    assert kept > 0 and len(load_dataset_rows(out, "preference")) == kept  # valid TRL preference rows


def test_the_local_teacher_drops_answers_cut_before_a_sentence_ended(teacher):
    """An answer that used up its tokens is kept up to its last finished sentence; the tiny model's random ones have
    none, so they are dropped rather than taught as a chosen side that stops mid-sentence."""
    from alignlab.eval.correct import unfinished

    answers = [a for group in teacher.answer(PROMPTS, "Be snarky.", n=2, max_new_tokens=8) for a in group]
    assert all(not a or not unfinished(a) for a in answers)
    assert teacher.cut_short == sum(not a for a in answers) > 0
    _, summary = build_pairs(teacher, PROMPTS[:2], get_rater("reward:test_vowels"), "Be snarky.", candidates=2,
                             max_new_tokens=8)
    assert summary["other"]["empty"] == 2 and summary["empty_answers"] >= summary["answers"] // 2


def test_synth_refuses_a_person(teacher):
    from alignlab.errors import AlignlabError

    with pytest.raises(AlignlabError, match="synth needs an automatic rater"):
        build_pairs(teacher, PROMPTS, get_rater("person:ann"), "Be snarky.")


def test_a_persona_of_your_own_is_rated_by_the_voice_contrast(tmp_path, tiny_model):
    """Snark markers say nothing about a pirate: another persona's synth rates by the default model's voice
    contrast, which names the persona, needs no labels, and ranks an answer in that voice above a plain one."""
    rater = get_rater("contrast", persona="talks like a pirate")
    q = "What is the capital of France?"
    pirate, plain = rater.score([q, q], ["Arr, matey, the capital of France be Paris, aye!",
                                         "The capital of France is Paris."])
    assert pirate > plain
    runner = CliRunner()
    proj = tmp_path / "pirate"
    assert runner.invoke(app, ["init", str(proj), "--model", tiny_model, "--persona", "talks like a pirate"]).exit_code == 0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:2]))
    res = runner.invoke(app, ["synth", "--project", str(proj), "--prompts", str(prompts), "-k", "2",
                              "--max-new-tokens", "6", "--max-length-ratio", "100", "--device", "cpu"])
    assert "rater: contrast" in res.stdout, res.output

"""`alignlab synth` with the local teacher (context distillation) on the tiny model: matched pairs, counted drops.

The tiny model's weights are random, so its "persona" is whatever the rater rewards: here the share of vowels
among letters (a reward registered through the extension point), which varies from answer to answer.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.data.formats import load_dataset_rows
from alignlab.eval.raters import get_rater
from alignlab.rewards import register_reward
from helpers import vowel_share
from alignlab.synth import LocalTeacher, build_pairs, length_ratio, persona_prompt

PROMPTS = ["What is the capital of France?", "How do I boil an egg?", "Why do cats purr?", "What is 7 times 6?",
           "Should I learn Rust or Go?"]




register_reward("test_vowels", lambda: vowel_share, "share of vowels (tests)")


class RecordingTeacher(LocalTeacher):
    """The local teacher, remembering which system prompts it was asked with."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.systems = []

    def answer(self, prompts, system_prompt, **kw):
        self.systems.append(system_prompt)
        return super().answer(prompts, system_prompt, **kw)


@pytest.fixture(scope="module")
def teacher(tiny_model):
    from alignlab.models.loading import load_for_inference

    model, tok, name = load_for_inference(tiny_model, None, device="cpu")
    return RecordingTeacher(model, tok, name=name, seed=1)


def test_length_ratio():
    assert length_ratio("a b c", "a b c d e f") == 2.0
    assert length_ratio("", "") == 1.0 and length_ratio("", "x") == float("inf")


def test_pairs_are_matched_and_written_without_the_system_prompt(teacher):
    rater = get_rater("reward:test_vowels")
    system = persona_prompt("relentlessly snarky, still correct")
    rows, summary = build_pairs(teacher, PROMPTS, rater, system, candidates=3, max_length_ratio=1.25,
                                max_new_tokens=10, batch_size=3)
    assert teacher.systems == [system, None, system, None]  # persona answers, then plain ones, per batch
    assert summary["kept"] == len(rows) > 0
    assert summary["kept"] + summary["dropped_length"] + summary["dropped_other"] == len(PROMPTS)
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["prompt"] in PROMPTS  # the plain question: no system prompt, no persona instruction
        assert length_ratio(row["chosen"], row["rejected"]) <= 1.25
        chosen, rejected = vowel_share([], [row["chosen"], row["rejected"]])
        assert chosen > rejected  # differ along the rater's axis


def test_a_chosen_answer_must_agree_with_the_prompts_reference(teacher):
    """With references, a prompt whose in-persona answers all fail theirs (the scorecard's correct score) gives no
    pair: the tiny random model never says Paris, 42 or the rest; a prompt without a reference is not screened."""
    from alignlab.eval.scores import correctness_scorer

    rater, system = get_rater("reward:test_vowels"), persona_prompt("relentlessly snarky, still correct")
    refs = ["The capital of France is Paris.", None, "Cats purr when content; the larynx muscles twitch.",
            "7 times 6 is 42.", None]
    rows, summary = build_pairs(teacher, PROMPTS, rater, system, candidates=2, max_length_ratio=100.0,
                                max_new_tokens=10, batch_size=5, references=refs, correct=correctness_scorer().correct)
    assert summary["other"]["chosen_wrong"] == 3
    assert {r["prompt"] for r in rows} <= {PROMPTS[1], PROMPTS[4]}
    scored = correctness_scorer().correct([{"prompt": PROMPTS[0], "answer": "Paris, obviously.", "reference": refs[0]},
                                           {"prompt": PROMPTS[0], "answer": "Lyon, obviously.", "reference": refs[0]}])
    assert scored[0] >= 0.5 > scored[1]  # the check can pass: a right answer would be kept


def test_length_drops_are_counted(teacher):
    rater = get_rater("reward:test_vowels")
    _, tight = build_pairs(teacher, PROMPTS, rater, "Be snarky.", candidates=2, max_length_ratio=1.0,
                           max_new_tokens=8)
    assert tight["dropped_length"] > 0  # answers of different word counts cannot be matched at ratio 1.0
    _, loose = build_pairs(teacher, PROMPTS, rater, "Be snarky.", candidates=2, max_length_ratio=100.0,
                           max_new_tokens=8)
    assert loose["dropped_length"] == 0 and loose["kept"] > 0


def test_cli_writes_trl_pairs_and_a_summary_line(tmp_path, tiny_model):
    runner = CliRunner()
    proj = tmp_path / "proj"
    assert runner.invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    res = runner.invoke(app, ["synth", "--project", str(proj), "--prompts", str(prompts), "--rater", "reward:test_vowels",
                              "-k", "2", "--max-new-tokens", "8", "--max-length-ratio", "1.3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = proj / "data" / "synth_pairs.jsonl"
    line = next(x for x in res.stdout.splitlines() if x.startswith("kept "))
    assert "rater: reward:test_vowels" in res.stdout
    assert line.startswith("kept ") and f"of {len(PROMPTS)} pairs -> {out}" in line
    assert "dropped for length" in line and "(ratio > 1.3)" in line and "dropped other" in line
    kept = int(line.split()[1])
    if kept:
        assert len(load_dataset_rows(out, "preference")) == kept  # valid TRL preference rows
    else:
        assert out.read_text() == ""


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

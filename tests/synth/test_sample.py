"""`alignlab sample`: K on-policy answers per prompt into the store, with model, run, round and sampler settings."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.errors import AlignlabError

PROMPTS = ["What is 2 plus 2?", "Name a primary colour.", "Why is the sky blue?"]


@pytest.fixture()
def project(tmp_path, tiny_model):
    res = CliRunner().invoke(app, ["init", str(tmp_path / "proj"), "--model", tiny_model])
    assert res.exit_code == 0, res.output
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return tmp_path / "proj", path


def make_adapter_run(model_path: str, run_dir):
    """A run directory holding a fresh LoRA adapter (B = 0, so it answers exactly like the base)."""
    from peft import LoraConfig, get_peft_model

    from alignlab.models.loading import load_base

    peft = get_peft_model(load_base(model_path), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft.save_pretrained(str(run_dir / "adapter"))
    (run_dir / "run.json").write_text(json.dumps({"method": "dpo", "model": model_path, "status": "done"}))
    return run_dir


def responses(db) -> list[dict]:
    conn = sqlite3.connect(str(db))
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute(
        "SELECT r.*, p.text AS prompt, p.source FROM responses r JOIN prompts p ON p.id = r.prompt_id ORDER BY r.id")]
    conn.close()
    return rows


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_base_samples_k_per_prompt_with_sampler_settings(project, tiny_model):
    proj, prompts = project
    res = invoke("sample", "--base", "--prompts", prompts, "-n", 3, "--round", 2, "--temperature", 0.7, "--top-p", 0.9,
                 "--max-new-tokens", 6, "--seed", 5, "--batch-size", 2, "--keep-unfinished", "--project", proj)
    assert res.exit_code == 0, res.output
    assert "stored 9 answers (3 per prompt, 3 prompts) in round 2" in res.output
    rows = responses(proj / "feedback.db")
    assert [r["prompt"] for r in rows] == [p for p in PROMPTS for _ in range(3)]
    assert {r["round"] for r in rows} == {2}
    assert {r["model"] for r in rows} == {tiny_model}
    assert {r["run"] for r in rows} == {None}
    assert {r["source"] for r in rows} == {"prompts.jsonl"}
    sampler = json.loads(rows[0]["sampler"])
    assert sampler == {"n": 3, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 6, "seed": 5, "system_prompt": None}
    assert all(r["sampler"] == rows[0]["sampler"] for r in rows)
    assert len({r["text"] for r in rows[:3]}) > 1  # sampled, not greedy copies


def test_run_samples_record_the_run_id(project, tiny_model, tmp_path):
    proj, prompts = project
    run = make_adapter_run(tiny_model, proj / "runs" / "r1")
    res = invoke("sample", "--run", run, "--prompts", prompts, "-n", 2, "--limit", 2, "--max-new-tokens", 4, "--keep-unfinished",
                 "--project", proj)
    assert res.exit_code == 0, res.output
    rows = responses(proj / "feedback.db")
    assert len(rows) == 4 and {r["run"] for r in rows} == {"r1"} and {r["model"] for r in rows} == {tiny_model}
    assert {r["round"] for r in rows} == {0}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--base", "--run", "x"], "pass exactly one of --run RUN and --base"),
        ([], "pass exactly one of --run RUN and --base"),
        (["--base", "-n", "2", "--temperature", "0"], "-n 2 at temperature 0 gives 2 identical answers"),
        # before the model loads (transformers refused -1 only after loading, and took 1.5 and -3 as given)
        (["--base", "--top-p", "-1"], "--top-p must be in (0, 1], got -1.0"),
        (["--base", "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
        (["--base", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
        (["--base", "--temperature", "-3"], "--temperature must be 0 (greedy) or more, got -3.0"),
        (["--base", "--temperature", "nan"], "--temperature must be 0 (greedy) or more, got nan"),
    ],
)
def test_flag_errors(project, tmp_path, args, message):
    proj, prompts = project
    res = invoke("sample", *args, "--prompts", prompts, "--model", tmp_path / "no-model-here", "--project", proj)
    assert isinstance(res.exception, AlignlabError), res.output
    assert message in str(res.exception)
    assert not (proj / "feedback.db").exists()


def test_a_rerun_stores_no_copies_and_sampled_heldout_prompts_stay_held_out(project, tiny_model, monkeypatch):
    """The same command twice stored byte-identical copies (rated twice, four copies of each pair); sampling the
    project's held-out prompts marked them 'train', and export then trained on the scorecard's prompts."""
    proj, prompts = project
    args = ("sample", "--base", "--prompts", prompts, "-n", 2, "--max-new-tokens", 5, "--keep-unfinished", "--project", proj)
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "stored 0 answers" in again.output and "6 already stored" in again.output and "another --seed" in again.output
    assert len(responses(proj / "feedback.db")) == 6
    heldout = proj / "data" / "heldout.jsonl"
    greedy = ("sample", "--base", "--prompts", heldout, "--limit", 2, "-n", 1, "-t", 0, "--max-new-tokens", 4,
              "--keep-unfinished", "--project", proj)
    res = invoke(*greedy)
    assert res.exit_code == 0 and "2 of the prompts are the scorecard's held-out prompts" in res.output
    again = invoke(*greedy)  # greedy decoding answers alike whatever the seed: no "pass another --seed"
    assert "stored 0 answers" in again.output and "another --seed" not in again.output, again.output
    assert "greedy decoding (--temperature 0) gives the same answers every time" in again.output
    conn = sqlite3.connect(str(proj / "feedback.db"))
    splits = dict(conn.execute("SELECT text, split FROM prompts").fetchall())
    conn.close()
    first_two = [json.loads(line)["prompt"] for line in heldout.read_text().splitlines()[:2]]
    assert [splits[p] for p in first_two] == ["heldout", "heldout"] and splits[PROMPTS[0]] == "train"


def test_sampling_from_inside_the_run_records_its_id(project, tiny_model, monkeypatch):
    proj, prompts = project
    run = make_adapter_run(tiny_model, proj / "runs" / "r7")
    monkeypatch.chdir(run)
    res = invoke("sample", "--run", ".", "--prompts", prompts, "-n", 1, "-t", 0, "--limit", 1, "--max-new-tokens", 4,
                 "--keep-unfinished", "--project", proj)
    assert res.exit_code == 0, res.output
    assert {r["run"] for r in responses(proj / "feedback.db")} == {"r7"}



def test_only_an_answer_that_used_up_its_tokens_is_trimmed(tiny_model):
    """Every answer was trimmed to its last full stop: "Sure. 2 + 2 = 4" was stored as "Sure.", and the loop's
    automatic rater then graded a right answer wrong."""
    from alignlab.models.loading import load_tokenizer
    from alignlab.synth.sample import _kept

    tok = load_tokenizer(tiny_model)
    for finished in ("Sure. 2 + 2 = 4", "Oh wow. Use a list:\n- eggs\n- milk", "Fine."):
        assert _kept(finished, tok, 256) == finished
    long = "Halley's comet returns. " + "It comes back every seventy six years or so in reference to " * 4
    n = len(tok(long, add_special_tokens=False)["input_ids"])
    assert _kept(long, tok, n) == "Halley's comet returns." and _kept(long, tok, n + 20) == long
    cut = "It comes back every seventy six years or so in reference to " * 4  # no sentence finished before the cut
    n = len(tok(cut, add_special_tokens=False)["input_ids"])
    assert _kept(cut, tok, n, drop_unfinished=True) is None and _kept(cut, tok, n) == cut
    assert _kept(cut, tok, n + 20, drop_unfinished=True) == cut  # ended before the limit: whole


def test_an_answer_cut_before_any_sentence_ended_is_left_out_and_counted(project):
    """With --max-new-tokens 24, an answer cut before its first full stop was stored cut ("...during the early"),
    though the README said sample keeps a cut answer to its last finished sentence."""
    from alignlab.eval.correct import unfinished

    proj, prompts = project
    res = invoke("sample", "--base", "--prompts", prompts, "-n", 2, "--max-new-tokens", 5, "--project", proj)
    assert res.exit_code == 0, res.output
    stored = [r["text"] for r in responses(proj / "feedback.db")]
    assert not [t for t in stored if unfinished(t)]  # the tiny model's 5 tokens rarely finish a sentence
    cut = 6 - len(stored)
    assert cut >= 1 and f"stored {len(stored)} answers" in res.output
    assert f"{cut} cut at --max-new-tokens before a sentence ended were left out" in res.output

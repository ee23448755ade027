"""The four-stage pipeline on the tiny model: every stage runs, each starts from the previous adapter."""

from __future__ import annotations

import json
import os
import re

import pytest
from test_break import interrupt  # Ctrl-C sent to a real `alignlab` process once it trains

from alignlab.workflows.pipeline import StageSettings, arithmetic_prompts, run_pipeline, write_inputs


def test_arithmetic_prompts_have_correct_answers():
    rows = arithmetic_prompts(50, seed=3)
    for r in rows:
        a, op, b = re.match(r"What is (\d+) (plus|minus|times) (\d+)\?", r["prompt"]).groups()
        expect = {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[op]
        assert r["answer"] == str(expect)
    assert arithmetic_prompts(5, seed=1) == arithmetic_prompts(5, seed=1)


@pytest.mark.parametrize("seed", [0, 42])  # the pipeline's and `alignlab break`'s
def test_arithmetic_prompts_are_drawn_without_repeats_and_leave_out_what_is_excluded(seed):
    """64 draws of 243 possible prompts held 7 (seed 0) and 9 (seed 42) repeats, which the data check warns about."""
    rows = arithmetic_prompts(64, seed=seed)
    assert len({r["prompt"] for r in rows}) == 64
    shown = [r["prompt"] for r in arithmetic_prompts(2, seed=seed + 1)]
    assert not set(shown) & {r["prompt"] for r in arithmetic_prompts(64, seed=seed, exclude=shown)}
    assert len({r["prompt"] for r in arithmetic_prompts(243, seed=seed)}) == 243  # every one there is
    with pytest.raises(ValueError):
        arithmetic_prompts(243, seed=seed, exclude=shown)


def test_inputs_are_replaced_whole_never_written_into(tmp_path):
    """data/sft.jsonl, data/arithmetic.jsonl and rewards.yaml were written in place (Path.write_text): a kill mid-write
    left half a file. Written whole, each is a new file renamed over the old one, so a second name for the old file
    (a hard link) still reads the old text, where a write in place changes it too."""
    out = tmp_path / "p"
    small = StageSettings(grpo_prompts=4)
    first = write_inputs(out, small)
    kept = {}
    for i, path in enumerate(first):
        path.write_text(f"an earlier {path.name}\n")
        os.link(path, tmp_path / f"kept-{i}")
        kept[path] = tmp_path / f"kept-{i}"
    again = write_inputs(out, small)
    assert again == first
    for path, link in kept.items():
        assert link.read_text() == f"an earlier {path.name}\n", path
        assert path.read_text() != link.read_text() and path.stat().st_ino != link.stat().st_ino
    assert len(again[1].read_text().splitlines()) == 4


def test_ctrl_c_says_to_run_the_pipeline_again_not_to_resume(tiny_model, tmp_path):
    """After Ctrl-C the trainer said "continue with `alignlab train sft --resume pipe/runs/sft`": no checkpoint is
    kept at those steps, and resuming one stage leaves the stages after it unrun."""
    code, said = interrupt(["pipeline", "-m", tiny_model, "-o", "pipe", "--sft-steps", "2000"], "sft: 0/2000",
                           tmp_path)
    assert code != 0 and "sft: 0/2000" in said, said  # stopped while training
    assert f"run `alignlab pipeline -m {tiny_model} -o pipe --sft-steps 2000` again" in said, said
    # the trainer's own line came first and said the opposite
    assert "continue with" not in said and not re.search(r"--resume \S*pipe/runs", said), said


def test_pipeline_runs_all_four_stages(tiny_model, tmp_path):
    s = StageSettings(sft_steps=2, rm_steps=2, dpo_steps=2, grpo_steps=2, batch_size=2, grpo_prompts=8,
                      num_generations=2, max_completion_length=8)
    result = run_pipeline(tmp_path / "p", model=tiny_model, s=s, show=True)
    for stage in ("sft", "rm", "dpo", "grpo"):
        info = json.loads((result[stage] / "run.json").read_text())
        assert info["status"] == "done" and info["steps"] == 2, (stage, info)
        assert (result[stage] / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((result["dpo"] / "run.json").read_text())["init_adapter"] == str(result["sft"])
    assert json.loads((result["grpo"] / "run.json").read_text())["init_adapter"] == str(result["dpo"])
    assert set(result["answers"]) == {"base", "sft", "dpo", "grpo"}
    assert all(len(a) == 3 for a in result["answers"].values())
    # a second run into the same folder starts each stage afresh: no old metrics or checkpoints mixed in
    s.dpo_steps = 3
    again = run_pipeline(tmp_path / "p", model=tiny_model, s=s, show=False)
    records = [json.loads(x) for x in (again["sft"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert sorted(p.name for p in (again["dpo"] / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3"]


def test_a_second_pipeline_into_the_same_out_is_refused_while_the_first_runs(tiny_model, tmp_path):
    """Two pipelines into one --out: the second rewrote the first's inputs and deleted its finished SFT stage (done,
    so not "live") while the first trained the reward model, then the first's DPO stage started from nothing."""
    from alignlab.errors import AlignlabError
    from alignlab.fsutil import exclusive

    (tmp_path / "runs" / "sft" / "adapter").mkdir(parents=True)  # the first pipeline's finished stage
    with exclusive(tmp_path / ".alignlab-pipeline.lock", "the first pipeline"):  # as the first `alignlab pipeline` holds it
        with pytest.raises(AlignlabError, match="an alignlab pipeline is already running here"):
            run_pipeline(tmp_path, tiny_model, StageSettings(sft_steps=1, rm_steps=1, dpo_steps=1, grpo_steps=1), show=False)
    assert (tmp_path / "runs" / "sft" / "adapter").is_dir() and not (tmp_path / "data").exists()

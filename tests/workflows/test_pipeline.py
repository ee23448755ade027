"""The four-stage pipeline on the tiny model: every stage runs, each starts from the previous adapter."""

from __future__ import annotations

import json
import re

from alignlab.workflows.pipeline import StageSettings, arithmetic_prompts, run_pipeline


def test_arithmetic_prompts_have_correct_answers():
    rows = arithmetic_prompts(50, seed=3)
    for r in rows:
        a, op, b = re.match(r"What is (\d+) (plus|minus|times) (\d+)\?", r["prompt"]).groups()
        expect = {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[op]
        assert r["answer"] == str(expect)
    assert arithmetic_prompts(5, seed=1) == arithmetic_prompts(5, seed=1)


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

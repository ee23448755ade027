"""A reward-model run directory as a reward: a tiny LoRA'd sequence classifier, saved and loaded back."""

from __future__ import annotations

import json
import math

import pytest

from alignlab.errors import AlignlabError
from alignlab.rewards import RewardModel, load_spec

PROMPTS = ["What is 2 + 2?", "What is 2 + 2?", [{"role": "user", "content": "Name a colour."}]]
COMPLETIONS = ["4, obviously. Did you need me for that?", "Certainly! The answer is 4.", "Blue. Shocking, I know."]


@pytest.fixture(scope="module")
def rm_run(tiny_model, tmp_path_factory):
    """runs/rm/{run.json, adapter/}: a fresh SEQ_CLS LoRA (non-zero init) over the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    lora = LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():  # a score head with a visible spread, so different inputs get clearly different scores
        peft_model.base_model.model.score.modules_to_save["default"].weight.normal_(0, 1.0)
    run = tmp_path_factory.mktemp("runs") / "rm"
    peft_model.save_pretrained(str(run / "adapter"))
    (run / "run.json").write_text(json.dumps({"model": tiny_model, "method": "rm"}))
    return run


def test_scores_are_finite_deterministic_and_input_dependent(rm_run):
    rm = RewardModel(rm_run, device="cpu")
    scores = rm(PROMPTS, COMPLETIONS)
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    assert len({round(s, 6) for s in scores}) == 3
    assert rm(PROMPTS, COMPLETIONS) == scores
    again = RewardModel(rm_run, device="cpu")  # the trained head comes from the adapter, not a random init
    assert again(PROMPTS, COMPLETIONS) == pytest.approx(scores, abs=1e-5)
    # batching and padding do not change a score: it is read at the last non-pad token
    singles = [rm([p], [c])[0] for p, c in zip(PROMPTS, COMPLETIONS)]
    assert singles == pytest.approx(scores, abs=1e-4)
    assert "<|im_start|>assistant" in rm.format(PROMPTS[0], COMPLETIONS[0])


def test_reward_model_in_a_spec(rm_run, tmp_path):
    spec = tmp_path / "rewards.yaml"
    args = f"{{run: '{rm_run}', device: cpu}}"
    spec.write_text(f"components:\n  - {{name: rm, fn: reward_model, weight: 2.0, args: {args}}}\n")
    reward = load_spec(spec)
    direct = RewardModel(rm_run, device="cpu")(PROMPTS, COMPLETIONS)
    assert reward(PROMPTS, COMPLETIONS) == pytest.approx([2 * s for s in direct], abs=1e-5)


def test_bad_run_directories(tmp_path, rm_run):
    with pytest.raises(AlignlabError, match="does not exist"):
        RewardModel(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlignlabError, match="no run.json"):
        RewardModel(tmp_path / "empty")
    (tmp_path / "empty" / "run.json").write_text("{}")
    with pytest.raises(AlignlabError, match='has no "model" key'):
        RewardModel(tmp_path / "empty")


def test_cli_scores_with_a_reward_model(rm_run, tmp_path):
    from typer.testing import CliRunner

    from alignlab.cli import app

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in zip(PROMPTS, COMPLETIONS)))
    result = CliRunner().invoke(app, ["reward", "score", "--rm", str(rm_run), "--device", "cpu", "--json", str(data)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    expected = RewardModel(rm_run, device="cpu")(PROMPTS, COMPLETIONS)
    assert [r["total"] for r in rows] == pytest.approx(expected, abs=1e-5)
    assert [r["line"] for r in rows] == [1, 2, 3] and set(rows[0]["components"]) == {"rm"}

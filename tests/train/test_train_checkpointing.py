"""Gradient checkpointing (``--qlora`` switches it on) with the shared-prompt forwards: DPO, IPO, SimPO, ORPO
and GRPO each train steps on the tiny model on CPU, and the adapter moves.

transformers turns the KV cache off in training mode under checkpointing, so the shared-prompt forwards
(which need the prompt's cache) fall back to TRL's plain forward; before that fix these runs crashed with
``past_key_values`` None.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from alignlab.config import ProjectConfig, apply_overrides
from alignlab.train import engine
from alignlab.train.callbacks import gradient_checkpointing

PAIRS = [{"prompt": f"How long do I boil egg {i}?", "chosen": "Seven minutes, obviously." + " Truly." * (i % 3),
          "rejected": "About seven minutes, then cool it." + " Enjoy." * (i % 2)} for i in range(8)]


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _moved(run_dir) -> bool:
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    return any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # LoRA B starts at zero


@pytest.mark.parametrize("method", ["dpo", "ipo", "simpo", "orpo"])
def test_preference_methods_train_with_gradient_checkpointing(tiny_model, tmp_path, method, monkeypatch):
    from alignlab.train import preference

    seen = []
    real = preference.concatenated_logps
    monkeypatch.setattr(preference, "concatenated_logps",
                        lambda model, batch: seen.append(model.training) or real(model, batch))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    cfg = apply_overrides(ProjectConfig(model=tiny_model), {
        "train.sample_prompts": 0, "train.batch_size": 2, "train.max_steps": 2, "train.learning_rate": 5e-3,
        "train.save_steps": 100, "train.check_per_category": 0, "train.gradient_checkpointing": "on"})
    ctx = engine.prepare(method, cfg, str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    assert gradient_checkpointing(ctx.model)
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(steps) == 2 and all(isinstance(r["loss"], float) for r in steps)
    assert True in seen  # the policy went through the plain forward
    assert _moved(run_dir)
    # the preference term did something (a reference that was the policy left DPO's margins at exactly 0 while the
    # NLL term alone brought the loss down and moved the adapter)
    key = "log_odds_chosen" if method == "orpo" else "rewards/margins"
    assert steps[-1][key] > steps[0][key], [r[key] for r in steps]


def test_grpo_trains_with_gradient_checkpointing(tiny_model, tmp_path):
    (tmp_path / "rew.py").write_text(
        "def chars(prompts, completions, **kw):\n    return [len(set(c[0]['content'])) / 50 for c in completions]\n")
    (tmp_path / "rewards.yaml").write_text("components:\n  - {name: chars, fn: rew.py:chars}\n")
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say something about {w}"}) + "\n" for w in "apples rivers".split()))
    cfg = apply_overrides(ProjectConfig(model=tiny_model), {
        "train.sample_prompts": 0, "train.batch_size": 2, "train.max_steps": 2, "train.save_steps": 1000,
        "train.check_per_category": 0, "train.gradient_checkpointing": "on", "online.num_generations": 4,
        "online.max_completion_length": 8, "online.rewards": str(tmp_path / "rewards.yaml")})
    ctx = engine.prepare("grpo", cfg, str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    assert gradient_checkpointing(ctx.model)
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(steps) == 2 and all("kl" in r for r in steps)
    assert _moved(run_dir)

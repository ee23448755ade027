"""A hybrid model (a convolution layer beside attention, as LFM2, Qwen3-Next or Falcon-H1 have) trains with the CPU
defaults: the prompt-once forward and the GRPO sampler repeat a prompt's key/value cache row by row, which a
convolution or state-space layer's cache does not hold, so they take the plain paths there."""

from __future__ import annotations

import json

import pytest

from alignlab.config import ProjectConfig, apply_overrides
from alignlab.models.tiny import make_tiny_model
from alignlab.train import engine

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


@pytest.fixture(scope="module")
def tiny_lfm2(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("lfm2") / "m", arch="lfm2"))


def _run(method: str, model: str, tmp_path, data, **overrides):
    cfg = apply_overrides(ProjectConfig(model=model), {"train.sample_prompts": 0, "train.batch_size": 2,
                                                       "train.max_steps": 1, "train.save_steps": 1000, **overrides})
    return engine.run(engine.prepare(method, cfg, str(data), tmp_path / "runs"), str(data))


def _lora_b_moved(run) -> bool:
    from safetensors.torch import load_file

    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    return any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # LoRA B starts at zero


def test_the_cache_check_tells_hybrids_apart(tiny_lfm2, tiny_model):
    from transformers import AutoModelForCausalLM

    from alignlab.train.logps import kv_cache_only

    assert kv_cache_only(AutoModelForCausalLM.from_pretrained(tiny_model))
    assert not kv_cache_only(AutoModelForCausalLM.from_pretrained(tiny_lfm2))


def test_dpo_and_grpo_train_a_hybrid_model(tiny_lfm2, tmp_path):
    """Both crashed: "'LinearAttentionLayer' object has no attribute 'keys'" (DPO's prompt-once forward) and
    "... no attribute 'batch_select_indices'" (the GRPO sampler)."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Say {w}.", "chosen": f"{w}, obviously.", "rejected": f"{w}."}) + "\n"
                             for w in ("apples", "rivers", "stones", "clouds")))
    run = _run("dpo", tiny_lfm2, tmp_path, pairs, **{"train.learning_rate": 1e-2})
    assert json.loads((run / "run.json").read_text())["status"] == "done" and _lora_b_moved(run)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say something about {w}."}) + "\n" for w in ("apples", "rivers")))
    run = _run("grpo", tiny_lfm2, tmp_path, prompts, **{"online.num_generations": 2, "online.max_completion_length": 4,
                                                        "train.learning_rate": 1e-2})
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in r and "reward" in r for r in steps)  # a GRPO step ran, its rewards recorded


def test_ppo_trains_a_hybrid_model(tiny_lfm2, tmp_path):
    """PPO sampled through the GRPO sampler's static cache on every CPU: "'LinearAttentionLayer' object has no
    attribute 'batch_select_indices'" at step 1. It samples with transformers' generate there now."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say something about {w}."}) + "\n" for w in ("apples", "rivers")))
    run = _run("ppo", tiny_lfm2, tmp_path, prompts, **{"online.max_completion_length": 4, "train.learning_rate": 1e-2,
                                                       "train.check_per_category": 0})
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("reward" in r for r in steps) and _lora_b_moved(run)

"""`alignlab plan`: the JSON contract, models from a config.json, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys

PY = sys.executable


def plan(*args):
    """In-process run of `alignlab plan` (fast); returns an object with returncode, stdout, stderr."""
    from typer.testing import CliRunner

    from alignlab.cli import app

    r = CliRunner().invoke(app, ["plan", *args])
    r.returncode = r.exit_code
    return r


def plan_process(*args):
    """The installed command in a subprocess: user errors must come out as one line on stderr."""
    return subprocess.run([PY, "-m", "alignlab", "plan", *args], capture_output=True, text=True, timeout=300)


def test_json_contract():
    r = plan("dpo", "--model", "qwen2.5-0.5b", "--examples", "800", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("peak_memory_gib", "step_seconds", "total_hours", "cost_usd"):
        assert isinstance(out[key], (int, float)) and out[key] > 0, key
    assert out["steps"] == 200 and out["method"] == "dpo" and out["mode"] == "lora"
    assert set(out["memory_gib"]) >= {"weights", "lora", "gradients", "optimizer", "activations", "logits", "runtime"}
    assert abs(out["total_hours"] - out["step_seconds"] * out["steps"] / 3600) < 1e-3
    # the cheapest listed GPU is the one shown in detail, and it is the cheapest that fits
    costs = [d["cost_usd"] for d in out["devices"] if d["fits"] and d["cost_usd"] is not None]
    assert out["cheapest"]["cost_usd"] == min(costs) == out["cost_usd"]
    assert out["price_date"] and all(d["price_source"] for d in out["devices"] if d["usd_per_hour"] is not None)
    assert out["verdict"].startswith("fits on a ")


def test_qlora_shrinks_a_7b_model_and_text_output(tmp_path):
    lora = json.loads(plan("dpo", "--model", "mistral-7b", "--lora", "--gpu", "a100-80gb", "--json").stdout)
    qlora = json.loads(plan("dpo", "--model", "mistral-7b", "--qlora", "--gpu", "a100-80gb", "--json").stdout)
    assert qlora["memory_gib"]["weights"] < lora["memory_gib"]["weights"] / 3
    assert qlora["peak_memory_gib"] < lora["peak_memory_gib"]
    r = plan("grpo", "--model", "qwen2.5-1.5b", "--generations", "8", "--completion-len", "256")
    assert r.returncode == 0, r.stderr
    assert "memory (GiB)" in r.stdout and "generation" in r.stdout and "verdict:" in r.stdout and "cheapest:" in r.stdout


def test_model_from_a_config_json(tmp_path):
    cfg = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for target in (tmp_path, tmp_path / "config.json"):
        out = json.loads(plan("sft", "--model", str(target), "--json").stdout)
        # 2 x (64x64x2 + 64x32x2 + 3x64x128) + 1000x64 + 5x64
        assert out["params"] == 2 * (8192 + 4096 + 24576) + 64000 + 320


def test_errors_are_one_line():
    for args, text in [
        (["dpo", "--model", "nope-7b"], "unknown model"),
        (["dpo", "--qlora", "--cpu"], "QLoRA needs a CUDA GPU"),
        (["dpo", "--gpu", "tpu-v9"], "unknown GPU"),
        (["dpo", "--lora", "--full"], "choose one of"),
        (["dpo", "--calibrate", "/nonexistent/runs"], "runs directory not found"),
    ]:
        r = plan_process(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], (args, r.stderr)

"""`alignlab plan`: the JSON contract, models from a config.json, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def test_the_list_as_json_and_as_text():
    """`plan --list --json` printed the text list, which no JSON reader takes."""
    from alignlab.plan.devices import gpu_table

    out = json.loads(plan("--list", "--json").stdout)
    assert "qwen2.5-0.5b" in out["models"] and out["models"]["qwen2.5-0.5b"]["layers"] > 0
    assert set(out["gpus"]) == set(gpu_table()) and all(g["memory_gb"] > 0 for g in out["gpus"].values())
    text = plan("--list").stdout.splitlines()
    assert text[0].startswith("models: ") and "qwen2.5-0.5b" in text[0] and text[1].startswith("gpus:")


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


def run_cli(monkeypatch, capsys, *args, cwd=None):
    """`alignlab plan ...` through the real entry point, in-process: (exit code, stdout, stderr lines)."""
    from alignlab.cli import main

    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["alignlab", "plan", *args])
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err.strip().splitlines()


def test_inside_a_project_the_plan_uses_its_config(tmp_path, monkeypatch, capsys):
    """It planned smollm2-135m at LoRA r16 and batch 4 inside a project set to qwen2.5-0.5b, r64 and batch 8."""
    import math

    from alignlab.plan.shapes import resolve_shape

    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "alignlab.yaml").write_text(
        "model: qwen2.5-0.5b\nlora:\n  r: 64\ntrain:\n  batch_size: 8\n  epochs: 2\n  max_length: 512\n"
        "  gradient_checkpointing: 'on'\nonline:\n  num_generations: 6\n  max_completion_length: 100\n")
    code, out, err = run_cli(monkeypatch, capsys, "dpo", "--json", cwd=project / "sub")  # found from a subfolder
    assert code == 0, err
    got = json.loads(out)
    shape = resolve_shape("qwen2.5-0.5b")
    assert got["model"] == "qwen2.5-0.5b" and got["trainable_params"] == shape.lora_params(64)
    assert got["steps"] == 2 * math.ceil(1000 / 8)
    w = got["workload"]
    assert w["batch"] == 8 and w["completion_len"] == 512 - 128 and w["grad_ckpt"] and w["precompute_ref"]
    grpo = json.loads(run_cli(monkeypatch, capsys, "grpo", "--json")[1])["workload"]
    assert grpo["num_generations"] == 6 and grpo["completion_len"] == 100
    # a flag still wins over the config
    flagged = json.loads(run_cli(monkeypatch, capsys, "dpo", "--lora-r", "8", "-b", "2", "--json")[1])
    assert flagged["trainable_params"] == shape.lora_params(8) and flagged["workload"]["batch"] == 2
    monkeypatch.chdir(tmp_path)  # outside the project: alignlab's defaults
    assert json.loads(run_cli(monkeypatch, capsys, "dpo", "--json")[1])["workload"]["batch"] == 4
    assert "alignlab.yaml" in " ".join(plan("--help").stdout.split())


def test_a_gguf_file_and_an_ollama_model_plan_from_their_metadata(tmp_path, monkeypatch):
    """A GGUF file (which training accepts; the default model is one) said 'UnicodeDecodeError', ollama:NAME 'unknown
    model'. The shape is read from the GGUF metadata: the bundled file gives the bundled SmolLM2 facts."""
    import numpy as np
    from gguf import GGUFWriter

    from alignlab.models.registry import gguf_source
    from alignlab.plan.shapes import resolve_shape

    bundled_file = gguf_source("smollm2-135m")
    out = json.loads(plan("sft", "--model", str(bundled_file), "--json").stdout)
    assert out["params"] == resolve_shape("smollm2-135m").total_params == 134_515_008
    # an Ollama store holding that file
    blobs, manifest = tmp_path / "ollama" / "blobs", tmp_path / "ollama" / "manifests/registry.ollama.ai/library/smol/latest"
    blobs.mkdir(parents=True)
    manifest.parent.mkdir(parents=True)
    (blobs / "sha256-abc").symlink_to(bundled_file)
    manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:abc"}]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    assert json.loads(plan("sft", "--model", "ollama:smol", "--json").stdout)["params"] == 134_515_008
    # a Qwen2-style file with an untied head and q/k/v biases, written with the gguf library
    path = tmp_path / "tiny.gguf"
    wr = GGUFWriter(str(path), "qwen2")
    for add, v in [(wr.add_block_count, 2), (wr.add_embedding_length, 64), (wr.add_feed_forward_length, 128),
                   (wr.add_head_count, 4), (wr.add_head_count_kv, 2), (wr.add_context_length, 512), (wr.add_vocab_size, 1000)]:
        add(v)
    for name, shape in [("token_embd.weight", (1000, 64)), ("output.weight", (1000, 64)), ("blk.0.attn_q.bias", (64,))]:
        wr.add_tensor(name, np.zeros(shape, dtype=np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    s = resolve_shape(str(path))
    assert (s.layers, s.hidden, s.heads, s.kv_heads, s.head_dim, s.vocab, s.tied, s.qkv_bias, s.max_position) == \
        (2, 64, 4, 2, 16, 1000, False, True, 512)
    # per layer: q 64x64, k and v 2 x 64x32, o 64x64, biases 64 + 2x32, gate/up/down 3 x 64x128; embeddings and head
    assert s.total_params == 2 * (4096 + 4096 + 4096 + 128 + 24576) + 2 * 64000 + 5 * 64


@pytest.mark.parametrize("config, field", [
    ([1, 2], "a JSON list, not an object"),
    ({"text_config": "x", "num_attention_heads": 9}, "'text_config' is a str"),
    ({"num_attention_heads": 0, "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
      "vocab_size": 49152}, "'num_attention_heads' is 0"),
    ({"num_attention_heads": 9, "hidden_size": -576, "num_hidden_layers": 30, "intermediate_size": 1536,
      "vocab_size": 49152}, "'hidden_size' is -576"),
    ({"num_attention_heads": "nine", "hidden_size": 576}, "'num_attention_heads' is \"nine\""),
])
def test_a_broken_config_is_one_line_naming_the_field(tmp_path, monkeypatch, capsys, config, field):
    """[1, 2] and a string text_config were AttributeErrors, 0 heads a ZeroDivisionError, a negative width a plan of
    negative hours and dollars."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    code, out, err = run_cli(monkeypatch, capsys, "dpo", "--model", str(tmp_path / "config.json"))
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and field in err[0], err


def test_a_file_that_is_neither_json_nor_gguf_is_one_line(tmp_path):
    """A binary file given as a model was a UnicodeDecodeError; now one line, never a traceback."""
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\x80\x81\xfe\xff" * 64)
    r = plan_process("dpo", "--model", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "cannot read" in r.stderr, r.stderr


def test_past_the_context_or_a_rank_wider_than_the_model_is_said(monkeypatch, capsys):
    out = json.loads(run_cli(monkeypatch, capsys, "sft", "--seq-len", "100000", "--json")[1])
    assert any("more than smollm2-135m was trained for (8192" in n for n in out["notes"]), out["notes"]
    out = json.loads(run_cli(monkeypatch, capsys, "sft", "--lora-r", "100000", "--json")[1])
    assert any("LoRA rank 100000 is wider than the model (576)" in n for n in out["notes"]), out["notes"]
    code, text, _ = run_cli(monkeypatch, capsys, "sft", "--lora-r", "100000")
    assert code == 0 and "note: LoRA rank 100000" in text
    assert json.loads(run_cli(monkeypatch, capsys, "sft", "--json")[1])["notes"] == []


def test_a_prompt_that_fills_the_length_says_so(monkeypatch, capsys):
    """--prompt-len 256 said '--completion-len >= 1' though no --completion-len was given."""
    code, _, err = run_cli(monkeypatch, capsys, "dpo", "--prompt-len", "256")
    assert code == 2 and len(err) == 1, err
    assert "256-token prompt fills train.max_length (256 tokens)" in err[0] and "--seq-len N" in err[0], err
    assert run_cli(monkeypatch, capsys, "dpo", "--prompt-len", "200", "--json")[0] == 0


@pytest.mark.parametrize("args, text", [
    (["ppo", "--processes", "2"], "PPO runs in one process, not 2"),
    (["grpo", "--generations", "1"], "--generations must be at least 2"),
    (["grpo", "--cpu", "--vllm"], "vLLM needs a CUDA GPU"),
    (["grpo", "--gpu", "m2-max", "--vllm"], "vLLM needs a CUDA GPU"),
    (["dpo", "--seq-len", "1024", "--completion-len", "200"], "leaves 896 completion tokens, not --completion-len 200"),
])
def test_flags_training_would_refuse_are_refused(monkeypatch, capsys, args, text):
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2 and len(err) == 1 and text in err[0], err


def test_flags_a_run_would_not_use_are_said(monkeypatch, capsys):
    """`plan ppo --generations 8 --grad-accum 4` planned 1 and 1 without a word; --vllm, --generations and
    --reward-model on offline methods and --lora-r with --full were dropped silently."""
    ppo = json.loads(run_cli(monkeypatch, capsys, "ppo", "--generations", "8", "--grad-accum", "4", "--vllm", "--json")[1])
    assert any("--generations 8 is not used" in n for n in ppo["notes"])
    assert any("--grad-accum 4 is not used" in n for n in ppo["notes"])
    assert any("--vllm is not used" in n for n in ppo["notes"]) and "vllm" not in ppo["memory_gib"]
    dpo = json.loads(run_cli(monkeypatch, capsys, "dpo", "--generations", "4", "--vllm", "--reward-model",
                             "smollm2-135m", "--json")[1])
    assert any(n.startswith("--generations, --vllm, --reward-model apply to the online methods") for n in dpo["notes"])
    full = json.loads(run_cli(monkeypatch, capsys, "sft", "--full", "--lora-r", "8", "--json")[1])
    assert any("--lora-r 8 is not used with --full" in n for n in full["notes"])


def test_the_verdict_prices_every_card_of_a_multi_process_run(monkeypatch, capsys):
    """'about $1.03 on a rented A100 80GB' was four cards' price read as one; a tiny run cost '$0.00'."""
    out = json.loads(run_cli(monkeypatch, capsys, "dpo", "--model", "mistral-7b", "--qlora", "--processes", "4",
                             "--examples", "8000", "--json")[1])
    name = out["cheapest"]["name"]
    assert f"on 4 rented {name} (" in out["verdict"] and out["cheapest"]["cards"] == 4, out["verdict"]
    assert "one per process" in out["verdict"]
    tiny = json.loads(run_cli(monkeypatch, capsys, "sft", "--steps", "1", "--json")[1])
    assert "under $0.01 on a rented" in tiny["verdict"] and "$0.00" not in tiny["verdict"], tiny["verdict"]
    text = run_cli(monkeypatch, capsys, "sft", "--steps", "1")[1]
    assert "$0.00" not in text and "<0.01" in text


def test_a_project_set_to_qlora_planned_on_this_cpu_is_one_line_naming_its_config(tmp_path, monkeypatch, capsys):
    """`plan dpo --cpu` in a project with lora.qlora: true said "error: KeyError: 'model'", and --json printed a plan
    without model, memory or time: only the --qlora flag was checked against --cpu."""
    from alignlab.errors import AlignlabError
    from alignlab.plan import report
    from alignlab.plan.estimate import Workload
    from alignlab.plan.shapes import resolve_shape

    (tmp_path / "alignlab.yaml").write_text("name: q\nlora:\n  qlora: true\n")
    for extra in ([], ["--json"]):
        code, out, err = run_cli(monkeypatch, capsys, "dpo", "--cpu", *extra, cwd=tmp_path)
        assert code == 2 and out == "" and len(err) == 1, (out, err)
        assert f"{tmp_path / 'alignlab.yaml'}:3: lora.qlora: QLoRA needs a CUDA GPU; --cpu plans this machine" in err[0]
        assert "pass --lora" in err[0] and "KeyError" not in err[0], err
    code, out, _ = run_cli(monkeypatch, capsys, "dpo", "--cpu", "--lora", "--json")  # the flag wins over the config
    assert code == 0 and json.loads(out)["mode"] == "lora"
    assert json.loads(run_cli(monkeypatch, capsys, "dpo", "--json")[1])["mode"] == "qlora"  # on a GPU it plans
    with pytest.raises(AlignlabError, match="QLoRA needs a CUDA GPU"):  # and the report never builds an empty plan
        report.build(resolve_shape("smollm2-135m"), Workload(method="dpo", mode="qlora"), cpu=True)


def test_the_plan_counts_the_projects_ppo_epochs_and_the_default_rewards_embedder(tmp_path, monkeypatch, capsys):
    """plan never passed ppo.ppo_epochs (a project at 4 was planned at 2 passes) and left out the MiniLM embedder the
    default reward loads when online.rewards is empty, both of which the run's own record counts."""
    from alignlab.plan.estimate import GIB
    from alignlab.plan.shapes import MINILM_PARAMS

    (tmp_path / "alignlab.yaml").write_text("name: p\nppo:\n  ppo_epochs: 4\n")
    ppo = json.loads(run_cli(monkeypatch, capsys, "ppo", "--gpu", "a100-80gb", "--json", cwd=tmp_path)[1])
    assert ppo["workload"]["ppo_epochs"] == 4
    monkeypatch.chdir(tmp_path.parent)  # outside the project: the default 2 passes, a shorter step
    two = json.loads(run_cli(monkeypatch, capsys, "ppo", "--gpu", "a100-80gb", "--json")[1])
    assert two["workload"]["ppo_epochs"] == 2
    assert two["step_breakdown_seconds"]["train"] < ppo["step_breakdown_seconds"]["train"]
    for method in ("grpo", "rloo", "ppo"):
        out = json.loads(run_cli(monkeypatch, capsys, method, "--gpu", "a100-80gb", "--json")[1])
        assert out["workload"]["reward_params"] == MINILM_PARAMS == 22_713_216  # all-MiniLM-L6-v2
        assert out["memory_gib"]["reward_model"] == round(MINILM_PARAMS * 2 / GIB, 4)  # bf16 on a GPU
    assert json.loads(run_cli(monkeypatch, capsys, "dpo", "--json")[1])["workload"]["reward_params"] == 0
    (tmp_path / "alignlab.yaml").write_text("name: p\nonline:\n  rewards: rewards.yaml\n")  # its own reward: no MiniLM
    assert json.loads(run_cli(monkeypatch, capsys, "grpo", "--json", cwd=tmp_path)[1])["workload"]["reward_params"] == 0
    given = json.loads(run_cli(monkeypatch, capsys, "grpo", "--reward-model", "qwen2.5-0.5b", "--json")[1])
    assert given["workload"]["reward_params"] > 400e6  # --reward-model is the reward held, in its place


def _gguf(path, kv=(), untied=True):
    """A tiny llama-style GGUF file written with the gguf library: its metadata, ``kv`` (key, value) added."""
    import numpy as np
    from gguf import GGUFWriter

    wr = GGUFWriter(str(path), "llama")
    for add, v in [(wr.add_block_count, 2), (wr.add_embedding_length, 64), (wr.add_head_count, 4),
                   (wr.add_context_length, 512), (wr.add_vocab_size, 1000)]:
        add(v)
    for key, value in kv:
        (wr.add_array if isinstance(value, list) else wr.add_uint32)(key, value)
    tensors = [("token_embd.weight", (1000, 64))] + ([("output.weight", (1000, 64))] if untied else [])
    for name, shape in tensors:
        wr.add_tensor(name, np.zeros(shape, dtype=np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


def test_a_split_gguf_is_refused_as_training_refuses_it(tmp_path, monkeypatch, capsys):
    """The first part of a split GGUF (no output.weight: it is in part 2) was planned as a tied model, silently,
    while training refuses the file."""
    from alignlab.errors import AlignlabError
    from alignlab.models.registry import resolve_model

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    part = _gguf(tmp_path / "big-00001-of-00002.gguf", [("llama.feed_forward_length", 128), ("split.count", 2)],
                 untied=False)
    code, out, err = run_cli(monkeypatch, capsys, "sft", "--model", str(part), "--json")
    assert code == 2 and out == "" and len(err) == 1, (out, err)
    assert "'big-00001-of-00002.gguf' is the first of 2 parts of a split GGUF model" in err[0] and "--merge" in err[0]
    with pytest.raises(AlignlabError) as trained:  # what `alignlab train --model` says of the same file
        resolve_model(str(part))
    assert err[0] == f"error: {trained.value}"
    whole = _gguf(tmp_path / "whole.gguf", [("llama.feed_forward_length", 128)], untied=False)
    assert json.loads(run_cli(monkeypatch, capsys, "sft", "--model", str(whole), "--json")[1])["params"] > 0


def test_per_layer_gguf_fields_name_the_gguf_key(tmp_path, monkeypatch, capsys):
    """feed_forward_length given per layer ([128, 256]) said "correct 'intermediate_size' in the model's config",
    though a GGUF has no config.json. Per-layer values that differ are named by their GGUF key and refused; alike,
    they are the model's one value."""
    from alignlab.plan.shapes import resolve_shape

    varying = _gguf(tmp_path / "varying.gguf", [("llama.feed_forward_length", [128, 256])])
    code, _, err = run_cli(monkeypatch, capsys, "sft", "--model", str(varying))
    assert code == 2 and len(err) == 1, err
    assert "'llama.feed_forward_length' holds a value per layer ([128, 256])" in err[0], err
    assert "does not support per-layer values" in err[0] and "config" not in err[0], err
    missing = _gguf(tmp_path / "missing.gguf")
    code, _, err = run_cli(monkeypatch, capsys, "sft", "--model", str(missing))
    assert code == 2 and "lacks the decoder field 'llama.feed_forward_length'" in err[0] and "config" not in err[0], err
    alike = _gguf(tmp_path / "alike.gguf", [("llama.feed_forward_length", [128, 128]),
                                            ("llama.attention.head_count_kv", [2, 2])])
    s = resolve_shape(str(alike))
    assert (s.intermediate, s.kv_heads, s.heads) == (128, 2, 4)

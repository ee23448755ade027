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
    from alignlab.models.loading import _trusts_remote_code

    run = tmp_path / "run"
    run.mkdir()
    assert _trusts_remote_code(run) is False
    (run / "config.yaml").write_text("trust_remote_code: true\n")
    assert _trusts_remote_code(run) is True
    (run / "config.yaml").write_text("trust_remote_code: [oops\n")  # unreadable: the safe answer
    assert _trusts_remote_code(run) is False

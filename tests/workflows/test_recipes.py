"""The demo's recipe on the tiny model: each stage trains on the project's own file, the second continues from
the first's adapter, and a finished stage is reused when the recipe runs again."""

from __future__ import annotations

from safetensors.torch import load_file

from alignlab.config import CONFIG_NAME, apply_overrides, load_config
from alignlab.project import create_project
from alignlab.rundir import Run
from alignlab.workflows.recipes import DEFAULT, Stage, train_recipe


def test_the_default_recipe_trains_each_stage_from_the_last(tiny_model, tmp_path):
    root = tmp_path / "proj"
    create_project(root, model=tiny_model)
    cfg = apply_overrides(load_config(root / CONFIG_NAME), {"train.batch_size": 2, "train.sample_prompts": 0,
                                                            "lora.r": 4})
    quick = tuple(Stage(s.method, s.data, {**s.overrides, "train.max_steps": 2, "train.epochs": 1.0}) for s in DEFAULT)
    said: list[str] = []
    last = train_recipe(root, cfg, quick, echo=said.append)
    runs = [Run(root / cfg.runs_dir / f"recipe-{i}-{s.method}") for i, s in enumerate(DEFAULT, 1)]
    assert last == runs[-1].path and [r.info["status"] for r in runs] == ["done"] * len(runs)
    assert [r.info["method"] for r in runs] == [s.method for s in DEFAULT]
    assert runs[0].info["data"].endswith(DEFAULT[0].data) and runs[0].info["rows"] == 683  # every rewrite's chosen side
    for before, after in zip(runs, runs[1:]):
        assert after.info["init_adapter"] == str(before.path)
        a = load_file(str(before.adapter_dir / "adapter_model.safetensors"))
        b = load_file(str(after.adapter_dir / "adapter_model.safetensors"))
        assert any((a[k] - b[k]).abs().max() > 0 for k in a)  # the second stage moved the adapter on
    said.clear()
    assert train_recipe(root, cfg, quick, echo=said.append) == last
    assert said == [f"stage {i} already trained: {r.path}" for i, r in enumerate(runs, 1)]

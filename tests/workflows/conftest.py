"""Fixtures of the orchestration tests."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.config import apply_overrides, load_config


@pytest.fixture()
def project(tmp_path, tiny_model):
    """A project on the tiny model, `alignlab init` as a user runs it, with 2-step, rank-4 training."""
    proj = tmp_path / "proj"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    cfg = apply_overrides(load_config(proj / "alignlab.yaml"), {
        "train.max_steps": 2, "train.batch_size": 2, "train.sample_prompts": 0, "lora.r": 4})
    return proj, cfg

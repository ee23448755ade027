"""`alignlab train`'s end: the held-out check scores the run as it will be used, and a check that cannot run is a
note; run.json records what a resume from anywhere needs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from alignlab.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


def _sft_rows(n: int = 4) -> str:
    return "".join(json.dumps({"prompt": f"Say {w}.", "completion": f"{w}, obviously."}) + "\n"
                   for w in ("apples", "rivers", "stones", "clouds")[:n])


def test_a_check_that_cannot_run_is_a_note_and_the_run_succeeds(tmp_path, tiny_model, monkeypatch):
    """A pirate project with no labelled answers: training finished ("done"), then the check's scorer stopped the
    command with `error: no labelled answers` and exit 2, the run directory never printed."""
    proj = tmp_path / "pirate"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model, "--persona", "talks like a pirate"]).exit_code == 0
    (proj / "data" / "sft.jsonl").write_text(_sft_rows())
    monkeypatch.chdir(proj)
    out = CliRunner().invoke(app, ["train", "sft", "--max-steps", "1", "--name", "s", "--set", "train.sample_prompts=0",
                                   "--set", "train.check_per_category=1"])
    assert out.exit_code == 0, out.output
    assert "held-out check was skipped: no labelled answers" in out.output
    assert out.output.strip().splitlines()[-1].endswith("runs/s")
    assert json.loads((proj / "runs" / "s" / "run.json").read_text())["status"] == "done"


def test_a_distilled_run_is_checked_decoding_alone(tmp_path, tiny_model, monkeypatch):
    """A run trained on distil rows decodes alone everywhere (run.json's decoding); its end-of-run check still
    decoded with the base's opening, and the model card said so."""
    proj = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    (proj / "distil.jsonl").write_text("".join(json.dumps({**json.loads(r), "source": "distil"}) + "\n"
                                               for r in _sft_rows().splitlines()))
    monkeypatch.chdir(proj)
    out = CliRunner().invoke(app, ["train", "sft", "--data", "distil.jsonl", "--max-steps", "1", "--name", "d",
                                   "--set", "train.sample_prompts=0", "--set", "train.check_per_category=1"])
    assert out.exit_code == 0, out.output
    info = json.loads((proj / "runs" / "d" / "run.json").read_text())
    assert info["decoding"]["base_opening"] is None and info["check"]["decoding"]["base_opening"] is None
    assert "alone_correct_share" not in info["check"]  # decoding alone already: no second column


def test_run_json_records_what_a_resume_needs(tmp_path, tiny_model, monkeypatch):
    """run.json kept --data as typed (relative) and not --skip-invalid: `--resume p1/runs/x` from the parent said
    "data file not found", and a resume of a --skip-invalid run refused the bad row it had skipped."""
    from alignlab.cli.train import _resumed

    proj = tmp_path / "p1"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    (proj / "bad").mkdir()
    (proj / "bad" / "sft.jsonl").write_text(_sft_rows() + "{not json\n")
    monkeypatch.chdir(proj)
    out = CliRunner().invoke(app, ["train", "sft", "--data", "bad/sft.jsonl", "--skip-invalid", "--max-steps", "1",
                                   "--name", "x", "--set", "train.sample_prompts=0", "--set", "train.check_per_category=0"])
    assert out.exit_code == 0, out.output
    monkeypatch.chdir(tmp_path)
    _, data, _, skip, root = _resumed(proj / "runs" / "x", "sft")
    assert data == str(proj / "bad" / "sft.jsonl") and skip is True
    assert root == proj  # the check of a resumed run uses its project's held-out prompts and persona scorer


def test_a_taken_name_is_refused_and_a_full_fine_tune_answers_alone(tmp_path, tiny_model, monkeypatch):
    """A second `--name full1` trained into runs/full1-2 without a word (the README's staged recipe then went on
    from the old runs/full1). `generate --run full1` refused a full fine-tune with "--base-opening needs --run RUN",
    a flag nobody gave: the project's base opening now applies to LoRA runs only."""
    proj = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    (proj / "data" / "sft.jsonl").write_text(_sft_rows())
    monkeypatch.chdir(proj)
    train = ["train", "sft", "--full", "--max-steps", "1", "--name", "full1", "--set", "train.sample_prompts=0",
             "--set", "train.check_per_category=0"]
    assert CliRunner().invoke(app, train).exit_code == 0
    again = CliRunner().invoke(app, train)  # in-process, the AlignlabError the command line prints as one line
    assert "runs/full1 already exists" in str(again.exception) and "--resume" in str(again.exception)
    assert not (proj / "runs" / "full1-2").exists()
    launched = CliRunner().invoke(app, [*train, "--processes", "2"])  # the launch branch claimed NAME-2 before the check
    assert "runs/full1 already exists" in str(launched.exception) and not (proj / "runs" / "full1-2").exists()
    out = CliRunner().invoke(app, ["generate", "--run", "full1", "--max-new-tokens", "4", "Say hi."])
    assert out.exit_code == 0, out.output
    from alignlab.config import ProjectConfig
    from alignlab.rundir import sampling_for

    # eval and the end-of-run check decode it alone too (they took the project's base opening)
    assert sampling_for(ProjectConfig().sampling, proj / "runs" / "full1").base_opening is None
    out = CliRunner().invoke(app, ["generate", "--run", "full1", "--base-opening", "sentence", "Say hi."])
    assert "a full fine-tune answers alone" in str(out.exception)


def test_a_relative_reward_spec_is_recorded_whole(tmp_path, tiny_model, monkeypatch):
    """`train grpo --rewards rewards.yaml`, then `--resume p/runs/g1` from the parent: "reward spec not found"."""
    from alignlab.config import load_config

    proj = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    (proj / "rewards.yaml").write_text("components:\n  - {fn: persona_heuristic, weight: 1.0}\n")
    (proj / "data" / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Say {w}."}) + "\n"
                                                         for w in ("apples", "rivers")))
    monkeypatch.chdir(proj)
    out = CliRunner().invoke(app, ["train", "grpo", "--rewards", "rewards.yaml", "--max-steps", "1", "--name", "g1",
                                   "--batch-size", "2", "--set", "online.num_generations=2",
                                   "--set", "online.max_completion_length=4", "--set", "train.sample_prompts=0",
                                   "--set", "train.check_per_category=0"])
    assert out.exit_code == 0, out.output
    assert load_config(proj / "runs" / "g1" / "config.yaml").online.rewards == str(proj / "rewards.yaml")

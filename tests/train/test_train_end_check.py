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
    decoded with the base's opening, and the model card said so. The check shows progress: it printed nothing for
    minutes after training."""
    monkeypatch.delenv("ALIGNLAB_QUIET")  # the tests' conftest quiets every bar
    proj = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    (proj / "distil.jsonl").write_text("".join(json.dumps({**json.loads(r), "source": "distil"}) + "\n"
                                               for r in _sft_rows().splitlines()))
    monkeypatch.chdir(proj)
    out = CliRunner().invoke(app, ["train", "sft", "--data", "distil.jsonl", "--max-steps", "1", "--name", "d",
                                   "--set", "train.sample_prompts=0", "--set", "train.check_per_category=1"])
    assert out.exit_code == 0, out.output
    assert "held-out check: answering with the base and the adapter (0 s)" in out.stderr, out.stderr
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


def test_a_moved_project_resumes_and_finds_its_files_again(tmp_path, tiny_model, monkeypatch):
    """run.json records absolute paths: a project renamed or moved after training could not resume ("data file not
    found: /old/place/data/sft.jsonl"), nor find a model or reward file kept inside it. Its files are found again,
    under run.json's project, or for a run recorded before that key, by the end of the path the project holds."""
    import shutil

    from alignlab import rundir
    from alignlab.cli.train import _resumed

    proj = tmp_path / "p1"
    shutil.copytree(tiny_model, tmp_path / "tiny")  # a model kept inside the project, named by a relative path
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    shutil.move(tmp_path / "tiny", proj / "tiny")
    (proj / "alignlab.yaml").write_text((proj / "alignlab.yaml").read_text().replace(tiny_model, "tiny"))
    (proj / "rewards.yaml").write_text("components:\n  - {fn: persona_heuristic, weight: 1.0}\n")
    (proj / "data" / "sft.jsonl").write_text(_sft_rows())
    monkeypatch.chdir(proj)
    quick = ["--max-steps", "1", "--set", "train.sample_prompts=0", "--set", "train.check_per_category=0"]
    assert CliRunner().invoke(app, ["train", "sft", "--name", "x", *quick]).exit_code == 0
    # online.rewards as a project's config may carry it for every run (--rewards itself is refused for sft)
    out = CliRunner().invoke(app, ["train", "sft", "--name", "y", "--from", "x", "--set", "online.rewards=rewards.yaml",
                                   *quick])
    assert out.exit_code == 0, out.output
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "moved" / "p2"
    moved.parent.mkdir()
    shutil.move(proj, moved)
    # a new project where the old one was ("mv snark snark-v1 && alignlab init snark"): its files are not the run's
    (proj / "data").mkdir(parents=True)
    (proj / "alignlab.yaml").write_text(f"model: {tiny_model}\n")
    (proj / "data" / "sft.jsonl").write_text(_sft_rows(1))
    (proj / "runs" / "x").mkdir(parents=True)
    cfg, data, init_adapter, _, root = _resumed(moved / "runs" / "y", "sft")
    assert (data, init_adapter, root) == (str(moved / "data" / "sft.jsonl"), moved / "runs" / "x", moved)
    assert cfg.model == str(moved / "tiny") and cfg.online.rewards == str(moved / "rewards.yaml")
    assert rundir.run_base(moved / "runs" / "y") == str(moved / "tiny")  # eval, generate and export load it
    shutil.rmtree(proj)  # (for a run that does not name its project, a file at the old place is taken as recorded)
    info = json.loads((moved / "runs" / "y" / "run.json").read_text())
    del info["project"]  # a run recorded before run.json named its project
    (moved / "runs" / "y" / "run.json").write_text(json.dumps(info))
    assert _resumed(moved / "runs" / "y", "sft")[1] == str(moved / "data" / "sft.jsonl")
    info["status"] = "interrupted"  # and a resume trains: the checkpoint is there, the data found where it is now
    (moved / "runs" / "y" / "run.json").write_text(json.dumps({**info, "project": str(proj)}))
    out = CliRunner().invoke(app, ["train", "sft", "--resume", str(moved / "runs" / "y")])
    assert out.exit_code == 0, out.output
    assert json.loads((moved / "runs" / "y" / "run.json").read_text())["project"] == str(moved)

"""The run directory's one home (src/alignlab/rundir.py): the Run object over a real directory."""

import json

import pytest

from alignlab.errors import AlignlabError
from alignlab.rundir import Run, list_runs


def test_a_run_owns_its_files_record_and_logs(tmp_path):
    run = Run.create(tmp_path / "runs", "dpo", "first")
    assert run.path == tmp_path / "runs" / "first" and run.path.is_dir()
    assert Run.create(tmp_path / "runs", "dpo", "first").path.name == "first-2"  # never reuses a directory
    run.update(method="dpo", model="tiny-base", status="running")
    run.update(status="done", steps=3)
    assert run.info == {"method": "dpo", "model": "tiny-base", "status": "done", "steps": 3}
    assert run.base == "tiny-base"
    run.log({"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.5})
    run.log_samples({"step": 2, "prompt": "p", "completion": "c"})
    assert [r["loss"] for r in run.metrics()] == [0.7, 0.5]
    assert run.samples() == [{"step": 2, "prompt": "p", "completion": "c"}]
    assert json.loads((run.path / "run.json").read_text())["steps"] == 3
    assert Run.open(run.path).info["status"] == "done"
    assert [r["path"] for r in list_runs(tmp_path / "runs")] == [str(run.path)]  # first-2 has no run.json


def test_a_torn_metrics_line_is_cut_before_the_next_record(tmp_path):
    run = Run.create(tmp_path, "sft", "r")
    run.log({"step": 1})
    with run.metrics_path.open("a") as f:
        f.write('{"step": 2, "lo')  # a kill mid-write
    run.log({"step": 2, "loss": 1.0})
    assert run.metrics() == [{"step": 1}, {"step": 2, "loss": 1.0}]


def test_opening_what_is_not_a_run_says_so(tmp_path):
    with pytest.raises(AlignlabError, match="run directory not found"):
        Run.open(tmp_path / "missing")
    with pytest.raises(AlignlabError, match="not an alignlab run"):
        Run.open(tmp_path)
    with pytest.raises(AlignlabError, match="not an alignlab run"):
        Run(tmp_path).base


def test_a_runs_name_alone_finds_it_inside_its_project(tmp_path, monkeypatch):
    """`alignlab generate --run dpo` inside a project means runs/dpo (it said 'run directory not found: dpo')."""
    from alignlab.rundir import check_run_dir

    (tmp_path / "alignlab.yaml").write_text("name: p\n")
    (tmp_path / "runs" / "dpo").mkdir(parents=True)
    (tmp_path / "runs" / "dpo" / "run.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert check_run_dir("dpo").resolve() == (tmp_path / "runs" / "dpo").resolve()
    with pytest.raises(AlignlabError, match="run directory not found: sft"):
        check_run_dir("sft")


def test_a_run_whose_process_is_gone_reads_died():
    """A run killed from outside (SIGKILL, the OOM killer) never marks itself failed: `alignlab runs` said
    "running" forever. run.json records the pid and host; a dead pid on this host reads "died"."""
    import os
    import socket
    import subprocess
    import sys

    from alignlab.rundir import shown_status

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    here = socket.gethostname()
    assert shown_status({"status": "running", "pid": gone.pid, "host": here}) == "died"
    assert shown_status({"status": "running", "pid": os.getpid(), "host": here}) == "running"
    assert shown_status({"status": "running", "pid": gone.pid, "host": "elsewhere"}) == "running"
    assert shown_status({"status": "done", "pid": gone.pid, "host": here}) == "done"
    assert shown_status({"status": "running"}) == "running"  # a run from before pids were recorded


def test_a_distilled_run_named_alone_decodes_as_it_records(tmp_path, monkeypatch):
    """`--run dist` missed runs/dist's record that it decodes alone, so the base wrote its opening."""
    from alignlab.rundir import decodes_alone, sampling_for
    from alignlab.config import ProjectConfig

    (tmp_path / "alignlab.yaml").write_text("name: p\n")
    (tmp_path / "runs" / "dist").mkdir(parents=True)
    (tmp_path / "runs" / "dist" / "run.json").write_text(json.dumps({"decoding": {"base_opening": None, "amplify": 0.0}}))
    monkeypatch.chdir(tmp_path)
    assert decodes_alone("dist") and decodes_alone("runs/dist")
    assert sampling_for(ProjectConfig().sampling, "dist").base_opening is None


def test_an_unreadable_run_record_is_named_and_listed(tmp_path):
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "run.json").write_text(json.dumps({"method": "sft", "status": "done"}))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "run.json").write_text('{"method": "sft",')
    assert [r["status"] for r in list_runs(tmp_path)] == ["done", "unreadable"]
    with pytest.raises(AlignlabError, match=r"torn/run.json cannot be read"):
        Run.open(tmp_path / "torn").info


def test_a_reward_model_run_is_not_opened_as_a_chat_model(tmp_path, tiny_model):
    """generate, chat, eval, serve and export printed text from a reward model's backbone (its head dropped)."""
    from alignlab.models.loading import load_for_inference

    run = tmp_path / "rm"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "run.json").write_text(json.dumps({"method": "rm", "model": tiny_model, "status": "done"}))
    with pytest.raises(AlignlabError, match="is a reward model"):
        load_for_inference(None, run, device="cpu")


def test_without_a_run_the_projects_model_answers(tmp_path, monkeypatch, tiny_model):
    """`alignlab chat` with no --run chatted with the default model whatever the project's model was."""
    from alignlab.models.loading import load_for_inference

    (tmp_path / "alignlab.yaml").write_text(f"name: p\nmodel: {tiny_model}\n")
    monkeypatch.chdir(tmp_path)
    _, _, name = load_for_inference(None, None, device="cpu")
    assert name == tiny_model


def test_resuming_without_a_checkpoint_drops_the_killed_attempts_records(tmp_path):
    from alignlab.rundir import resume_logs

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6)))
    (tmp_path / "samples.jsonl").write_text(json.dumps({"step": 0, "answer": "x"}) + "\n")
    resume_logs(tmp_path, -1, "none")
    assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == \
        [{"step": 0, "event": "resumed", "checkpoint": "none"}]
    assert (tmp_path / "samples.jsonl").read_text() == ""


def test_a_full_disk_is_said_with_where_and_what_to_do():
    import errno

    from alignlab.cli import _disk_problem

    line = _disk_problem(OSError(errno.ENOSPC, "No space left on device", "/data/runs/x/metrics.jsonl"))
    assert "no space left" in line and "/data/runs/x/metrics.jsonl" in line and "--resume" in line
    assert "not allowed to write" in _disk_problem(OSError(errno.EROFS, "Read-only file system", "/ro/x"))
    assert _disk_problem(OSError(errno.ENOENT, "No such file")) is None


def test_a_live_run_is_not_deleted_or_resumed_under_another_process(tmp_path):
    import os
    import socket

    from alignlab.rundir import refuse_if_live

    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(AlignlabError, match="is still training"):
        refuse_if_live(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"status": "done", "pid": os.getpid(), "host": socket.gethostname()}))
    refuse_if_live(tmp_path)


def test_two_claims_on_one_name_get_two_directories(tmp_path):
    from alignlab.rundir import new_run_dir

    first, second = new_run_dir(tmp_path, "dpo", "x"), new_run_dir(tmp_path, "dpo", "x")
    assert first.name == "x" and second.name == "x-2"


def test_a_damaged_run_json_is_one_line_naming_it(tmp_path):
    """`generate --run X` on a truncated run.json said `JSONDecodeError: Unterminated string` and no file."""
    from alignlab.errors import AlignlabError
    from alignlab.rundir import run_base

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "run.json").write_text('{"model": "smol')
    with pytest.raises(AlignlabError, match=r"x/run.json cannot be read"):
        run_base(tmp_path / "x")
    (tmp_path / "x" / "run.json").write_text('{"method": "dpo"}')
    with pytest.raises(AlignlabError, match="names no base model"):
        run_base(tmp_path / "x")


def test_a_seed_out_of_range_is_refused_with_the_config():
    """--seed -1 failed in transformers after the run directory existed (a failed run left behind)."""
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.errors import AlignlabError

    with pytest.raises(AlignlabError, match="train.seed"):
        apply_overrides(ProjectConfig(), {"train.seed": -1})


def test_a_run_name_is_found_in_the_commands_project(tmp_path, monkeypatch):
    """`alignlab train dpo -p p1 --from t1` from outside p1 said "run directory not found: t1"."""
    from alignlab.errors import AlignlabError
    from alignlab.rundir import check_run_dir

    run = tmp_path / "p1" / "runs" / "t1"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert check_run_dir("t1", runs_dir=tmp_path / "p1" / "runs") == run
    with pytest.raises(AlignlabError, match="run directory not found: t1"):
        check_run_dir("t1")  # no project here, none named


def test_a_run_recorded_with_the_projects_relative_model_path_is_the_same_base(tmp_path):
    """alignlab.yaml's relative model paths are now resolved against the project; a run recorded before holds the
    path as written, and `--from` it was refused as trained on another model."""
    from alignlab.config import CONFIG_NAME
    from alignlab.train.engine import _same_model

    (tmp_path / CONFIG_NAME).write_text("model: models/tiny\n")
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    run = tmp_path / "runs" / "old"
    run.mkdir(parents=True)
    assert _same_model("models/tiny", str(tmp_path / "models" / "tiny"), run)
    assert not _same_model("models/other", str(tmp_path / "models" / "tiny"), run)
    assert _same_model("smollm2-135m", "smollm2-135m", run) and not _same_model("smollm2-135m", "other", run)

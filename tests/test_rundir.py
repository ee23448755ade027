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

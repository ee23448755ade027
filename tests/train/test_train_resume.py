"""`alignlab train METHOD --resume RUN` on a run whose records changed or were damaged since it stopped, and what a
resumed run records: the same counts as an uninterrupted run, the environment it started in."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from alignlab import rundir
from alignlab.errors import AlignlabError
from alignlab.train import engine
import helpers
from helpers import cfg_for, one_error

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


def run_cli(monkeypatch, capsys, *args):
    return helpers.run_cli(monkeypatch, capsys, *args, with_stdout=True)


@pytest.fixture(scope="module")
def finished(tiny_model, tmp_path_factory):
    """An SFT run of 4 steps, a checkpoint every 2: what an uninterrupted run records."""
    d = tmp_path_factory.mktemp("resume")
    data = d / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Name a colour, #{i}.", "completion": "Blue. " * (1 + i % 3)})
                            + "\n" for i in range(8)))
    cfg = cfg_for(tiny_model, **{"train.max_steps": 4, "train.batch_size": 2, "train.save_steps": 2,
                                 "train.check_per_category": 0})
    return engine.run(engine.prepare("sft", cfg, str(data), d / "runs", name="whole"), str(data))


def interrupted(finished: Path, where: Path, data: Path | None = None) -> Path:
    """A copy of the run as a kill after its last checkpoint leaves it; ``data``: a copy of its data file to use."""
    run = where / "run"
    shutil.copytree(finished, run)
    info = json.loads((run / "run.json").read_text())
    info.update(status="interrupted", project=None)
    if data is not None:
        shutil.copy(info["data"], data)
        info["data"] = str(data)
    (run / "run.json").write_text(json.dumps(info))
    return run


def logged(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in rundir.read_jsonl(run / "metrics.jsonl") if "loss" in r}


def test_a_damaged_newest_checkpoint_falls_back_and_the_resume_counts_on(monkeypatch, capsys, finished, tmp_path):
    """A checkpoint's trainer_state.json cut short failed the resume with a raw JSONDecodeError (run marked failed);
    a resumed run's `tokens` and SFT's `num_tokens` started again from 0 (779 where an uninterrupted run logged 5522);
    env.json was rewritten, so `alignlab runs` listed the run by its resume and the start's versions were lost."""
    run = interrupted(finished, tmp_path)
    state = run / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    state.write_text(state.read_text()[:100])
    code, lines = run_cli(monkeypatch, capsys, "train", "sft", "--resume", str(run))
    assert code in (0, None), lines
    assert "resuming from checkpoint-2 (step 2) instead" in " ".join(" ".join(lines).split()), lines
    whole, resumed = logged(finished), logged(run)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step]["tokens"] == whole[step]["tokens"] > whole[2]["tokens"] > 0
        assert resumed[step]["num_tokens"] == whole[step]["num_tokens"]
    assert rundir.read_run(run)["final"]["tokens"] == rundir.read_run(finished)["final"]["tokens"]
    before, after = (json.loads((r / "env.json").read_text()) for r in (finished, run))
    assert {k: after[k] for k in before} == before and len(after["resumed"]) == 1
    assert after["resumed"][0]["versions"] == before["versions"]


def test_a_resume_refuses_a_data_file_that_changed(monkeypatch, capsys, finished, tmp_path):
    """The data file replaced with other rows: the resume trained on them to 'done', run.json's rows overwritten."""
    data = tmp_path / "mine.jsonl"
    run = interrupted(finished, tmp_path, data=data)
    data.write_text(data.read_text().replace("Blue", "Green"))
    code, lines = run_cli(monkeypatch, capsys, "train", "sft", "--resume", str(run))
    assert code == 2 and f"{data} changed since run {run} started" in one_error(lines), lines
    assert rundir.read_run(run)["status"] == "interrupted"
    # a run recorded before run.json kept the digest: nothing new is said
    info = rundir.read_run(run)
    del info["data_sha256"]
    (run / "run.json").write_text(json.dumps(info))
    engine.prepare("sft", rundir.recorded_config(run), str(data), tmp_path, run_dir=run, resumed=True)


def test_damaged_records_are_one_line_naming_the_file(monkeypatch, capsys, finished, tmp_path):
    """No config.yaml said `run alignlab init DIR first`; run.json without `data` gave a raw KeyError; a checkpoint
    without its weights (and none before it) a ValueError after the model had loaded, the run marked failed."""
    run = interrupted(finished, tmp_path)
    (run / "config.yaml").rename(tmp_path / "config.yaml")
    code, lines = run_cli(monkeypatch, capsys, "train", "sft", "--resume", str(run))
    assert code == 2 and f"{run / 'config.yaml'} is missing" in one_error(lines), lines
    (tmp_path / "config.yaml").rename(run / "config.yaml")
    info = rundir.read_run(run)
    (run / "run.json").write_text(json.dumps({k: v for k, v in info.items() if k != "data"}))
    code, lines = run_cli(monkeypatch, capsys, "train", "sft", "--resume", str(run))
    assert code == 2 and f"{run / 'run.json'} records no data file" in one_error(lines), lines
    (run / "run.json").write_text(json.dumps(info))
    for step in (2, 4):
        (run / "checkpoints" / f"checkpoint-{step}" / "adapter_model.safetensors").unlink()
    code, lines = run_cli(monkeypatch, capsys, "train", "sft", "--resume", str(run))
    assert code == 2 and "checkpoint-4 holds no weights" in one_error(lines), lines
    assert rundir.read_run(run)["status"] == "interrupted"


def test_checkpoints_of_sharded_runs_are_resumed_from(finished, tmp_path, capsys):
    """Under FSDP with SHARDED_STATE_DICT save_model writes no weights file: the weights are in pytorch_model_fsdp_0/
    (torch.distributed.checkpoint's files), DeepSpeed's in global_stepN/; every such checkpoint counted as damaged and
    the resume was refused. A sharded save cut short (no .metadata, which is written last) is still passed over."""
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import load_file

    run = interrupted(finished, tmp_path)
    ckpts = run / "checkpoints"
    for step in (2, 4):
        weights = ckpts / f"checkpoint-{step}" / "adapter_model.safetensors"
        state = load_file(str(weights))
        weights.unlink()
        if step == 4:  # FSDP's form, written in one process as accelerate writes it in each
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
                sharded = ckpts / "checkpoint-4" / "pytorch_model_fsdp_0"
                dcp.save({"model": state}, storage_writer=dcp.FileSystemWriter(sharded))
        else:  # DeepSpeed's
            (ckpts / "checkpoint-2" / "global_step2").mkdir()
            torch.save({"module": state}, ckpts / "checkpoint-2" / "global_step2" / "mp_rank_00_model_states.pt")
    assert engine.last_checkpoint(ckpts) == str(ckpts / "checkpoint-4")
    (ckpts / "checkpoint-4" / "pytorch_model_fsdp_0" / ".metadata").unlink()
    assert engine.last_checkpoint(ckpts) == str(ckpts / "checkpoint-2")
    assert "resuming from checkpoint-2 (step 2) instead" in " ".join(capsys.readouterr().err.split())


def test_save_only_model_is_refused(tiny_model, finished):
    """It left the optimizer and scheduler out of each checkpoint: a resume restarted AdamW and the schedule."""
    data = rundir.read_run(finished)["data"]
    cfg = cfg_for(tiny_model, **{"train.trainer_overrides": {"save_only_model": True}})
    with pytest.raises(AlignlabError, match="save_only_model leaves the optimizer"):
        engine.prepare("sft", cfg, data, finished.parent, run_dir=Path(os.devnull))

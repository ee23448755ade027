"""--report-to: a tracker gets every logged step; one that is missing or unknown is refused before the run starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PY = sys.executable


def _cli(*args, cwd):
    env = dict(os.environ, ALIGNLAB_QUIET="1", HF_HUB_OFFLINE="1")
    return subprocess.run([PY, "-m", "alignlab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _pairs(path: Path) -> Path:
    rows = [{"prompt": f"How long do I boil egg {i}?", "chosen": "Seven minutes, obviously.",
             "rejected": "About seven minutes, then cool it."} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _args(tiny_model, data):
    return ["train", "dpo", "--model", tiny_model, "--data", str(data), "--max-steps", "3", "--batch-size", "2",
            "--lr", "5e-3", "--set", "train.sample_prompts=0", "--set", "train.check_per_category=0"]


def test_tensorboard_gets_the_runs_loss_at_every_step(tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = _cli(*_args(tiny_model, _pairs(tmp_path / "pairs.jsonl")), "--report-to", "tensorboard", "--name", "tb",
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "runs" / "tb"
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = events.Scalars("train/loss")
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in losses] == [r["step"] for r in logged if "loss" in r] == [1, 2, 3]
    assert [round(e.value, 4) for e in losses] == [round(r["loss"], 4) for r in logged if "loss" in r]
    assert "train/rewards/margins" in events.Tags()["scalars"]


def test_a_missing_or_unknown_tracker_is_one_line_and_no_run_is_left_running(tiny_model, tmp_path):
    data = _pairs(tmp_path / "pairs.jsonl")
    for tracker, expect in (("wandb", "needs the 'wandb' package"), ("tensorbored", "unknown tracker 'tensorbored'")):
        out = _cli(*_args(tiny_model, data), "--report-to", tracker, "--name", tracker, cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        errors = [x for x in out.stderr.splitlines() if x.startswith("error")]
        assert len(errors) == 1 and expect in errors[0] and "Traceback" not in out.stderr, out.stderr
        assert not (tmp_path / "runs" / tracker / "run.json").exists()  # refused before the run directory says 'running'


def test_ppo_refuses_a_tracker_it_cannot_feed(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say hi {i}"}) + "\n" for i in range(4)))
    out = _cli("train", "ppo", "--model", tiny_model, "--data", str(prompts), "--max-steps", "1",
               "--report-to", "tensorboard", cwd=tmp_path)
    assert out.returncode == 2 and "reports to no tracker" in out.stderr, out.stderr

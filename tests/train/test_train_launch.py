"""`alignlab train --processes N` as a command: stopping it stops its workers, a run stopped before it began leaves
nothing behind, and a failed process is one line, not torchrun's traceback. Real torchrun, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil

from helpers import write_pairs


def _start(tiny_model, tmp_path, name, steps):
    data = write_pairs(tmp_path / "pairs.jsonl")
    return subprocess.Popen(
        [sys.executable, "-m", "alignlab", "train", "dpo", "--model", tiny_model, "--data", str(data), "-b", "2",
         "--max-steps", str(steps), "--set", "train.sample_prompts=0", "--set", "train.check_per_category=0",
         "--processes", "2", "--name", name],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_stopping_the_command_stops_its_workers_and_marks_the_run(tiny_model, tmp_path):
    """SIGTERM to the command alone (kill, a scheduler): it ended, and torchrun and both workers trained on."""
    proc = _start(tiny_model, tmp_path, "long", 100_000)
    metrics = tmp_path / "runs" / "long" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    assert metrics.exists(), "the run never logged a step"
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 3  # torchrun and two workers
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [p.cmdline() for p in alive]
    assert proc.returncode == 128 + signal.SIGTERM
    assert json.loads((tmp_path / "runs" / "long" / "run.json").read_text())["status"] == "interrupted"
    assert "--resume runs/long" in " ".join(err.split()) and "Traceback" not in err


def test_a_run_stopped_before_it_began_leaves_no_directory(tiny_model, tmp_path):
    """Ctrl-C while the workers start: an empty runs/NAME was left, which --name refused and --resume could not use."""
    proc = _start(tiny_model, tmp_path, "early", 4)
    for line in proc.stderr:  # the launch line comes just before torchrun starts
        if "launching 2 processes" in line:
            break
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT
    assert not (tmp_path / "runs" / "early").exists()


def test_a_failed_process_is_one_line(tmp_path):
    script = tmp_path / "work.py"
    script.write_text("import os, sys\nsys.exit(3 if os.environ['RANK'] == '1' else 0)\n")
    done = subprocess.run([sys.executable, "-m", "alignlab.train.launch", "--standalone", "--nproc_per_node=2",
                           str(script)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 1
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert lines == ["error: process 1 of 2 exited with code 3, so the run stopped (its own message, if it wrote one, "
                     "is above)"], done.stderr


def _grpo_in_two_processes(tiny_model, tmp_path, reward_body: str, *flags: str) -> subprocess.CompletedProcess:
    """`alignlab train grpo --processes 2` on 8 prompts with one reward component ``rew.py:reward`` whose body (it
    sees ``os``) is ``reward_body``: a real torchrun, its output captured."""
    (tmp_path / "alignlab.yaml").write_text(f"model: {tiny_model}\n")
    (tmp_path / "rew.py").write_text("import os\n\ndef reward(prompts, completions, **kw):\n" + reward_body)
    (tmp_path / "rewards.yaml").write_text("components:\n  - {name: boom, fn: rew.py:reward}\n")
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"Say hi {i}"}) + "\n" for i in range(8)))
    return subprocess.run(
        [sys.executable, "-m", "alignlab", "train", "grpo", "--data", "p.jsonl", "--rewards", "rewards.yaml",
         "--set", "train.sample_prompts=0", "--set", "train.check_per_category=0",
         "--set", "online.max_completion_length=8", "--processes", "2", *flags],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_a_process_that_fails_is_the_one_named(tiny_model, tmp_path):
    """Rank 1's reward raises: torchrun then stops rank 0, and its summary named rank 0 (the lowest rank), whose own
    line was gloo's "Connection closed by peer"."""
    done = _grpo_in_two_processes(tiny_model, tmp_path, "    if os.environ.get('RANK') == '1':\n"
                                  "        raise ValueError('boom in rank 1')\n    return [0.5] * len(completions)\n",
                                  "-b", "2", "--max-steps", "2")
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert any("raised ValueError: boom in rank 1" in x for x in errors), errors
    assert errors[-1].startswith("error: process 1 of 2 exited with code 2"), errors
    assert not any("closed by peer" in x for x in errors), errors


def test_a_process_killed_by_a_signal_is_the_cause_not_its_peer():
    """An out-of-memory kill (-9) of one process, then its peer exiting with PEER_STOPPED: the kill is the cause
    (signal deaths were all passed over, and the tie on whole-second timestamps named the peer)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from alignlab.errors import PEER_STOPPED
    from alignlab.train.launch import _cause

    err = ChildFailedError("x", {0: ProcessFailure(0, 1, PEER_STOPPED, "/nonexistent"),
                                 1: ProcessFailure(1, 2, -9, "/nonexistent")})
    assert _cause(err)[0] == 1
    stopped = ChildFailedError("x", {0: ProcessFailure(0, 1, -15, "/nonexistent"), 1: ProcessFailure(1, 2, 2, "/x")})
    assert _cause(stopped)[0] == 1


def test_a_reward_scored_on_one_process_only_is_a_scored_first_batch(tiny_model, tmp_path):
    """Each process scores its own share of the batch: a component that applies to rank 0's prompts only stopped the
    run as 'returned None for all completions of the first batch', which the same batch in one process trained on."""
    done = _grpo_in_two_processes(tiny_model, tmp_path, "    if os.environ.get('RANK') == '1':\n"
                                  "        return [None] * len(completions)\n"
                                  "    return [0.5 + 0.1 * i for i in range(len(completions))]\n",
                                  "-b", "1", "--max-steps", "1", "--set", "online.num_generations=2", "--name", "g")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "runs" / "g" / "run.json").read_text())["status"] == "done"


def test_a_launcher_killed_by_a_signal_exits_128_plus_it():
    """A Ctrl-C that reached the launcher while Python was still starting killed it outright (returncode -2), and the
    command exited 254 (sys.exit(-2)); it exits 130, as a shell reports a Ctrl-C."""
    from alignlab.cli.train import _supervise

    dies = ("import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGINT)")
    assert _supervise([sys.executable, "-c", dies], dict(os.environ)) == 128 + signal.SIGINT
    assert _supervise([sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ)) == 3

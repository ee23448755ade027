"""Resume that provably resumes: DPO training on the tiny model is SIGKILLed at random moments (every other
kill lands while a checkpoint is being written), and each `alignlab train dpo --resume` must complete,
continue from the checkpoint (a `resumed` record at the checkpoint's step, then only later steps: a restart
from scratch would log step 1 again) and end at the adapter of an uninterrupted run within 1e-5.

Every run is the real command (``alignlab.cli.main`` with its argv) in a process forked from a driver that
imported the libraries once, so a kill is a real SIGKILL of a training process without paying Python's
import time for each of the 2 x kills + 1 processes. The driver never runs torch code (adapters are compared
with numpy), so forking it is safe.

ALIGNLAB_RESUME_KILLS sets the number of kills (default 3; the README gives the measured figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

KILLS = int(os.environ.get("ALIGNLAB_RESUME_KILLS", "3"))
STEPS = 8

DRIVER = textwrap.dedent('''
    import json, os, random, signal, sys, time
    from pathlib import Path

    import numpy as np
    from safetensors.numpy import load_file

    import alignlab.cli as cli  # every verb module, and through them the training stack
    import alignlab.train.engine, alignlab.train.preference  # noqa: F401 - imported once, before any fork

    tiny, data, root, kills, steps, seed = sys.argv[1:7]
    kills, steps, root = int(kills), int(steps), Path(root)
    ARGS = ["train", "dpo", "--model", tiny, "--data", data, "--max-steps", str(steps), "--batch-size", "2",
            "--lr", "5e-3", "--set", "train.sample_prompts=0", "--set", "train.save_steps=1",
            "--set", "train.check_per_category=0"]

    def start(argv, log):
        """Fork a child that runs the command `alignlab *argv` (its exit code is the child's)."""
        pid = os.fork()
        if pid == 0:
            fd = os.open(str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(root)
            sys.argv = ["alignlab", *argv]
            code = 0
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        return pid

    def wait(pid):
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def adapter(run):
        return load_file(str(run / "adapter" / "adapter_model.safetensors"))

    out = {"trials": []}
    assert wait(start([*ARGS, "--name", "full"], root / "full.log")) == 0, (root / "full.log").read_text()[-3000:]
    reference = adapter(root / "runs" / "full")
    rng = random.Random(int(seed))
    for i in range(kills):
        name, during_write = f"killed-{i}", i % 2 == 1
        run, log = root / "runs" / name, root / f"{name}.log"
        pid = start([*ARGS, "--name", name], log)
        ckpts, target = run / "checkpoints", rng.randint(1, steps - 2)
        where, t0 = "after the run ended", time.time()
        while time.time() - t0 < 900:
            if os.waitpid(pid, os.WNOHANG)[0]:
                pid = None
                break
            done = list(ckpts.glob("checkpoint-*")) if ckpts.is_dir() else []
            staging = list((ckpts / ".staging").glob("checkpoint-*")) if (ckpts / ".staging").is_dir() else []
            if during_write and done and staging:  # a checkpoint is being written right now
                where = f"while writing {staging[0].name}"
                break
            if not during_write and any(int(p.name.split("-")[1]) >= target for p in done):
                # somewhere in the next step or its checkpoint: up to one step's time as measured so far (a fixed 1.5 s
                # outlasted the run's last two steps on a fast machine, and the kill found a finished run)
                reached = max(int(p.name.split("-")[1]) for p in done)
                time.sleep(rng.uniform(0, (time.time() - t0) / (reached + 1)))
                where = f"at checkpoint-{target} + a random delay"
                break
            time.sleep(0.002)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait(pid)
        status = json.loads((run / "run.json").read_text()).get("status")
        trial = {"name": name, "killed": where, "status_after_kill": status,
                 "adapter_after_kill": (run / "adapter").exists()}
        if status == "done":  # the run beat the kill: nothing to resume
            out["trials"].append(trial)
            continue
        trial["resume_exit"] = wait(start(["train", "dpo", "--resume", str(run)], log))
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        marks = [k for k, r in enumerate(records) if r.get("event") == "resumed"]
        trial["resumed_at"] = [records[k]["step"] for k in marks]
        trial["steps_after_mark"] = [r["step"] for r in records[marks[-1] + 1:] if "loss" in r] if marks else None
        trial["loss_steps"] = [r["step"] for r in records if "loss" in r]
        if trial["resume_exit"] == 0:
            got = adapter(run)
            trial["max_diff"] = float(max(np.abs(reference[k] - got[k]).max() for k in reference))
        else:
            trial["log"] = log.read_text()[-2000:]
        out["trials"].append(trial)
    print(json.dumps(out))
''')


@pytest.mark.skipif(sys.platform == "win32", reason="fork and SIGKILL")
@pytest.mark.timeout(600 + 240 * KILLS)
def test_kills_at_random_moments_then_resume_matches_uninterrupted_run(tiny_model, tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"How long do I boil egg {i}?", "chosen": "Seven minutes, obviously." + " Truly." * (i % 3),
             "rejected": "About seven minutes, then cool it." + " Enjoy." * (i % 2)} for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = dict(os.environ, ALIGNLAB_QUIET="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    seed = os.environ.get("ALIGNLAB_RESUME_SEED", "0")
    proc = subprocess.run([sys.executable, "-c", DRIVER, tiny_model, str(data), str(tmp_path), str(KILLS), str(STEPS),
                           seed], env=env, capture_output=True, text=True, timeout=600 + 240 * KILLS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = json.loads(proc.stdout.strip().splitlines()[-1])["trials"]
    resumed = [t for t in trials if t["status_after_kill"] != "done"]
    for t in trials:
        print(t)
    for t in resumed:
        assert t["status_after_kill"] == "running" and not t["adapter_after_kill"], t
        assert t["resume_exit"] == 0, t
        (at,) = t["resumed_at"]  # exactly one resume, from a checkpoint
        assert at >= 1 and t["steps_after_mark"] == list(range(at + 1, STEPS + 1)), t  # not restarted at step 1
        assert t["loss_steps"] == list(range(1, STEPS + 1)), t  # one record per step, the killed attempt's dropped
        assert t["max_diff"] < 1e-5, t
    assert len(resumed) >= max(1, (3 * KILLS) // 4)  # a kill that lands after the last step finds a finished run
    assert any(t["killed"].startswith("while writing") for t in resumed) or KILLS < 2
    print(f"{len(resumed)} of {KILLS} kills resumed; max |adapter diff| {max(t['max_diff'] for t in resumed):.2e}")


def test_sigterm_marks_the_run_interrupted_and_says_how_to_go_on(tiny_model, tmp_path):
    """kill, timeout and schedulers send SIGTERM: the run stayed 'running' in run.json."""
    import json
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"answer {i}"}) + "\n" for i in range(8)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignlab", "train", "sft", "--model", tiny_model, "--data", str(data), "--name", "t",
         "--max-steps", "100000", "--batch-size", "2", "--set", "train.sample_prompts=0",
         "--set", "train.check_per_category=0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    record = tmp_path / "runs" / "t" / "run.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (record.is_file() and '"running"' in record.read_text()):
        time.sleep(0.5)
    time.sleep(3)  # into the training loop
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert json.loads(record.read_text())["status"] == "interrupted", err[-2000:]
    assert "alignlab train sft --resume runs/t" in " ".join(err.split()) and proc.returncode == 143, err[-2000:]

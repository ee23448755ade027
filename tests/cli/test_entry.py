"""The console script (`alignlab`, `python -m alignlab`) leaves with os._exit after a command, skipping the
interpreter's teardown. What a normal exit does first must still happen: other threads finish, exit handlers run,
output reaches the reader, the exit code is the command's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def run_entry(tmp_path, argv, before=""):
    """``entry()`` in a fresh interpreter with ``argv``, after the Python in ``before``."""
    script = textwrap.dedent(before) + textwrap.dedent(f"""
        import sys
        from alignlab.cli import entry
        sys.argv = ["alignlab", *{argv!r}]
        entry()
        raise AssertionError("entry() returned")
        """)
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_a_command_writes_its_files_and_its_output(tmp_path):
    done = subprocess.run([sys.executable, "-m", "alignlab", "init", "p"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("created p/") and "next: cd p && alignlab recipe" in done.stdout
    assert "model:" in (tmp_path / "p" / "alignlab.yaml").read_text()
    rows = (tmp_path / "p" / "data" / "pairs.jsonl").read_text().splitlines()
    assert len(rows) == 600 and rows[-1].endswith("}")  # all of it, not a cut buffer


def test_an_error_keeps_its_line_and_exit_code(tmp_path):
    done = subprocess.run([sys.executable, "-m", "alignlab", "train", "nope"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: unknown method 'nope'")
    usage = subprocess.run([sys.executable, "-m", "alignlab", "train", "dpo", "--seed", "x"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and "--seed" in usage.stderr


def test_exit_handlers_and_other_threads_finish_first(tmp_path):
    done = run_entry(tmp_path, ["init", "p"], before=f"""
        import atexit, threading, time
        def late():
            time.sleep(0.5)
            open({str(tmp_path / "thread")!r}, "w").write("thread done")
        threading.Thread(target=late).start()
        atexit.register(lambda: open({str(tmp_path / "atexit")!r}, "w").write("handler ran"))
        """)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "thread").read_text() == "thread done"
    assert (tmp_path / "atexit").read_text() == "handler ran"


def test_a_text_exit_code_is_printed_and_becomes_1(tmp_path):
    done = run_entry(tmp_path, ["runs"], before="""
        import alignlab.cli
        def stop():
            raise SystemExit("stopped: the reason")
        alignlab.cli.main = stop
        """)
    assert done.returncode == 1
    assert done.stderr.strip() == "stopped: the reason"


def test_under_a_profiler_or_debugger_it_exits_the_normal_way(monkeypatch):
    """os._exit would skip what `python -m cProfile -o …`, a debugger or coverage write after the command."""
    import pytest

    from alignlab.cli import entry

    monkeypatch.setattr(sys, "argv", ["alignlab", "runs", "--help"])
    previous = sys.gettrace()
    sys.settrace(lambda *args: None)
    try:
        with pytest.raises(SystemExit) as done:
            entry()
    finally:
        sys.settrace(previous)
    assert done.value.code == 0


def test_a_profile_written_after_the_command(tmp_path):
    out = tmp_path / "prof.out"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "alignlab", "init", "p"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 1000


def test_a_process_whose_peer_died_says_so(monkeypatch):
    from alignlab.cli import _last_resort

    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert _last_resort(gloo) == "process 0 stopped because another process of the run did (see its line)"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert _last_resort(gloo).startswith("RuntimeError: [../third_party/gloo")


def test_a_second_ctrl_c_while_waiting_for_threads_leaves_without_a_traceback(tmp_path):
    """Ctrl-C while the exit waits for another thread printed a KeyboardInterrupt traceback from thread.join."""
    import signal
    import time

    mark = tmp_path / "joining"
    script = textwrap.dedent(f"""
        import sys, threading, time
        def linger():  # a thread that outlives the command; says when the exit is waiting for it
            main = threading.main_thread().ident
            while True:
                frame, names = sys._current_frames().get(main), set()
                while frame is not None:
                    names.add(frame.f_code.co_name)
                    frame = frame.f_back
                if "_leave" in names:
                    open({str(mark)!r}, "w").write("joining")
                    threading.Event().wait()
                time.sleep(0.02)
        threading.Thread(target=linger).start()
        from alignlab.cli import entry
        sys.argv = ["alignlab", "init", "p"]
        entry()
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "interrupted"


def test_ctrl_c_while_the_commands_import_is_one_line(tmp_path):
    """Ctrl-C in the first quarter second (alignlab.cli importing its command modules) printed a 54-line import
    traceback. The console script pyproject.toml names, with a real SIGINT landing inside that import."""
    import re
    from pathlib import Path

    scripts = (Path(__file__).parents[2] / "pyproject.toml").read_text().split("[project.scripts]")[1]
    module, func = re.search(r'^alignlab = "([\w.]+):(\w+)"', scripts, re.M).groups()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal, sys

        class CtrlC:  # presses Ctrl-C as the train command's module starts to import
            def find_spec(self, name, path=None, target=None):
                if name == "alignlab.cli.train":
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, CtrlC())
        sys.argv = ["alignlab", "runs"]
        from {module} import {func}
        {func}()
        """)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 130 and done.stderr == "interrupted\n", done.stderr


def test_sigterm_in_training_is_the_runs_own_line_and_exit_143(tmp_path, tiny_model, monkeypatch, capsys):
    """SIGTERM (kill, a timeout) on `alignlab train` exited 130, as Ctrl-C reads, and a bare "interrupted" came after
    the run's own "interrupted: continue with ... --resume" line."""
    import json
    import signal
    import threading
    import time

    from helpers import run_cli, write_pairs

    data = write_pairs(tmp_path / "pairs.jsonl")
    metrics = tmp_path / "runs" / "t" / "metrics.jsonl"

    over = threading.Event()

    def kill_once_training():
        while not over.is_set() and not (metrics.is_file() and metrics.read_text().strip()):
            time.sleep(0.02)
        if not over.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    late = []  # a SIGTERM after training restored this handler lands here, not on pytest
    before = signal.signal(signal.SIGTERM, lambda *args: late.append(args))
    killer = threading.Thread(target=kill_once_training, daemon=True)
    killer.start()
    try:
        code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--model", tiny_model, "--data", str(data), "-b",
                              "2", "--max-steps", "100000", "--set", "train.sample_prompts=0", "--set",
                              "train.check_per_category=0", "--name", "t", cwd=tmp_path)
    finally:
        over.set()
        killer.join(5)
        signal.signal(signal.SIGTERM, before)
    assert not late and code == 143, (code, lines)
    stops = [x for x in lines if x.startswith("interrupted")]
    assert stops == ["interrupted: continue with `alignlab train dpo --resume runs/t`"], lines
    assert json.loads((tmp_path / "runs" / "t" / "run.json").read_text())["status"] == "interrupted"

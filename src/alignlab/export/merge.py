"""Fold a run's LoRA adapter into its base: a standalone safetensors model that plain transformers loads."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.fsutil import replace_dir


def run_source(run: str | Path, model: str | None = None) -> tuple[Path, Path, str]:
    """(run or adapter directory, adapter directory, base model name) for a run directory or a bare adapter.

    A bare adapter (shared from elsewhere, no run.json) names its base in adapter_config.json; a hub id
    that is a registry entry's resolves to that entry offline (:func:`alignlab.models.registry.resolve_model`).
    ``model`` replaces the named base. A LoRA adapter's base must be on this machine unless ``model`` names it: a
    hub id missing from the cache would wait out the hub's retries (without internet) before failing.
    """
    path = Path(run)
    if (path / "run.json").is_file():
        from alignlab.rundir import Run

        found = Run(path)
        found.require_weights()
        found.require_chat_model()  # a reward model merged as a causal LM would lose its score head
        src, adapter, base, named_by = path, found.adapter_dir, found.base, path / "run.json"
    elif (path / "adapter_config.json").is_file():
        src, adapter, named_by = path, path, path / "adapter_config.json"
    elif (path / "adapter" / "adapter_config.json").is_file():
        src, adapter, named_by = path, path / "adapter", path / "adapter" / "adapter_config.json"
    else:
        raise AlignlabError(f"'{run}' is neither an alignlab run nor a PEFT adapter directory",
                            fix="pass runs/<id> (see `alignlab runs`)")
    if named_by.name == "adapter_config.json":
        base = json.loads(named_by.read_text())["base_model_name_or_path"]
    lora = (adapter / "adapter_config.json").is_file()
    if model is not None:
        if not lora:
            raise AlignlabError(f"--model is for a LoRA adapter; {src} is a full fine-tune, which holds its own weights",
                                fix="drop --model")
        return src, adapter, model
    from alignlab.models.registry import hub_id, on_this_machine

    if lora and not on_this_machine(base):
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hub = hub_id(base)
        fix = "pass --model with a local copy of it (a model directory)"
        raise AlignlabError(f"base model '{base}' named by {named_by.name} is not on this machine", where=str(named_by),
                            fix=fix + (f", or --model {base} to download it from the hub" if hub and not offline else ""))
    return src, adapter, base


def merge_to_dir(run: str | Path, out_dir: str | Path, force: bool = False, model: str | None = None) -> dict:
    """Write base + adapter, merged, with tokenizer and chat template, to ``out_dir`` (atomically); ``model``
    replaces the base the adapter names."""
    from alignlab.models.loading import load_tokenizer, trusts_remote_code

    src, adapter, base = run_source(run, model)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise AlignlabError(f"{out_dir} exists and is not empty", fix="pass another directory, or --force to replace it")
    trust = trusts_remote_code(src)  # a run trained on a model with custom code exports it the same way
    lora = (adapter / "adapter_config.json").is_file()
    tokenizer = load_tokenizer(base if lora else str(adapter), trust_remote_code=trust)
    if lora:
        merged = _merged_lora(base, adapter, trust, given=model is not None)
    elif (adapter / "model.safetensors").is_file() or (adapter / "config.json").is_file():
        merged = _load_fp32(str(adapter), str(adapter), trust)  # full FT
    else:
        raise AlignlabError(f"{adapter} holds neither a LoRA adapter nor a model", fix="check the run finished")
    merged.config.name_or_path = out_dir.name
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    from alignlab.fsutil import sweep_stale

    sweep_stale(out_dir.parent, f".{out_dir.name}-")  # a killed merge's leftovers
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        for_older_readers(tmp)
        from alignlab.export.card import write_model_card

        write_model_card(src, tmp, merged=True)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"dir": str(out_dir), "base": base, "parameters": sum(p.numel() for p in merged.parameters())}


def _merged_lora(base: str, adapter: Path, trust: bool, given: bool):
    """The base with the adapter folded in. An adapter that does not fit the base (another size) is one line naming
    both; LoRA on an embedding the base ties to its output layer is folded into an untied copy (see :func:`_untie`)."""
    import warnings

    from peft import PeftModel

    from alignlab.models.registry import resolve_model

    model = _load_fp32(resolve_model(base), base, trust)
    named = "--model" if given else next(f for f in (adapter.parent / "run.json", adapter / "adapter_config.json")
                                         if f.is_file())
    try:
        with warnings.catch_warnings():  # PEFT's advice on tied embeddings: _untie follows it
            warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
            model = PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError) as err:
        if "size mismatch" not in str(err) and "not found in the base model" not in str(err):
            raise
        raise AlignlabError(f"adapter {adapter} does not fit base '{base}' (named by {named}): {_mismatch(err)}",
                            fix="merge it into the model it was trained on (--model DIR)") from None
    _untie(model, adapter)
    return model.merge_and_unload()


def _load_fp32(path: str, name: str, trust: bool):
    """The causal LM at ``path`` in fp32, through the loader train and generate use: weights the files lack (which
    transformers drew at random, and the merged model kept), of other shapes, or cut short are one line, not exported."""
    import torch
    from transformers import AutoModelForCausalLM

    from alignlab.models.loading import _from_pretrained, _safetensors_only

    return _from_pretrained(AutoModelForCausalLM, path, name, dtype=torch.float32, trust_remote_code=trust,
                            **_safetensors_only(path, name))


def _mismatch(err: Exception) -> str:
    """The first shape mismatch in a state-dict error, in the base's own parameter names; else the error's first line."""
    found = re.search(r"size mismatch for (\S+?): copying a param with shape torch\.Size\((\[[^\]]*\])\) from checkpoint, "
                      r"the shape in current model is torch\.Size\((\[[^\]]*\])\)", str(err))
    if found is None:
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    name = re.sub(r"^base_model\.model\.", "", found.group(1)).replace(".default.", ".")
    return f"{name} is {found.group(2)} in the adapter but {found.group(3)} in the base"


def _untie(model, adapter: Path) -> None:
    """LoRA on an input embedding that the base shares with its output layer (tied word embeddings, as in SmolLM2 and
    Qwen2.5's small models): merged into the one shared matrix, the update would change both layers, while PEFT's
    base + adapter changes only the adapted one. The output layer gets its own copy first, and the merged model is
    saved untied. An adapter saved with PEFT's ``ensure_weight_tying`` adapts both as one: refused, as merging it
    counts the update twice."""
    import torch
    from peft.tuners.lora import LoraLayer

    inner = model.get_base_model()
    emb, head = inner.get_input_embeddings(), inner.get_output_embeddings()
    if head is None or not (isinstance(emb, LoraLayer) or isinstance(head, LoraLayer)):
        return
    emb_w, head_layer = getattr(emb, "base_layer", emb).weight, getattr(head, "base_layer", head)
    if head_layer.weight is not emb_w:
        return
    if json.loads((adapter / "adapter_config.json").read_text()).get("ensure_weight_tying"):
        raise AlignlabError("this adapter's LoRA on the tied embeddings (PEFT's ensure_weight_tying) cannot be merged: "
                            "PEFT folds it into the shared matrix twice", where=str(adapter / "adapter_config.json"),
                            fix="use it as an adapter over its base, or train it without LoRA on embed_tokens/lm_head")
    head_layer.weight = torch.nn.Parameter(emb_w.detach().clone())
    inner.config.tie_word_embeddings = False
    if hasattr(inner.config, "get_text_config"):
        inner.config.get_text_config().tie_word_embeddings = False


def legacy_rope_keys(config: dict) -> dict:
    """The rope keys transformers 4.x reads (``rope_theta``, ``rope_scaling``; Gemma 3's ``rope_local_base_freq``) from
    transformers 5's ``rope_parameters``, where config.json lacks them; {} for a config this cannot map."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict):
        return {}
    out = {}
    if any(isinstance(v, dict) for v in params.values()):  # per layer type: only Gemma 3's two kinds are known
        if set(params) != {"full_attention", "sliding_attention"}:
            return {}
        if (params["sliding_attention"] or {}).get("rope_theta") is not None:
            out["rope_local_base_freq"] = params["sliding_attention"]["rope_theta"]
        params = params["full_attention"] or {}
    if params.get("rope_theta") is not None:
        out["rope_theta"] = params["rope_theta"]
    if params.get("partial_rotary_factor") is not None:
        out["partial_rotary_factor"] = params["partial_rotary_factor"]
    if (params.get("rope_type") or params.get("type") or "default") != "default":
        out["rope_scaling"] = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
    return {k: v for k, v in out.items() if config.get(k) is None}


def for_older_readers(model_dir: Path) -> None:
    """transformers 5 writes rope settings only under ``rope_parameters`` and names its tokenizer class
    TokenizersBackend; transformers 4.x (which vLLM and many tools pin) then runs rope_theta 10000 and cannot load
    the tokenizer. The keys 4.x reads are added beside 5's, which 5 reads as the same settings."""
    from alignlab.fsutil import write_json

    config_file, tok_file = model_dir / "config.json", model_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    nested = config.get("text_config") if isinstance(config.get("text_config"), dict) else None
    extra, text_extra = legacy_rope_keys(config), legacy_rope_keys(nested) if nested is not None else {}
    if extra or text_extra:
        if text_extra:
            config["text_config"] = {**nested, **text_extra}
        write_json(config_file, {**config, **extra})
    if tok_file.is_file():
        tok = json.loads(tok_file.read_text(encoding="utf-8"))
        template = model_dir / "chat_template.jinja"
        before = dict(tok)
        if tok.get("tokenizer_class") == "TokenizersBackend":
            tok["tokenizer_class"] = "PreTrainedTokenizerFast"  # 4.x's name for the same tokenizers-backed class
        if "chat_template" not in tok and template.is_file():  # 4.x before 4.50 reads the template only from here
            tok["chat_template"] = template.read_text(encoding="utf-8")
        if tok != before:
            write_json(tok_file, tok)

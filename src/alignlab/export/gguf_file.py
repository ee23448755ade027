"""Write a merged model directory as a GGUF file that llama.cpp and Ollama load.

Follows llama.cpp's ``convert_hf_to_gguf.py`` for the llama and qwen2 architectures: tensor names from the
``gguf`` package's name map, llama's q/k projection rows permuted into llama.cpp's rotary layout (transformers
undoes the same permutation when it reads a GGUF; qwen2's are written as they are, with their biases), norms and other 1-D tensors in F32, the rest in F16 or Q8_0
(a tensor whose rows Q8_0 cannot split into 32-value blocks falls back to F16, as llama.cpp does),
the tied output matrix left out (llama.cpp reuses ``token_embd``), and Llama 3's rope scaling written as the
``rope_freqs`` tensor llama.cpp reads; other rope scalings are refused.

Tokenizer metadata: for a base that came from a GGUF file (the default model does), its ``tokenizer.*``
keys are copied unchanged; otherwise they are built from the Hugging Face tokenizer for byte-level BPE
tokenizers (``tokenizer.ggml.model = gpt2``), the way llama.cpp does. Where we depart: the pre-tokenizer
name is not found by llama.cpp's hash of a probe text but from the tokenizer itself (SmolLM's vocabulary:
``smollm``; Qwen2's and Llama 3's split patterns: ``qwen2`` and ``llama-bpe``; any other plain byte-level BPE: ``gpt-2``; else ``default``, with a
note in the summary).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from alignlab.errors import AlignlabError

QUANTS = ("f16", "q8_0")
ARCHITECTURES = {"llama": "LLAMA", "mistral": "LLAMA", "qwen2": "QWEN2"}  # HF model_type -> gguf.MODEL_ARCH member
# the pre-tokenizer splits of Qwen2's and Llama 3's tokenizer.json, and llama.cpp's names for them
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
               r"\s+(?!\S)|\s+")
LLAMA3_SPLIT = QWEN2_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")  # digits in threes
SPLITS = {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}


def _permute(weights, n_head: int, n_head_kv: int | None = None):
    """HF rotary (halves) -> llama.cpp rotary (interleaved pairs) row order of a q or k projection."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = weights.shape[0]
    return weights.reshape(n_head, 2, rows // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _rope_theta(config: dict) -> float | None:
    if config.get("rope_theta") is not None:
        return float(config["rope_theta"])
    params = config.get("rope_parameters") or {}
    return float(params["rope_theta"]) if params.get("rope_theta") is not None else None


def _rope_scaling(config: dict) -> dict:
    """The config's rope scaling parameters (``rope_scaling``, or transformers 5's ``rope_parameters``); {} if none."""
    for key in ("rope_scaling", "rope_parameters"):
        params = config.get(key) or {}
        if (params.get("rope_type") or params.get("type") or "default") != "default":
            return params
    return {}


def _check_rope(config: dict) -> None:
    params = _rope_scaling(config)
    kind = params.get("rope_type") or params.get("type") or "default"
    if kind == "llama3" and ARCHITECTURES[config["model_type"]] == "LLAMA":
        return  # Llama 3.1/3.2: llama.cpp reads it as a rope_freqs tensor (llama3_rope_factors)
    if kind != "default":
        raise AlignlabError(
            f"GGUF export does not handle rope scaling '{kind}' yet",
            fix="export --merged and convert it with llama.cpp's convert_hf_to_gguf.py",
        )


def llama3_rope_factors(config: dict):
    """Llama 3's frequency-dependent rope scaling as llama.cpp stores it: one divisor per rotary pair
    (``rope_freqs.weight``; llama.cpp divides each pair's frequency by it), computed the way
    convert_hf_to_gguf.py does: 1 for short wavelengths, ``factor`` for long ones, smoothed between."""
    import math

    import numpy as np

    params = _rope_scaling(config)
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    base = _rope_theta(config) or 10000.0
    factor, low, high = params.get("factor", 8.0), params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)
    old_context = params.get("original_max_position_embeddings", 8192)
    out = []
    for freq in 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim):
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            out.append(1.0)
        elif wavelen > old_context / low:
            out.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def _read_tensors(model_dir: Path):
    """(name, float32 numpy array) for every tensor in the directory's safetensors files."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise AlignlabError(f"no safetensors weights in {model_dir}", fix="export --merged first, or pass a merged model directory")
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for name in st.keys():
                yield name, st.get_tensor(name).float().numpy()


def _copy_tokenizer_fields(writer, source: Path) -> None:
    """Copy every ``tokenizer.*`` key of a GGUF file (tokens, types, merges, special ids, chat template)."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(source))
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            writer.add_key_value(key, list(field.contents()), vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), vtype)


def _pre_tokenizer(tok_json: dict, tokens: list[str]) -> tuple[str, str | None]:
    pre = tok_json.get("pre_tokenizer") or {}
    if tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] and len(tokens) == 49152:
        return "smollm", None
    splits = [p.get("pattern", {}).get("Regex") for p in pre.get("pretokenizers") or [] if p.get("type") == "Split"]
    if pre.get("type") == "Sequence" and len(splits) == 1 and splits[0] in SPLITS:
        return SPLITS[splits[0]], None
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2", None
    return "default", "pre-tokenizer not recognised: llama.cpp will split text with its default rules"


def check_tokenizer(model_dir: Path) -> dict:
    """The tokenizer.json of ``model_dir`` when GGUF export can lay it out (byte-level BPE), else one clear error."""
    tok_file = Path(model_dir) / "tokenizer.json"
    tok_json = json.loads(tok_file.read_text(encoding="utf-8")) if tok_file.is_file() else {}
    if (tok_json.get("model") or {}).get("type") != "BPE" or (tok_json.get("pre_tokenizer") or {}).get("type") not in (
        "ByteLevel",
        "Sequence",
    ):
        raise AlignlabError(
            "GGUF export builds tokenizer metadata only for byte-level BPE tokenizers (GPT-2 style); this model's is "
            "SentencePiece-style (Llama 2, Mistral) or unknown",
            where=str(model_dir),
            fix="export --merged and convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    return tok_json


def _hf_tokenizer_fields(writer, model_dir: Path, vocab_size: int) -> str | None:
    """llama.cpp's GPT-2 BPE vocabulary from a Hugging Face tokenizer; returns a note or None."""
    import gguf
    from transformers import AutoTokenizer

    tok_json = check_tokenizer(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added:
            special = decoder[i].special or (token.startswith("<|") and token.endswith("|>"))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(token)
    pre, note = _pre_tokenizer(tok_json, tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    return note


def check_architecture(config: dict) -> None:
    """Refuse, in one line, a model this writer cannot lay out the way llama.cpp reads it."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise AlignlabError(
            f"GGUF export supports {', '.join(sorted(ARCHITECTURES))} models; this one is '{model_type}'",
            fix="export --merged and convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    _check_rope(config)


def write_gguf(model_dir: str | Path, out_file: str | Path, quant: str = "f16", tokenizer_gguf: Path | None = None,
               name: str | None = None) -> dict:
    """Write ``model_dir`` (a merged safetensors model) to ``out_file`` atomically; returns a summary."""
    import gguf

    if quant not in QUANTS:
        raise AlignlabError(f"unknown GGUF quantization '{quant}'", fix="use one of: " + ", ".join(QUANTS))
    model_dir, out_file = Path(model_dir), Path(out_file)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    check_architecture(config)
    arch = getattr(gguf.MODEL_ARCH, ARCHITECTURES[config["model_type"]])
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), gguf.MODEL_ARCH_NAMES[arch])
    _write_hparams(writer, config, quant, name or model_dir.name)
    counts = _write_tensors(writer, model_dir, config, arch, quant)
    note = None
    if tokenizer_gguf is not None:
        _copy_tokenizer_fields(writer, tokenizer_gguf)
    else:
        note = _hf_tokenizer_fields(writer, model_dir, config["vocab_size"])
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out_file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "file": str(out_file),
        "bytes": out_file.stat().st_size,
        "quant": quant,
        "tensors": counts,
        "tokenizer": f"copied from {tokenizer_gguf.name}" if tokenizer_gguf else "built from the Hugging Face tokenizer",
        "note": note,
    }


def _write_hparams(writer, config: dict, quant: str, name: str) -> None:
    """The hyperparameters llama.cpp reads for llama and qwen2, from the Hugging Face config."""
    import gguf

    n_head = config["num_attention_heads"]
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // n_head
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(config.get("num_key_value_heads") or n_head)
    if (theta := _rope_theta(config)) is not None:
        writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(head_dim)
    if config.get("head_dim") and config["head_dim"] != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_tensors(writer, model_dir: Path, config: dict, arch, quant: str) -> dict[str, int]:
    """Every tensor under its GGUF name (llama's q/k rows permuted for llama.cpp's rope), quantized where it can be;
    returns how many tensors went out in each type."""
    import gguf
    import numpy as np

    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads") or n_head
    tied = bool(config.get("tie_word_embeddings", False))
    qtype = gguf.GGMLQuantizationType.F16 if quant == "f16" else gguf.GGMLQuantizationType.Q8_0
    names = gguf.get_tensor_name_map(arch, n_layers)
    counts: dict[str, int] = {}
    for hf_name, data in _read_tensors(model_dir):
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise AlignlabError(f"GGUF export: no GGUF name for tensor '{hf_name}'", where=str(model_dir))
        # biases too (Llama/Mistral with attention_bias): llama.cpp adds them before its rope, as its converter writes them
        if arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, n_head, n_head)
        elif arch == gguf.MODEL_ARCH.LLAMA and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, n_head, n_head_kv)
        kind = qtype
        if data.ndim <= 1 or new.endswith("_norm.weight") or not new.endswith(".weight"):
            kind = gguf.GGMLQuantizationType.F32
        try:
            packed = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), kind)
        except gguf.QuantError:
            kind = gguf.GGMLQuantizationType.F16
            packed = gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), kind)
        writer.add_tensor(new, packed, raw_dtype=kind)
        counts[kind.name] = counts.get(kind.name, 0) + 1
    if (_rope_scaling(config).get("rope_type") or _rope_scaling(config).get("type")) == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", llama3_rope_factors(config),
                          raw_dtype=gguf.GGMLQuantizationType.F32)
        counts["F32"] = counts.get("F32", 0) + 1
    return counts

"""Model shapes for planning: layers, widths, heads, vocabulary. No weights are needed, only a config.

A model is named by a bundled entry (``models.json``: facts from the published config.json files), a
hub id of a bundled entry, a local model directory, a ``config.json`` file, a GGUF file or ``ollama:NAME`` (the
shape from the GGUF metadata, as training converts it), or a hub id whose config.json is in the local Hugging Face
cache. Every field is checked: a shape of zero heads or a negative width would print a plan of nonsense.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from alignlab.errors import AlignlabError

HERE = Path(__file__).parent
MINILM_PARAMS = 22_713_216  # all-MiniLM-L6-v2, the default reward's diversity embedder


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    max_position: int | None = None  # the longest context it was trained for (max_position_embeddings), if known

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_linear_params(self) -> int:
        """Weights of one decoder layer's projections (q, k, v, o, gate, up, down), biases included."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.qkv_bias else 0)
        return attn + 3 * h * i

    @property
    def linear_params(self) -> int:
        """All decoder-layer projection weights: what a forward multiplies per token (embeddings excluded)."""
        return self.layers * self.layer_linear_params

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        """LM-head weights stored separately from the embeddings (0 when tied)."""
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def norm_params(self) -> int:
        return (2 * self.layers + 1) * self.hidden

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embed_params + self.head_params + self.norm_params

    def lora_params(self, r: int) -> int:
        """LoRA A and B matrices on all seven projections of every layer: r * (in + out) each."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        per_layer = r * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))
        return self.layers * per_layer

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def bundled() -> dict[str, dict]:
    data = json.loads((HERE / "models.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _whole(c: dict, key: str, name: str, default=None, gguf: dict | None = None) -> int:
    """``c[key]`` as a positive whole number (``default`` when absent or null); one clear error naming the field:
    the GGUF metadata key (``gguf``: config key -> GGUF key) when the shape came from a GGUF file, which has no
    config.json to correct."""
    value = c.get(key)
    label = (gguf or {}).get(key, key)
    source = f"the GGUF metadata of '{name}'" if gguf else f"config for '{name}'"
    if value is None:
        if default is None:
            raise AlignlabError(f"{source} lacks the decoder field '{label}'",
                                fix="pass a complete GGUF file of a decoder-only transformer" if gguf else
                                "pass the config.json of a decoder-only transformer (llama, qwen2, mistral, gemma, ...)")
        return default
    if isinstance(value, list) and value and len(set(map(str, value))) == 1:
        value = value[0]  # one value per layer, all alike: the model's
    if isinstance(value, list):
        raise AlignlabError(f"{source}: '{label}' holds a value per layer ({json.dumps(value)[:40]}); the planner "
                            "counts layers that are alike and does not support per-layer values",
                            fix="plan a model whose layers are alike, or count this one by hand")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
        raise AlignlabError(f"{source}: '{label}' is {json.dumps(value)[:40]}, not a positive whole number",
                            fix="use a complete, undamaged GGUF file of the model" if gguf else
                            f"correct '{key}' in the model's config")
    return int(value)


def from_config(config, name: str, gguf: dict | None = None) -> ModelShape:
    """A shape from a transformers config.json (text_config is used for multimodal configs); ``gguf``: the GGUF
    metadata key of each field, when the config was read from a GGUF file (errors name those)."""
    if not isinstance(config, dict):
        raise AlignlabError(f"the config of '{name}' is a JSON {type(config).__name__}, not an object",
                            fix="pass a model's config.json")
    c = config.get("text_config") or config
    if not isinstance(c, dict):
        raise AlignlabError(f"config for '{name}': 'text_config' is a {type(c).__name__}, not an object",
                            fix="pass a model's config.json")
    experts = next((c[k] for k in ("num_local_experts", "num_experts", "n_routed_experts") if c.get(k)), None)
    if experts:  # the dense arithmetic below would count one expert's weights of the many
        raise AlignlabError(f"'{name}' is a mixture-of-experts model ({experts} experts); the planner counts dense "
                            "models only", fix="plan a dense model of similar size, or count the experts' weights by hand")
    heads = _whole(c, "num_attention_heads", name, gguf=gguf)
    hidden = _whole(c, "hidden_size", name, gguf=gguf)
    try:
        longest = _whole(c, "max_position_embeddings", name, default=0) or None
    except AlignlabError:
        longest = None  # only a warning reads it
    return ModelShape(
        name=name,
        layers=_whole(c, "num_hidden_layers", name, gguf=gguf),
        hidden=hidden,
        intermediate=_whole(c, "intermediate_size", name, gguf=gguf),
        heads=heads,
        kv_heads=_whole(c, "num_key_value_heads", name, default=heads, gguf=gguf),
        head_dim=_whole(c, "head_dim", name, default=max(1, hidden // heads), gguf=gguf),
        vocab=_whole(c, "vocab_size", name, gguf=gguf),
        tied=bool(config.get("tie_word_embeddings", c.get("tie_word_embeddings", True))),
        qkv_bias=bool(c.get("attention_bias", False)) or c.get("model_type") == "qwen2",
        max_position=longest,
    )


def from_gguf(path: Path, name: str) -> ModelShape:
    """A shape from a GGUF file's metadata (``{arch}.block_count`` and the rest), without reading its weights: the
    LM head is tied when the file holds no ``output.weight``; q/k/v carry biases when ``blk.0.attn_q.bias`` exists.
    A split file is refused as training refuses it: its first part lacks the other parts' tensors (an untied
    model's ``output.weight`` among them), so it would be planned as another model."""
    from gguf import GGUFReader

    from alignlab.models.registry import refuse_split

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as err:
        raise AlignlabError(f"cannot read {path} as GGUF ({err})", fix="pass a complete .gguf model file") from err
    refuse_split(path)
    fields = reader.fields

    def get(key: str):
        field = fields.get(key)
        return None if field is None else field.contents()

    arch = get("general.architecture")
    tokens = fields.get("tokenizer.ggml.tokens")
    names = {t.name for t in reader.tensors}
    keys = {"num_hidden_layers": f"{arch}.block_count", "hidden_size": f"{arch}.embedding_length",
            "intermediate_size": f"{arch}.feed_forward_length", "num_attention_heads": f"{arch}.attention.head_count",
            "num_key_value_heads": f"{arch}.attention.head_count_kv", "head_dim": f"{arch}.attention.key_length",
            "vocab_size": f"{arch}.vocab_size", "max_position_embeddings": f"{arch}.context_length"}
    config = {k: get(g) for k, g in keys.items()}
    config.update({
        "model_type": arch,
        "vocab_size": config["vocab_size"] or (len(tokens.data) if tokens is not None else None),
        "num_local_experts": get(f"{arch}.expert_count"),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
    })
    return from_config(config, name, gguf=keys)


def _bundled_shape(key: str) -> ModelShape:
    d = bundled()[key]
    return ModelShape(
        name=key,
        layers=d["layers"],
        hidden=d["hidden"],
        intermediate=d["intermediate"],
        heads=d["heads"],
        kv_heads=d["kv_heads"],
        head_dim=d["head_dim"],
        vocab=d["vocab"],
        tied=d["tied"],
        qkv_bias=d.get("qkv_bias", False),
        max_position=d.get("max_position"),
    )


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def resolve_shape(name: str) -> ModelShape:
    """Registry/bundled name, bundled hub id, local directory, config.json, GGUF file or ollama:NAME, or a cached
    hub id."""
    table = bundled()
    key = name.lower()
    if key in table:
        return _bundled_shape(key)
    for k, d in table.items():
        if d.get("hub", "").lower() == key:
            return _bundled_shape(k)
    from alignlab.models.registry import gguf_source

    source = gguf_source(name)  # a registry entry's file, a .gguf path, or the blob of ollama:NAME (or its error)
    if source is not None:
        return from_gguf(source, name)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.is_file():
        if _is_gguf(path):
            return from_gguf(path, name)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AlignlabError(f"cannot read {path} as JSON ({type(err).__name__})",
                                fix="pass a model's config.json, a model directory or a .gguf file") from err
        return from_config(config, name)
    if path.exists():
        raise AlignlabError(f"'{name}' is not a model directory (no config.json)", fix="pass a directory with config.json")
    if name.count("/") == 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
        except Exception:  # noqa: BLE001 - any hub-library failure means "not cached"
            cached = None
        if isinstance(cached, str):
            return from_config(json.loads(Path(cached).read_text()), name)
    raise AlignlabError(
        f"unknown model '{name}'",
        fix="use one of " + ", ".join(table) + ", a local model directory, a config.json or .gguf file, or ollama:NAME",
    )

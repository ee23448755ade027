"""Model shapes for planning: layers, widths, heads, vocabulary. No weights are needed, only a config.

A model is named by a bundled entry (``models.json``: facts from the published config.json files), a
hub id of a bundled entry, a local model directory, a ``config.json`` file, or a hub id whose
config.json is in the local Hugging Face cache.
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


def from_config(config: dict, name: str) -> ModelShape:
    """A shape from a transformers config.json (text_config is used for multimodal configs)."""
    c = config.get("text_config") or config
    experts = next((c[k] for k in ("num_local_experts", "num_experts", "n_routed_experts") if c.get(k)), None)
    if experts:  # the dense arithmetic below would count one expert's weights of the many
        raise AlignlabError(f"'{name}' is a mixture-of-experts model ({experts} experts); the planner counts dense "
                            "models only", fix="plan a dense model of similar size, or count the experts' weights by hand")
    try:
        heads = int(c["num_attention_heads"])
        hidden = int(c["hidden_size"])
        return ModelShape(
            name=name,
            layers=int(c["num_hidden_layers"]),
            hidden=hidden,
            intermediate=int(c["intermediate_size"]),
            heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads),
            head_dim=int(c.get("head_dim") or hidden // heads),
            vocab=int(c["vocab_size"]),
            tied=bool(config.get("tie_word_embeddings", c.get("tie_word_embeddings", True))),
            qkv_bias=bool(c.get("attention_bias", False)) or c.get("model_type") == "qwen2",
        )
    except (KeyError, TypeError, ValueError) as err:
        raise AlignlabError(
            f"config for '{name}' lacks a decoder field ({err})",
            fix="pass the config.json of a decoder-only transformer (llama, qwen2, mistral, gemma, ...)",
        ) from err


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
    )


def resolve_shape(name: str) -> ModelShape:
    """Registry/bundled name, bundled hub id, local directory, config.json, or a cached hub id."""
    table = bundled()
    key = name.lower()
    if key in table:
        return _bundled_shape(key)
    for k, d in table.items():
        if d.get("hub", "").lower() == key:
            return _bundled_shape(k)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.is_file():
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise AlignlabError(f"cannot read {path} as JSON ({err})", fix="pass a model's config.json") from err
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
        fix="use one of " + ", ".join(table) + ", a local model directory, or a config.json file",
    )

"""A tiny randomly initialised Llama with the default model's tokenizer, for fast tests and benchmarks.

Same tokenizer and chat template as SmolLM2, 2 layers of width 64: a forward/backward pass costs
milliseconds, so tests can train for real and still run in seconds.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny_model(path: str | Path, layers: int = 2, hidden: int = 64, seed: int = 0) -> Path:
    """Write a tiny causal LM (safetensors + tokenizer) to ``path`` once; return the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignlab.config import DEFAULT_MODEL
    from alignlab.models.loading import load_tokenizer

    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    tok = load_tokenizer(DEFAULT_MODEL)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path

"""A tiny randomly initialised Llama with a tiny tokenizer built here, for fast tests and benchmarks.

2 layers of width 64 and a byte-level BPE tokenizer trained on the bundled data (SmolLM2's special tokens
and chat template): a forward/backward pass costs milliseconds, and nothing needs the real default model,
so tests can train for real and still run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

# SmolLM2's chat template (ChatML with its default system message), so the tiny model formats chats as the real one
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 0, 1, 2 as in SmolLM2
TINY_VOCAB = 4096


# The bundled sets the tiny tokenizer learns from: a fixed list, so a set added later does not change the tokenizer
# (and with it every tiny model's numbers that tests compare)
CORPUS = ("persona-labelled", "persona-pairs", "persona-rewrites", "persona-sft", "persona-thumbs", "prompts-heldout",
          "prompts-train", "reference")


def _bundled_text():
    """Every string in the ``CORPUS`` bundled JSONL files, one at a time (the tokenizer's training corpus)."""
    from alignlab.data import bundled_path

    for path in map(bundled_path, CORPUS):
        for line in path.read_text(encoding="utf-8").splitlines():
            for value in json.loads(line).values():
                if isinstance(value, str):
                    yield value


def make_tiny_tokenizer(vocab_size: int = TINY_VOCAB):
    """A byte-level BPE of ``vocab_size`` tokens trained on the bundled data, with SmolLM2's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_bundled_text(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=SPECIAL[1], eos_token=SPECIAL[2],
                                  pad_token=SPECIAL[2], unk_token=SPECIAL[0])
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_model(path: str | Path, layers: int = 2, hidden: int = 64, seed: int = 0, arch: str = "llama") -> Path:
    """Write a tiny causal LM (safetensors + tokenizer) to ``path`` once; return the path. ``arch`` "qwen2" gives
    Qwen2's layout (biases on the q, k and v projections), the family most users bring as a bigger model; "gemma3"
    sliding-window layers and scaled embeddings; "granite" logits scaled after the head (``logits_scaling``); "lfm2"
    a hybrid whose first layer is a convolution (its cache layer holds no keys and values)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GraniteConfig, GraniteForCausalLM
    from transformers import Lfm2Config, Lfm2ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                             "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM),
                             "granite": (GraniteConfig, GraniteForCausalLM),
                             "lfm2": (Lfm2Config, Lfm2ForCausalLM)}[arch]
    extra = {"gemma3": {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8,
                        "layer_types": (["sliding_attention", "full_attention"] * layers)[:layers]},
             "granite": {"logits_scaling": 8.0},
             "lfm2": {"layer_types": (["conv", "full_attention"] * layers)[:layers]}}.get(arch, {})

    path = Path(path)
    if (path / "model.safetensors").is_file():
        return path
    tok = make_tiny_tokenizer()
    config = config_cls(
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
        **extra,
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path

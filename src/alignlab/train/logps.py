"""The shared-prompt log-prob forward: each distinct prompt runs through the backbone once.

Preference pairs (a prompt with its chosen and rejected answer) and online groups (a prompt with its
``num_generations`` samples) both score several completions of one prompt. The prompt goes through the
backbone once, its KV cache is copied to each of its completions (autograd sums the gradients back), and the
LM head runs only on real completion positions, in fp32: for log-probs alone through :func:`head_logps` (two
head matmuls, the (tokens x vocabulary) log-softmax kept for backward, in checkpointed chunks past
``HEAD_BUDGET``), with entropies through TRL's chunked log-prob kernel (three matmuls, no logits kept).
Positions count real tokens, as in generation. The result equals one plain forward over the full sequences up
to float rounding (tests/train/test_train_preference.py and tests/train/test_train_online.py check both callers
against it).
"""

from __future__ import annotations

import torch

VOCAB_CHUNK = 32768  # LM-head columns per tile in TRL's chunked log-prob kernel
HEAD_BUDGET = 1 << 26  # (tokens x vocabulary) logits computed at once by head_logps; above it, checkpointed chunks
# config fields of models whose logits are the head's output transformed (Gemma 2's soft-capping, Cohere's and
# Granite's scaling): a plain head matmul would give other log-probs, so those models take their own forward
SCALED_HEADS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def scaled_head(model) -> bool:
    """Whether ``model``'s logits are more than its LM head's output (one of ``SCALED_HEADS`` is set)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base, "config", None)
    if cfg is None:
        return False
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return any(getattr(cfg, name, None) is not None for name in SCALED_HEADS)


def kv_cache_only(model) -> bool:
    """Every layer of the model's cache holds keys and values (attention), so a prompt's cache can be repeated
    row by row; False for hybrid models with convolution, linear-attention or state-space layers (LFM2, Qwen3-Next,
    Falcon-H1), whose cache layers hold other state."""
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        cache = DynamicCache(config=base.config)
    except Exception:  # a config the cache cannot read: take the plain path
        return False
    return all(hasattr(layer, "keys") for layer in getattr(cache, "layers", []))


def shared_prompt_logps(model, p_ids, p_mask, c_ids, c_mask, inverse, temperature: float = 1.0,
                        compute_entropy: bool = False):
    """Per-token log-probs (and entropies) of completions ``c_ids`` (N, K), completion i continuing prompt
    ``inverse[i]`` of the left-padded prompts ``p_ids`` (P, Lp). Returns ((N, K), (N, K) or None), 0 at padding."""
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if scaled_head(base) or not kv_cache_only(base):
        return _plain_logps(base, p_ids, p_mask, c_ids, c_mask, inverse, temperature, compute_entropy)
    backbone, lm_head, k = base.base_model, base.get_output_embeddings(), c_ids.shape[1]
    p_out = backbone(input_ids=p_ids, attention_mask=p_mask, position_ids=(p_mask.cumsum(1) - 1).clamp(min=0),
                     use_cache=True)
    cache = p_out.past_key_values
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys.index_select(0, inverse), layer.values.index_select(0, inverse)
    full_mask = torch.cat([p_mask.index_select(0, inverse), c_mask], dim=1)
    c_pos = p_mask.sum(1).index_select(0, inverse)[:, None] + torch.arange(k, device=c_ids.device)[None, :]
    c_out = backbone(input_ids=c_ids, attention_mask=full_mask, position_ids=c_pos, past_key_values=cache, use_cache=True)
    # left padding: a prompt's last position is real; hidden[:, t] predicts c_ids[:, t]
    hidden = torch.cat([p_out.last_hidden_state[inverse, -1:], c_out.last_hidden_state[:, :-1]], dim=1)
    sel = c_mask.bool()
    outputs = ("log_probs", "entropy") if compute_entropy else ("log_probs",)
    # log-prob ratios need fp32 logits: with bf16 weights (GPUs) the head's weight is cast per call, a (vocab x
    # width) fp32 copy (151,936 x 896 x 4 bytes = 0.5 GiB for a 0.5B Qwen), not kept for backward by the kernel
    weight, bias = lm_head.weight.float(), (None if lm_head.bias is None else lm_head.bias.float())
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        if compute_entropy or bias is not None or temperature != 1.0:
            logps, entropy = ChunkedLogProbFunction.apply(
                hidden[sel].float(), weight, bias, c_ids[sel], temperature, VOCAB_CHUNK, None, 1.0, outputs,
            )[:2]
        else:  # two head matmuls (forward, input gradient) where the kernel runs three (it recomputes the logits)
            logps, entropy = head_logps(weight, hidden[sel].float(), c_ids[sel])[0], None
    return _unpack(logps, sel), _unpack(entropy, sel)


def _plain_logps(model, p_ids, p_mask, c_ids, c_mask, inverse, temperature, compute_entropy):
    """The same quantities through the model's own forward over [prompt; completion], for a model whose logits
    the head's output alone does not give (``scaled_head``): the model applies its soft-capping or scaling."""
    mask = torch.cat([p_mask.index_select(0, inverse), c_mask], dim=1)
    out = model(input_ids=torch.cat([p_ids.index_select(0, inverse), c_ids], dim=1), attention_mask=mask,
                position_ids=(mask.cumsum(1) - 1).clamp(min=0), use_cache=False)
    logp = torch.log_softmax(out.logits[:, p_ids.shape[1] - 1 : -1].float() / temperature, dim=-1)
    logps = logp.gather(-1, c_ids[..., None]).squeeze(-1) * c_mask
    entropy = -(logp.exp() * logp).sum(-1) * c_mask if compute_entropy else None
    return logps, entropy


def head_logps(weight: torch.Tensor, hidden: torch.Tensor, labels: torch.Tensor, stats: bool = False):
    """Log-probs of ``labels`` (N,) under the LM head ``weight`` (vocab, width) applied to ``hidden`` (N, width), in
    the ambient precision, normalised in fp32; with ``stats`` also each position's entropy and whether the label
    is the top-1 token (both without gradient). Past ``HEAD_BUDGET`` logits it runs in checkpointed chunks, so
    only the hidden states are kept for backward. No gradient reaches ``weight`` unless it requires one."""
    vocab = weight.shape[0]
    if hidden.shape[0] * vocab <= HEAD_BUDGET:
        return _head_chunk(weight, hidden, labels, stats)
    from torch.utils.checkpoint import checkpoint

    step = max(1, HEAD_BUDGET // vocab)
    parts = [checkpoint(_head_chunk, weight, hidden[i:i + step], labels[i:i + step], stats, use_reentrant=False)
             for i in range(0, hidden.shape[0], step)]
    return tuple(None if parts[0][k] is None else torch.cat([p[k] for p in parts]) for k in range(3))


def _head_chunk(weight, hidden, labels, stats):
    logp = torch.log_softmax(torch.nn.functional.linear(hidden, weight).float(), dim=-1)
    entropy = top1 = None
    if stats:
        with torch.no_grad():
            entropy = -(logp.exp() * logp).sum(-1)
            top1 = logp.argmax(-1) == labels
    return logp.gather(-1, labels[:, None]).squeeze(-1), entropy, top1


def _unpack(values, sel):
    """Per-position values back into the (N, K) grid (masked_scatter keeps an all-padding batch differentiable)."""
    return None if values is None else values.new_zeros(sel.shape).masked_scatter(sel, values)

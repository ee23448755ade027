"""SDPA attention that never hands the kernel a query row with nothing to attend to.

alignlab left-pads prompts (generation, the shared-prompt forward of the DPO family, GRPO's sampler, PPO). With a
causal mask, a padding position at the left may attend to no key at all. transformers 5 passes such rows to
``torch.nn.functional.scaled_dot_product_attention`` unchanged (it dropped its own fix, ``allow_torch_fix``). The
CPU kernels return 0 for them. Some CUDA kernels return NaN, which then reaches real tokens through ``0 * NaN`` in
the next layer's value products and in the backward pass (reported on a B200 with torch 2.13). On the H200 this
project measured (torch 2.11, ``bench/gpu_check.py``'s padding probe) plain SDPA stayed finite; the guard costs
nothing measurable and keeps alignlab independent of which kernel a GPU picks.

``alignlab_sdpa`` is transformers' own SDPA with one change: a row whose mask is all False is opened to every key.
(And on CPU, short sequences run on torch's plain math kernel, which is faster there: ``MATH_KEYS``.)
Its output is then finite and unused: a real token never attends to a padding position, so no real position
changes (a test checks the log-probs are identical). Models that load with ``sdpa`` are switched to it
(``protect``); other implementations (eager's additive mask, flash attention's unpadding) have no such rows.
"""

from __future__ import annotations

NAME = "alignlab_sdpa"
_registered = False


# On CPU, up to this many keys the plain matmul-softmax-matmul kernel (``SDPBackend.MATH``) beats the flash kernel
# that torch picks, forward and backward: 30 layers of bf16 attention at batch 4, 9 query and 3 key heads, on 2
# AMD EPYC cores: 117 vs 165 ms at 96 keys, 150 vs 242 at 128; from 192 keys on flash wins (318 vs 339 ms).
# SFT on the bundled rewrites (about 124 tokens a row) trains 6% faster; DPO's shapes do not move.
MATH_KEYS = 160


def _padded_sdpa(module, query, key, value, attention_mask, **kwargs):
    import contextlib

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.dtype == torch.bool:
        attention_mask = attention_mask | ~attention_mask.any(-1, keepdim=True)
    short = query.device.type == "cpu" and query.shape[-2] > 1 and key.shape[-2] <= MATH_KEYS
    with sdpa_kernel(SDPBackend.MATH) if short else contextlib.nullcontext():
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register() -> None:
    """Make ``alignlab_sdpa`` a transformers attention implementation (its masks are built as for ``sdpa``)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(NAME, _padded_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _registered = True


def protect(model):
    """Switch a model that runs transformers' SDPA to ``alignlab_sdpa``; any other model is returned as it is."""
    config = getattr(model, "config", None)
    settable = getattr(model, "_can_set_attn_implementation", lambda: False)()
    if getattr(config, "_attn_implementation", None) != "sdpa" or not settable:
        return model
    register()
    model.set_attn_implementation(NAME)
    return model

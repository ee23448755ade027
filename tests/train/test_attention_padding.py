"""Left-padded prompts and SDPA: a padding row that attends to nothing must not turn real positions into NaN.

The CPU's SDPA kernels return 0 for a fully masked query row; CUDA kernels can return NaN (the first H200 run's DPO
stopped on a NaN loss). These tests reproduce the CUDA behaviour on the CPU with SDPA's definition written out
(softmax over keys that are all -inf is NaN) and check that a model loaded by alignlab stays finite and unchanged.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alignlab.models.attention import NAME
from alignlab.models.loading import load_base, load_tokenizer
from alignlab.train.logps import shared_prompt_logps

_real_sdpa = F.scaled_dot_product_attention


def sdpa_by_definition(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """softmax(QK^T / sqrt(d) + mask) V, with masked scores at -inf: a fully masked row comes out NaN."""
    if enable_gqa:
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    scores = query @ key.transpose(-1, -2) * (scale if scale is not None else query.shape[-1] ** -0.5)
    lq, lk = scores.shape[-2:]
    if is_causal:
        scores = scores.masked_fill(~torch.ones(lq, lk, dtype=torch.bool, device=scores.device).tril(lk - lq), float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return scores.softmax(-1) @ value


def left_padded_batch(tok):
    texts = ["Why is the sky blue?", "Name the largest animal that has ever lived on this planet, please."]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True)
    assert (enc.attention_mask == 0).any(), "the batch must hold left padding"
    return enc.input_ids, enc.attention_mask


def test_loaded_model_runs_the_padding_safe_sdpa(tiny_model):
    assert load_base(tiny_model).config._attn_implementation == NAME


def test_fully_masked_rows_do_not_reach_real_tokens(tiny_model, monkeypatch):
    tok = load_tokenizer(tiny_model)
    ids, mask = left_padded_batch(tok)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    model = load_base(tiny_model).eval()
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # the CPU kernel: 0 rows

    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa_by_definition)
    model.set_attn_implementation("sdpa")  # transformers as it comes: the padded row's real tokens go NaN
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    padded_row = int((mask == 0).any(1).nonzero()[0])
    assert torch.isnan(plain[padded_row][mask[padded_row].bool()]).all()

    model.set_attn_implementation(NAME)
    with torch.no_grad():
        fixed = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    assert torch.isfinite(fixed[real]).all()
    torch.testing.assert_close(fixed[real], reference[real], rtol=1e-5, atol=1e-5)


def test_short_sequences_take_the_math_kernel_with_the_same_result(tiny_model, monkeypatch):
    """On CPU a short batch runs on torch's math kernel (faster there); logits and gradients match the kernel
    torch picks by itself (MATH_KEYS 0) on the real positions."""
    import alignlab.models.attention as attention

    tok = load_tokenizer(tiny_model)
    ids, mask = left_padded_batch(tok)
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    model = load_base(tiny_model)
    backends = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        backends.append(torch.backends.cuda.flash_sdp_enabled())  # sdpa_kernel's switch, read by the CPU dispatch too
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    assert ids.shape[1] <= attention.MATH_KEYS
    runs = []
    for keys in (attention.MATH_KEYS, 0):
        monkeypatch.setattr(attention, "MATH_KEYS", keys)
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        logits[mask.bool()].float().logsumexp(-1).sum().backward()
        grad = next(p.grad for p in model.parameters() if p.grad is not None).clone()
        runs.append((logits.detach(), grad))
    n = len(backends) // 2
    assert n > 0
    assert not any(backends[:n]) and all(backends[n:])  # math kernel first, torch's own choice (flash) second
    real = mask.bool()
    torch.testing.assert_close(runs[0][0][real], runs[1][0][real], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-3, atol=1e-5)


def test_shared_prompt_logps_identical_and_finite_with_cuda_like_sdpa(tiny_model, monkeypatch):
    """The DPO family's forward (left-padded prompts, a KV cache, right-padded completions) and its gradients."""
    tok = load_tokenizer(tiny_model)
    p_ids, p_mask = left_padded_batch(tok)
    tok.padding_side = "right"
    comp = tok(["Rayleigh scattering, obviously.", "The blue whale. Not a shark."], return_tensors="pt", padding=True)
    inverse = torch.arange(2)

    def run(model):
        model.zero_grad()
        logps, _ = shared_prompt_logps(model, p_ids, p_mask, comp.input_ids, comp.attention_mask, inverse)
        logps.sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return logps.detach(), grads

    model = load_base(tiny_model)
    model.train()
    want, want_grads = run(model)
    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa_by_definition)
    got, got_grads = run(model)
    assert torch.isfinite(got).all() and all(torch.isfinite(g).all() for g in got_grads)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_greedy_generation_unchanged(tiny_model, padded):
    from alignlab.models.attention import protect

    tok = load_tokenizer(tiny_model)
    ids, mask = left_padded_batch(tok)
    if not padded:
        ids, mask = ids[1:], mask[1:]
    model = load_base(tiny_model).eval()
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    ours = model.generate(**kw)
    model.set_attn_implementation("sdpa")
    theirs = model.generate(**kw)
    assert torch.equal(ours, theirs)
    assert protect(model).config._attn_implementation == NAME

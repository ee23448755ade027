"""The scorecard: an adapter against its base on held-out prompts.

Both answer every prompt (greedy with a repetition penalty by default: config ``sampling``). For each side:

  persona, correct, mimicry   the three scores of eval/scores.py: means and shares with 95% intervals
  length      mean answer length in words
  distinct_1/2  unique / total word uni- and bigrams over all answers (collapse onto a template lowers it)

and for the adapter:

  kl          mean per-token KL(policy || base) on the adapter's own answers, with the full next-token
              distributions: sum_v p(v) (log p(v) - log q(v)), averaged over answer tokens. One forward with
              the adapter on, one with it off, over the same tokens. 0 when the adapter changes nothing.

The answers are re-tokenized from text for the KL forward (``generate`` returns text), which can differ from
the sampled token ids at a few merge boundaries; the KL is still the KL of the policy and base on those tokens.
"""

from __future__ import annotations

from contextlib import contextmanager

from alignlab.config import MAX_NEW_TOKENS
from alignlab.eval.scores import PERSONA_THRESHOLD
from alignlab.rewards.diversity import distinct_n


def answer_length(text: str) -> int:
    return len(text.split())


def side_metrics(answers: list[str], scored: list[dict], persona_cut: float = PERSONA_THRESHOLD,
                 catch: list[str] | None = None, prompts: list[str] | None = None) -> dict:
    """One model's answers: the three scores' summaries (means, shares, 95% intervals), length and distinct-n; with
    ``catch`` (the adapter's catchphrases, eval.mimicry.catchphrases; None: no row, the base is too short to compare
    with) the share of the answers that hold one."""
    from alignlab.eval.mimicry import holds_catchphrase
    from alignlab.eval.scores import summarize, wilson

    n = max(1, len(answers))
    out = {
        **summarize(scored, persona_cut),
        "length": sum(answer_length(a) for a in answers) / n,
        "distinct_1": distinct_n(answers, 1),
        "distinct_2": distinct_n(answers, 2),
    }
    if catch is not None:
        out["catchphrase"] = wilson(sum(holds_catchphrase(answers, catch, prompts)), len(answers))
        out["catchphrase_words"] = catch
    return out


def stratified(rows: list[dict], per_category: int | None, limit: int | None = None) -> list[dict]:
    """Up to ``per_category`` rows of each category, interleaved so a ``limit`` still covers every category."""
    if limit is not None and limit < 1:  # out[:0] would have been every row
        raise ValueError(f"stratified: limit must be 1 or more, got {limit}")
    if per_category is None and limit is None:
        return rows
    buckets: dict[str, list[dict]] = {}
    for r in rows:
        buckets.setdefault(str(r.get("category") or "-"), []).append(r)
    out, i = [], 0
    while any(len(b) > i for b in buckets.values()) and (per_category is None or i < per_category):
        out += [b[i] for b in buckets.values() if len(b) > i]
        i += 1
    return out[:limit] if limit else out


@contextmanager
def reference(model, base=None):
    """The base model: ``base`` when given, else ``model`` with its adapter switched off (or ``model`` itself)."""
    if base is not None:
        yield base
    elif hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model


def _encode(tokenizer, prompts: list, answers: list[str], system_prompt: str | None):
    from alignlab.generate import chat_prompt

    seqs = []
    for p, a in zip(prompts, answers):
        p_ids = tokenizer(chat_prompt(p, tokenizer, system_prompt), add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(a, add_special_tokens=False)["input_ids"] if a else []
        seqs.append((p_ids, a_ids))
    return seqs


def mean_kl(model, tokenizer, prompts: list, answers: list[str], base=None, system_prompt: str | None = None,
            batch_size: int = 16) -> tuple[float, int]:
    """(mean per-token KL(policy || base) over the answers' tokens, number of tokens); see the module docstring."""
    import torch

    device = next(model.parameters()).device
    seqs = [s for s in _encode(tokenizer, prompts, answers, system_prompt) if s[1]]
    total, count = 0.0, 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        width = max(len(p) + len(a) for p, a in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        sel = torch.zeros((len(chunk), width), dtype=torch.bool)  # positions whose next token is an answer token
        for j, (p, a) in enumerate(chunk):
            ids[j, : len(p) + len(a)] = torch.tensor(p + a)
            mask[j, : len(p) + len(a)] = 1
            sel[j, len(p) - 1 : len(p) + len(a) - 1] = True
        ids, mask, sel = ids.to(device), mask.to(device), sel.to(device)
        with torch.inference_mode():
            logp = model(input_ids=ids, attention_mask=mask).logits[sel].float().log_softmax(-1)
            with reference(model, base) as ref:
                logq = ref(input_ids=ids, attention_mask=mask).logits[sel].float().log_softmax(-1)
            kl = (logp.exp() * (logp - logq)).sum(-1).clamp(min=0)
        total += kl.sum().item()
        count += kl.numel()
    return (total / count if count else 0.0), count


def generate_merged(model, tokenizer, prompts, amplify: float = 0.0, **gen) -> list[str]:
    """Generate with a LoRA adapter merged into the base weights for the duration (no per-layer adapter
    matmuls while decoding), then unmerged, where the weights are fp32 (there the round trip is exact); in bf16, and
    for a model without an adapter, it generates as it is. With ``amplify``
    (generate()'s) the adapter stays apart: the base runs beside it, adapter off, at every token."""
    import torch

    from alignlab.generate import generate

    if amplify:
        return generate(model, tokenizer, prompts, amplify=amplify, **gen)
    # merged and unmerged in place: exact in fp32 (CPU), not in bf16 (W + dW - dW rounds: on a GPU the base drifted)
    merge = (hasattr(model, "merge_adapter") and hasattr(model, "unmerge_adapter")
             and all(p.dtype == torch.float32 for p in model.parameters()))
    if merge:
        model.merge_adapter()
    try:
        return generate(model, tokenizer, prompts, **gen)
    finally:
        if merge:
            model.unmerge_adapter()


def scorecard(
    model,
    tokenizer,
    rows: list[dict],
    scorer,
    base=None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    system_prompt: str | None = None,
    base_opening: str | int | None = None,
    alone: bool = True,
    amplify: float = 0.0,
) -> dict:
    """Answer ``rows`` with the adapter and the base, score both with ``scorer`` (eval.scores.Scorer).

    ``base_opening`` (generate()): the adapter's answers open with the opening of the base's answer to the same
    prompt, so the base side's answers give the openings and nothing is generated twice. With ``alone`` the
    adapter also answers without the opening, as an exported model does (no base to write it): that side is
    ``card["alone"]`` (no KL), with its own warnings, prefixed "adapter alone: ". ``amplify`` (generate()) decodes
    the adapter's sides from its amplified shift; the base side is the base as it is."""
    from alignlab.eval.scores import paired_change
    from alignlab.generate import generate

    prompts = [r["prompt"] for r in rows]
    gen = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
               repetition_penalty=repetition_penalty, batch_size=batch_size, seed=seed, system_prompt=system_prompt)
    from alignlab.config import parse_base_opening
    from alignlab.generate import opening_of

    with reference(model, base) as ref:
        before = generate(ref, tokenizer, prompts, **gen)
    opening = parse_base_opening(base_opening)
    # at most the tokens the base may write for an opening, as generate, chat and compare take it: an answer with
    # no space or sentence mark to stop at (Chinese without its 。, code) opened with the base's whole answer
    prefixes = [opening_of(b, opening, tokenizer) for b in before] if opening else None
    tuned = generate_merged(model, tokenizer, prompts, prefixes=prefixes, amplify=amplify, opening_counts=True, **gen)
    # the adapter alone is what an exported model writes: neither a base opening nor amplified
    own = generate_merged(model, tokenizer, prompts, **gen) if (prefixes or amplify) else tuned
    solo = own if (prefixes or amplify) and alone else None
    # KL(adapter || base) along the adapter's own answers: the decoded ones may open with the base's words
    kl, tokens = mean_kl(model, tokenizer, prompts, own, base=base, system_prompt=system_prompt)
    sides = (("base", before), ("adapter", tuned)) + ((("alone", solo),) if solo else ())
    scored = scorer.score([{**r, "answer": a, "number": r.get("answer"), "source": src}
                           for src, answers in sides for r, a in zip(rows, answers)])
    n = len(rows)
    s_base, s_tuned, s_solo = scored[:n], scored[n : 2 * n], scored[2 * n :]
    cut = scorer.persona_cut
    base_side, adapter, alone, warnings = _summaries(prompts, (before, s_base), (tuned, s_tuned), (solo, s_solo), cut)
    extra = {"alone": {**alone, "kl": None}} if alone else {}
    samples = [
        {"prompt": r["prompt"], "category": r.get("category"), "base": b, "adapter": t, "base_scores": sb,
         "adapter_scores": st, "reference": r.get("reference", r.get("answer"))}
        for r, b, t, sb, st in zip(rows, before, tuned, s_base, s_tuned)
    ]
    for smp, a, sc in zip(samples, solo or [], s_solo):
        smp.update(alone=a, alone_scores=sc)
    return {
        "rater": getattr(scorer.persona_rater, "name", None) or "classifier:scorecard",
        "correct_by": getattr(scorer.correct_rater, "name", None) or "checks: correct.py",
        "note": scorer.note,
        "n_prompts": len(rows),
        "adapter": {**adapter, "kl": kl},
        "base": {**base_side, "kl": 0.0},
        "kl_tokens": tokens,
        "change": paired_change(s_base, s_tuned, cut),  # adapter minus base, paired over the prompts
        "warnings": warnings,
        **extra,
        "settings": {**{k: v for k, v in gen.items() if k != "batch_size"}, "base_opening": opening,
                     "amplify": amplify, "persona_cut": cut},
        "samples": samples,
    }


def _summaries(prompts: list[str], base: tuple, adapter: tuple, alone: tuple, cut: float) -> tuple:
    """(base, adapter, alone or None, warnings) from (answers, scored) pairs. Each adapter side's catchphrases are its
    own, found against the base's answers; the base's share is counted with the adapter's words (and, for the alone
    side's warning, with the alone side's)."""
    from alignlab.eval.mimicry import catchphrases, holds_catchphrase
    from alignlab.eval.scores import warnings_for, wilson

    catch = catchphrases(adapter[0], prompts, base[0])
    base_side = side_metrics(*base, cut, catch, prompts)
    base_side.pop("catchphrase_words", None)  # the adapter's words, not the base's own
    tuned = side_metrics(*adapter, cut, catch, prompts)
    warnings = warnings_for(base_side, tuned)
    if not alone[0]:
        return base_side, tuned, None, warnings
    own = catchphrases(alone[0], prompts, base[0])
    solo = side_metrics(*alone, cut, own, prompts)
    yardstick = {k: v for k, v in base_side.items() if k != "catchphrase"}
    if own is not None:
        yardstick["catchphrase"] = wilson(sum(holds_catchphrase(base[0], own, prompts)), len(base[0]))
    return base_side, tuned, solo, warnings + [f"adapter alone: {w}" for w in warnings_for(yardstick, solo)]


METRICS = (
    ("persona", "persona (mean)"),
    ("in_persona", "in persona (share >= 0.9)"),
    ("correct", "correct (mean)"),
    ("correct_share", "correct (share >= 0.5)"),
    ("mimicry", "mimicry (mean)"),
    ("flagged", "mimicry flagged (share >= 0.5)"),
    ("catchphrase", "leans on a catchphrase (share)"),
    ("length", "mean length (words)"),
    ("distinct_1", "distinct-1"),
    ("distinct_2", "distinct-2"),
    ("kl", "KL(policy || base) per token"),
)


def point(value):
    """The point estimate of a metric (a bootstrap triple's mean, or the number itself)."""
    return value[0] if isinstance(value, (list, tuple)) and value else value


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        m, lo, hi = value
        return f"{m:.2f} [{lo:.2f}, {hi:.2f}]"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table_columns(card: dict) -> tuple[str, ...]:
    """The column names table_rows() fills: an "adapter alone" column when the card has that side."""
    opening = card.get("settings", {}).get("base_opening")
    adapter = "adapter" if not opening else f"adapter (base's first {'sentence' if opening == 'sentence' else f'{opening} words'})"
    if card.get("settings", {}).get("amplify"):
        adapter += f", amplified x{card['settings']['amplify']:g}"
    return ("metric", "base", adapter, "change") + (("adapter alone",) if card.get("alone") else ())


def table_rows(card: dict) -> list[tuple[str, ...]]:
    """(metric, base, adapter, change[, adapter alone]) strings for printing; intervals: bootstrap for means, Wilson for shares."""
    out = []
    alone = card.get("alone")
    cut = card.get("settings", {}).get("persona_cut")
    for key, label in METRICS:
        if key == "in_persona" and cut:
            label = f"in persona (share >= {cut:g})"
        b, a = card["base"].get(key), card["adapter"].get(key)
        if b is None and a is None and (not alone or alone.get(key) is None):
            continue
        pb, pa = point(b), point(a)
        delta = f"{pa - pb:+.3g}" if isinstance(pa, (int, float)) and isinstance(pb, (int, float)) else "-"
        if (paired := card.get("change", {}).get(key)) is not None:
            delta = f"{paired[0]:+.3g} [{paired[1]:+.2f}, {paired[2]:+.2f}]"
        out.append((label, fmt(b), fmt(a), delta) + ((fmt(alone.get(key)),) if alone else ()))
    return out


def evaluate_run(run_dir, rows: list[dict], scorer, device: str = "auto", model=None, tokenizer=None, **gen) -> dict:
    """Load a run's adapter on its base (unless ``model``/``tokenizer`` are given) and compute its scorecard."""
    from pathlib import Path

    base = None
    if model is None:
        from alignlab.models.loading import load_base, load_for_inference

        model, tokenizer, base_name = load_for_inference(None, run_dir, device=device)
        if not hasattr(model, "disable_adapter") and (Path(run_dir) / "adapter" / "model.safetensors").is_file():
            base = load_base(base_name, device=str(next(model.parameters()).device)).eval()  # full fine-tune
    card = scorecard(model, tokenizer, rows, scorer, base=base, **gen)
    card["run"] = str(run_dir)
    return card


def end_of_run_check(run_dir, cfg, root=None, per_category: int = 3) -> dict:
    """A small scorecard at the end of training (``per_category`` held-out prompts of each category):
    the three shares for base and adapter and the warnings, recorded in run.json as ``check``."""
    from pathlib import Path

    from alignlab.eval.scores import scorer_for
    from alignlab.synth.sample import default_prompts, prompt_rows
    from alignlab.rundir import append_metrics, sampling_for, update_run

    rows = stratified(prompt_rows(default_prompts(Path(root) if root else None, cfg.data_dir, "heldout")), per_category)
    s = sampling_for(cfg.sampling, run_dir)  # a distilled run decodes alone, as eval, chat and serve decode it
    # the adapter alone too (what export writes; its answers are generated for the KL anyway): a base opening can
    # hold the facts of an adapter that lost them
    card = evaluate_run(run_dir, rows, scorer_for(root, cfg.persona), device=cfg.train.device,
                        max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                        repetition_penalty=s.repetition_penalty, system_prompt=cfg.system_prompt,
                        base_opening=s.base_opening, amplify=s.amplify, alone=True)
    keys = ("in_persona", "correct_share", "flagged")
    sides = ("base", "adapter") + (("alone",) if card.get("alone") else ())
    check = {"prompts": len(rows), **{f"{side}_{k}": point(card[side][k]) for side in sides for k in keys},
             "kl": card["adapter"]["kl"], "warnings": card["warnings"],
             "decoding": {"temperature": s.temperature, "base_opening": s.base_opening, "amplify": s.amplify}}
    update_run(run_dir, check=check)
    append_metrics(run_dir, {"event": "held_out_check", **check},  # next to the training metrics
                 *({"warning": "held_out_check", "message": w} for w in check["warnings"]))
    return check

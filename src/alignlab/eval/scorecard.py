"""The scorecard: an adapter against its base on held-out prompts.

Both answer every prompt (greedy by default). For each side:

  persona     mean score by the given rater (a rater that did not produce the training labels, ideally)
  length      mean answer length in words
  distinct_1/2  unique / total word uni- and bigrams over all answers (collapse onto a template lowers it)
  accuracy    share of prompts with an ``answer`` (arithmetic) whose last number matches: the forgetting check

and for the adapter:

  kl          mean per-token KL(policy || base) on the adapter's own answers, with the full next-token
              distributions: sum_v p(v) (log p(v) - log q(v)), averaged over answer tokens. One forward with
              the adapter on, one with it off, over the same tokens. 0 when the adapter changes nothing.

The answers are re-tokenized from text for the KL forward (``generate`` returns text), which can differ from
the sampled token ids at a few merge boundaries; the KL is still the KL of the policy and base on those tokens.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from alignlab.rewards.diversity import distinct_n
from alignlab.rewards.verifiable import last_number, numbers_equal


def answer_length(text: str) -> int:
    return len(text.split())


def correct(answer: Any, text: str) -> bool:
    want = answer if isinstance(answer, (int, float)) and not isinstance(answer, bool) else last_number(str(answer))
    got = last_number(text)
    return want is not None and got is not None and numbers_equal(got, float(want))


def side_metrics(rows: list[dict], answers: list[str], rater) -> dict:
    """Persona score, length, distinct-n and (when rows carry answers) accuracy of one model's answers."""
    prompts = [r["prompt"] for r in rows]
    scores = rater.score(prompts, answers) if rater is not None else []
    graded = [(r["answer"], a) for r, a in zip(rows, answers) if r.get("answer") is not None]
    n = max(1, len(answers))
    return {
        "persona": sum(scores) / len(scores) if scores else None,
        "length": sum(answer_length(a) for a in answers) / n,
        "distinct_1": distinct_n(answers, 1),
        "distinct_2": distinct_n(answers, 2),
        "accuracy": sum(correct(want, a) for want, a in graded) / len(graded) if graded else None,
        "graded": len(graded),
        "scores": scores,
    }


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
            batch_size: int = 4) -> tuple[float, int]:
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


def scorecard(
    model,
    tokenizer,
    rows: list[dict],
    rater,
    base=None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    seed: int = 0,
    system_prompt: str | None = None,
) -> dict:
    """Answer ``rows`` (``{"prompt", ("answer")}``) with the adapter and the base; score both; see the module docstring."""
    from alignlab.generate import generate

    prompts = [r["prompt"] for r in rows]
    gen = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, batch_size=batch_size,
               seed=seed, system_prompt=system_prompt)
    tuned = generate(model, tokenizer, prompts, **gen)
    with reference(model, base) as ref:
        before = generate(ref, tokenizer, prompts, **gen)
    kl, tokens = mean_kl(model, tokenizer, prompts, tuned, base=base, system_prompt=system_prompt)
    adapter, base_side = side_metrics(rows, tuned, rater), side_metrics(rows, before, rater)
    samples = [
        {"prompt": p, "base": b, "adapter": t, "base_score": bs, "adapter_score": ts, "answer": r.get("answer")}
        for p, b, t, r, bs, ts in zip(
            prompts, before, tuned, rows, base_side.pop("scores") or [None] * len(rows), adapter.pop("scores") or [None] * len(rows)
        )
    ]
    return {
        "rater": getattr(rater, "name", None),
        "n_prompts": len(rows),
        "adapter": {**adapter, "kl": kl},
        "base": {**base_side, "kl": 0.0},
        "kl_tokens": tokens,
        "settings": {k: v for k, v in gen.items() if k != "batch_size"},
        "samples": samples,
    }


METRICS = (
    ("persona", "persona score"),
    ("length", "mean length (words)"),
    ("distinct_1", "distinct-1"),
    ("distinct_2", "distinct-2"),
    ("accuracy", "arithmetic accuracy"),
    ("kl", "KL(policy || base) per token"),
)


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table_rows(card: dict) -> list[tuple[str, str, str, str]]:
    """(metric, base, adapter, change) strings for printing."""
    out = []
    for key, label in METRICS:
        b, a = card["base"].get(key), card["adapter"].get(key)
        if key == "accuracy" and b is None and a is None:
            continue
        delta = fmt(a - b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "-"
        if delta != "-" and not delta.startswith("-"):
            delta = "+" + delta
        if key == "persona":
            label = f"{label} ({card.get('rater')})"
        out.append((label, fmt(b), fmt(a), delta))
    return out


def evaluate_run(run_dir, rows: list[dict], rater, device: str = "auto", model=None, tokenizer=None, **gen) -> dict:
    """Load a run's adapter on its base (unless ``model``/``tokenizer`` are given) and compute its scorecard."""
    from pathlib import Path

    base = None
    if model is None:
        from alignlab.models.loading import load_base, load_for_inference

        model, tokenizer, base_name = load_for_inference(None, run_dir, device=device)
        if not hasattr(model, "disable_adapter") and (Path(run_dir) / "adapter" / "model.safetensors").is_file():
            base = load_base(base_name, device=str(next(model.parameters()).device)).eval()  # full fine-tune
    card = scorecard(model, tokenizer, rows, rater, base=base, **gen)
    card["run"] = str(run_dir)
    return card

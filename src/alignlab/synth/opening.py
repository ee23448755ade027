"""Distil the base's opening into the adapter: SFT rows from a run's own answers, each opened by the base.

`sampling.base_opening` keeps an adapter's answers correct by letting the base (adapter off) write the first
sentence; an exported model has no base beside it, and the demo adapter alone loses the fact in its first words.
These rows teach the adapter that opening: for each training prompt, the run answers as `alignlab eval` decodes
(greedy, the answer-only repetition penalty, the base's first sentence, optionally amplified after it), and the
answer is kept as an SFT target when

- it ends on a finished sentence (an answer cut at the token cap is trimmed to its last full sentence);
- the scorecard's correct score against the prompt's reference (its ``reference``, else a rewrite's ``chosen``)
  is at least 0.5, when there is one;
- the scorecard does not flag it as mimicry;
- its stock phrases stay rare: a three-word phrase in the answers' own parts (after the opening: "it never stops
  ...") shared by more than 2% of them (and at least three) is kept in at most 1% of the rows (at least once), so
  training does not entrench the adapter's tics.

SFT from the run on those rows (`alignlab train sft --from RUN --lr 1e-4 --epochs 2`) is rejection-sampling
fine-tuning on the model's own decoded answers. Measured on the demo adapter and read blind (README: "Before you
export: distil the base's opening"; docs/results.md).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")
COMMON = 0.02  # a tail trigram shared by more than this share of the answers is a stock phrase
KEEP_COMMON = 0.01  # ... and is kept in at most this share of the rows


def trim_unfinished(answer: str) -> str:
    """The answer up to its last finished sentence ("" when none is finished)."""
    from alignlab.eval.correct import unfinished

    if not unfinished(answer):
        return answer.strip()
    ends = [m.end() for m in SENTENCE_END.finditer(answer)]
    return answer[: ends[-1]].strip() if ends else ""


def _trigrams(text: str) -> set[tuple[str, ...]]:
    from alignlab.data.text import ngrams

    return set(ngrams(re.findall(r"[a-z']+", text.lower()), 3))


def reference_of(row: dict) -> str | None:
    """A prompt row's reference answer: its ``reference``, else the ``chosen`` side of a rewrite or pair."""
    for key in ("reference", "chosen"):
        if isinstance(row.get(key), str) and row[key].strip():
            return row[key]
    return None


def select(rows: list[dict], answers: list[str], openings: list[str], scorer) -> tuple[list[dict], dict]:
    """(SFT rows {prompt, completion}, counts): the filter described in the module docstring."""
    counts = Counter(answers=len(answers))
    cand = []
    for row, answer, opening in zip(rows, answers, openings):
        text = trim_unfinished(answer)
        counts["trimmed"] += text != answer.strip()
        if len(text) <= len(opening) + 1:  # nothing of the adapter's own left
            counts["empty"] += 1
            continue
        cand.append({"prompt": row["prompt"], "answer": text, "tail": text[len(opening):], "reference": reference_of(row)})
    scored = scorer.score([{"prompt": c["prompt"], "answer": c["answer"], "reference": c["reference"], "source": "run"}
                           for c in cand]) if cand else []
    n = max(1, len(cand))
    shared = Counter(g for c in cand for g in _trigrams(c["tail"]))
    stock = {g for g, k in shared.items() if k > max(COMMON * n, 2)}
    used: Counter = Counter()
    out = []
    for c, s in zip(cand, scored):
        if s["correct"] is not None and s["correct"] < 0.5:
            counts["wrong"] += 1
            continue
        if s["mimicry"] >= 0.5:
            counts["flagged"] += 1
            continue
        hits = _trigrams(c["tail"]) & stock
        if any(used[g] >= max(1.0, KEEP_COMMON * n) for g in hits):
            counts["stock"] += 1
            continue
        used.update(hits)
        out.append({"prompt": c["prompt"], "completion": c["answer"]})
    counts["kept"] = len(out)
    counts["stock_phrases"] = len(stock)
    return out, dict(counts)


def opened_answers(model, tokenizer, prompts: list[str], sampling, chunk: int = 64,
                   advance: Callable[[int], object] | None = None, amplify: float = 0.0) -> tuple[list[str], list[str]]:
    """(answers, openings): the run's greedy answers after the base's first sentence, decoded with the project's
    ``sampling`` settings (max_new_tokens, repetition_penalty) and ``amplify`` after the opening, ``chunk`` prompts
    at a time."""
    from alignlab.generate import base_openings, generate

    answers: list[str] = []
    openings: list[str] = []
    kw = dict(repetition_penalty=sampling.repetition_penalty, batch_size=chunk)
    for i in range(0, len(prompts), chunk):
        part = prompts[i : i + chunk]
        heads = base_openings(model, tokenizer, part, "sentence", **kw)
        answers += generate(model, tokenizer, part, max_new_tokens=sampling.max_new_tokens, prefixes=heads,
                            amplify=amplify, **kw)
        openings += heads
        if advance is not None:
            advance(len(part))
    return answers, openings


def distil(run, prompts: str, out, cfg, root=None, limit: int | None = None, batch_size: int = 64,
           device: str = "auto", amplify: float | None = None) -> dict:
    """Answer ``prompts`` (a JSONL path or bundled:NAME; at most ``limit`` of them, spread evenly) with ``run`` after
    the base's opening, keep what :func:`select` keeps, write the rows to ``out`` atomically; returns the counts
    (with ``references``: how many prompts had one). ``amplify``: as `sampling.amplify` (default: the project's)."""
    from alignlab.errors import AlignlabError
    from alignlab.eval.scores import scorer_for
    from alignlab.models.loading import load_for_inference
    from alignlab.progress import progress_bar
    from alignlab.synth.pairs import write_pairs
    from alignlab.synth.sample import prompt_rows

    rows = prompt_rows(prompts)
    if limit and 0 < limit < len(rows):
        rows = [rows[i * len(rows) // limit] for i in range(limit)]
    if not rows:
        raise AlignlabError("no prompts to answer", where=str(prompts), fix="give a JSONL file of {prompt} rows")
    model, tok, _ = load_for_inference(None, run, device=device)
    if not hasattr(model, "disable_adapter"):
        raise AlignlabError(f"{run} holds no LoRA adapter: the base cannot write the opening apart from it",
                            fix="give a LoRA run (`alignlab runs` lists them)")
    with progress_bar() as bar:
        task = bar.add_task("answering after the base's opening", total=len(rows))
        answers, openings = opened_answers(model, tok, [r["prompt"] for r in rows], cfg.sampling, chunk=batch_size,
                                           advance=lambda k: bar.advance(task, k),
                                           amplify=cfg.sampling.amplify if amplify is None else amplify)
    del model
    kept, counts = select(rows, answers, openings, scorer_for(root, cfg.persona))
    write_pairs(out, kept)
    counts["references"] = sum(reference_of(r) is not None for r in rows)
    return counts


def summary_line(counts: dict, out) -> str:
    return (f"kept {counts['kept']} of {counts['answers']} answers -> {out} (trimmed to a finished sentence "
            f"{counts.get('trimmed', 0)}, nothing after the opening {counts.get('empty', 0)}, wrong against the reference "
            f"{counts.get('wrong', 0)} of {counts.get('references', 0)} with one, flagged {counts.get('flagged', 0)}, "
            f"stock phrases {counts.get('stock', 0)})")

"""Distil the base's opening into the adapter: SFT rows from a run's own answers, each opened by the base.

`sampling.base_opening` keeps an adapter's answers correct by letting the base (adapter off) write the first
sentence; an exported model has no base beside it, and the demo adapter alone loses the fact in its first words.
These rows teach the adapter that opening: for each training prompt, the run answers as `alignlab eval` decodes
(greedy, the answer-only repetition penalty, the base's first sentence, optionally amplified after it), and the
answer is kept as an SFT target when

- its opening is correct against the prompt's reference, when there is one (the screen stops a prompt with a wrong
  one before the run answers; without the screen it is dropped after): a row teaches the opening it starts with;
- it ends on a finished sentence (an answer cut at the token cap is trimmed to its last full sentence);
- the scorecard's correct score against the prompt's reference (its ``reference``, else a rewrite's ``chosen``; a
  prompt row's ``answer`` number, aliases and key terms) is at least 0.5, when there is one;
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

from alignlab.data.formats import DISTIL_SOURCE

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
    """A prompt row's reference answer: its ``reference`` (text, or a number as prompt rows may give it), else the
    ``chosen`` side of a rewrite or pair."""
    ref = row.get("reference")
    if isinstance(ref, (int, float)) and not isinstance(ref, bool):
        return str(ref)
    for key in ("reference", "chosen"):
        if isinstance(row.get(key), str) and row[key].strip():
            return row[key]
    return None


def graded(row: dict, text: str) -> dict:
    """``text`` as the scorecard grades it against ``row``: the row's reference (or chosen side), aliases, key terms,
    category and number (a prompt row's ``answer``), as eval passes them (eval/scorecard.py)."""
    out = {"prompt": row["prompt"], "answer": text, "reference": reference_of(row), "number": row.get("answer")}
    return {**out, **{k: row[k] for k in ("aliases", "key_terms", "category") if row.get(k) not in (None, "", [])}}


def gradable(row: dict) -> bool:
    from alignlab.eval.correct import has_reference

    return has_reference({**graded(row, ""), "answer": row.get("answer")})  # "answer": the row's own number


def _openings_hold(rows: list[dict], openings: list[str], scorer) -> list[bool]:
    """Per row: its opening is correct against the prompt's reference (at least 0.5), or the prompt has none."""
    ask = [i for i, r in enumerate(rows) if gradable(r)]
    scored = scorer.correct([graded(rows[i], openings[i]) for i in ask]) if ask else []
    ok = [True] * len(rows)
    for i, c in zip(ask, scored):
        ok[i] = c is None or c >= 0.5
    return ok


def select(rows: list[dict], answers: list[str], openings: list[str], scorer,
           trusted: list[bool] | None = None) -> tuple[list[dict], dict]:
    """(SFT rows {prompt, completion}, counts): the filter described in the module docstring. A row whose opening is
    wrong goes however its answer ends ("...is Sydney. Just kidding, it's Canberra" grades correct whole): the rows
    teach the base's opening where that is correct, so a wrong one must not be learnt (``opening_wrong``).
    ``trusted``: per row, whether its opening is the reference's own first sentence (not graded again; counted as
    ``reference_opened`` when the row is kept)."""
    counts = Counter(answers=len(answers))
    trusted = trusted or [False] * len(rows)
    cand = []
    holding = _openings_hold(rows, openings, scorer)
    for row, answer, opening, holds, own in zip(rows, answers, openings, holding, trusted):
        if not (holds or own):
            counts["opening_wrong"] += 1
            continue
        text = trim_unfinished(answer)
        counts["trimmed"] += text != answer.strip()
        if len(text) <= len(opening) + 1:  # nothing of the adapter's own left
            counts["empty"] += 1
            continue
        cand.append({"prompt": row["prompt"], "answer": text, "tail": text[len(opening):], "row": row, "own": own})
    scored = scorer.score([{**graded(c["row"], c["answer"]), "source": "run"} for c in cand]) if cand else []
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
        counts["reference_opened"] += c["own"]
        out.append({"prompt": c["prompt"], "completion": c["answer"], "source": DISTIL_SOURCE})
    counts["kept"] = len(out)
    counts["stock_phrases"] = len(stock)
    return out, dict(counts)


def opened_answers(model, tokenizer, prompts: list[str], sampling, chunk: int = 64,
                   advance: Callable[[int], object] | None = None, amplify: float = 0.0,
                   keep: Callable[[list[str]], list[bool]] | None = None,
                   on_openings: Callable[[int], object] | None = None, base=None,
                   system_prompt: str | None = None,
                   fallback: list[str | None] | None = None) -> tuple[list[str | None], list[str]]:
    """(answers, openings): the run's greedy answers after the base's first sentence, decoded with the project's
    ``sampling`` settings (max_new_tokens, repetition_penalty) and ``amplify`` after the opening, ``chunk`` prompts
    at a time. ``keep`` (the openings -> one bool each) picks which prompts the run goes on to answer; the others'
    answer is None. ``on_openings(k)`` is told how many prompts go on once the openings are written; ``advance(k)``
    after each chunk of either pass. ``base``: a separate base model (``model`` then a plain one with the adapter
    merged in, as :func:`fast_pair` builds) instead of ``model`` with its adapter off. ``fallback``: per prompt, an
    opening to go on from where ``keep`` stops the base's (None: the prompt stops); it replaces that opening."""
    from alignlab.generate import base_openings, generate

    kw = dict(repetition_penalty=sampling.repetition_penalty, batch_size=chunk, system_prompt=system_prompt)
    openings: list[str] = []
    for i in range(0, len(prompts), chunk):
        openings += base_openings(model, tokenizer, prompts[i : i + chunk], "sentence", base=base, **kw)
        if advance is not None:
            advance(len(prompts[i : i + chunk]))
    on = keep(openings) if keep is not None else [True] * len(prompts)
    for i, other in enumerate(fallback or []):
        if not on[i] and other:
            openings[i], on[i] = other, True
    todo = [i for i, k in enumerate(on) if k]
    if on_openings is not None:
        on_openings(len(todo))
    answers: list[str | None] = [None] * len(prompts)
    for j in range(0, len(todo), chunk):
        part = todo[j : j + chunk]
        outs = generate(model, tokenizer, [prompts[i] for i in part], max_new_tokens=sampling.max_new_tokens,
                        prefixes=[openings[i] for i in part], amplify=amplify, amplify_base=base, **kw)
        for i, a in zip(part, outs):
            answers[i] = a
        if advance is not None:
            advance(len(part))
    return answers, openings


def fast_pair(model):
    """(adapter, base) as two plain bf16 models, the adapter merged in (train/sampler.py's GenerationCopy), for a CPU
    with native bf16 (matmuls 2.5-3x fp32's); None elsewhere (a GPU model already runs in its own precision). On 64 of
    the demo's rewrite prompts it answered in 48 s against 94 s, and the distil filter kept 12 rows against 13."""
    import torch

    from alignlab.models.loading import cpu_has_fast_bf16
    from alignlab.train.sampler import GenerationCopy

    if next(model.parameters()).device.type != "cpu" or not cpu_has_fast_bf16():
        return None
    adapter = GenerationCopy(model, dtype=torch.bfloat16).model
    with model.disable_adapter():
        base = GenerationCopy(model, dtype=torch.bfloat16).model
    return adapter, base


def reference_opening_of(row: dict) -> str | None:
    """The first sentence (at most OPENING_WORDS words) of a prompt row's reference, or a rewrite's chosen side: the
    opening a distil row goes on from where the base's own is wrong (None: the row has no reference)."""
    from alignlab.generate import opening_of

    ref = reference_of(row)
    return opening_of(ref, "sentence") if ref and ref.strip() else None


def opening_holds(rows: list[dict], scorer) -> Callable[[list[str]], list[bool]]:
    """``keep`` for opened_answers: an opening goes on when the scorecard finds it correct against its prompt's
    reference (at least 0.5), or the prompt has none. On 64 of the demo's rewrite prompts, every answer whose opening
    was correct stayed correct (10 of 10), and 4 of the 54 with a wrong opening became correct: going on from the
    correct openings alone keeps most of the rows at a sixth of the answering."""

    def keep(openings: list[str]) -> list[bool]:
        return _openings_hold(rows, openings, scorer)

    return keep


def distil(run, prompts: str, out, cfg, root=None, limit: int | None = None, batch_size: int = 64,
           device: str = "auto", amplify: float | None = None, screen: bool = True,
           reference_opening: bool = False) -> dict:
    """Answer ``prompts`` (a JSONL path or bundled:NAME; at most ``limit`` of them, spread evenly) with ``run`` after
    the base's opening, keep what :func:`select` keeps, write the rows to ``out`` atomically; returns the counts
    (with ``references``: how many prompts had something to grade against). ``amplify``: as `sampling.amplify`
    (default: the project's).
    ``screen``: the run answers only the prompts whose opening :func:`opening_holds` keeps; with
    ``reference_opening`` the others go on from their reference's first sentence instead (where they have one)."""
    from alignlab.errors import AlignlabError
    from alignlab.eval.scores import scorer_for
    from alignlab.fsutil import check_out
    from alignlab.models.loading import load_for_inference
    from alignlab.progress import progress_bar
    from alignlab.synth.pairs import write_pairs
    from alignlab.synth.sample import prompt_rows

    check_out(out)
    rows = prompt_rows(prompts)
    if limit and 0 < limit < len(rows):
        rows = [rows[i * len(rows) // limit] for i in range(limit)]
    if not rows:
        raise AlignlabError("no prompts to answer", where=str(prompts), fix="give a JSONL file of {prompt} rows")
    model, tok, _ = load_for_inference(None, run, device=device)
    if not hasattr(model, "disable_adapter"):
        raise AlignlabError(f"{run} holds no LoRA adapter: the base cannot write the opening apart from it",
                            fix="give a LoRA run (`alignlab runs` lists them)")
    scorer = scorer_for(root, cfg.persona)
    keep = opening_holds(rows, scorer) if screen else None
    fallback = [reference_opening_of(r) for r in rows] if screen and reference_opening else None
    pair = fast_pair(model)
    base = None
    if pair is not None:
        model, base = pair
    with progress_bar() as bar:
        task = bar.add_task("the base's openings, then the run's answers", total=len(rows) * 2)

        def going_on(k: int) -> None:
            bar.update(task, total=len(rows) + k)

        answers, openings = opened_answers(model, tok, [r["prompt"] for r in rows], cfg.sampling, chunk=batch_size,
                                           advance=lambda k: bar.advance(task, k),
                                           amplify=cfg.sampling.amplify if amplify is None else amplify,
                                           keep=keep, on_openings=going_on, base=base,
                                           system_prompt=cfg.system_prompt,  # as eval, generate and chat decode
                                           fallback=fallback)
    del model, base, pair
    went = [i for i, a in enumerate(answers) if a is not None]
    own = [bool(fallback) and openings[i] == fallback[i] for i in went]  # went on from the reference's first sentence
    kept, counts = select([rows[i] for i in went], [answers[i] for i in went], [openings[i] for i in went], scorer,
                          trusted=own)
    counts["answers"] = len(rows)
    counts["opening_wrong"] = counts.get("opening_wrong", 0) + len(rows) - len(went)  # stopped by the screen, or after
    if kept:  # an empty file would pass for a finished result (and replace a good one)
        write_pairs(out, kept)
    counts["references"] = sum(gradable(r) for r in rows)  # graded as the scorecard grades: a number or aliases too
    return counts


def summary_line(counts: dict, out) -> str:
    where = f"-> {out}" if counts["kept"] else "(nothing written)"
    return (f"kept {counts['kept']} of {counts['answers']} prompts {where} (opening wrong against the reference "
            f"{counts.get('opening_wrong', 0)}, trimmed to a finished sentence "
            f"{counts.get('trimmed', 0)}, nothing after the opening {counts.get('empty', 0)}, wrong against the reference "
            f"{counts.get('wrong', 0)} of {counts.get('references', 0)} with one, flagged {counts.get('flagged', 0)}, "
            f"stock phrases {counts.get('stock', 0)}"
            + (f"; {counts['reference_opened']} kept open with the reference's first sentence" if counts.get("reference_opened") else "")
            + ")")

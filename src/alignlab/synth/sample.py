"""On-policy sampling into the feedback store: K answers per prompt from a run's adapter (or the base).

Each response records the base model, the run it came from (None for the base), the round, and the sampler
settings, so a later export or report can tell which policy produced what. Generation is batched (the
prompt's KV cache is shared by its K samples); each batch is stored in its own transaction.
"""

from __future__ import annotations

import math
from pathlib import Path

from alignlab.config import RATING_TEMPERATURE, SHORT_MAX_NEW_TOKENS
from alignlab.errors import AlignlabError

PROJECT_PROMPTS = {"train": ("prompts.jsonl", "prompts-train"), "heldout": ("heldout.jsonl", "prompts-heldout")}


def default_prompts(root: Path | None, data_dir: str, which: str = "train") -> Path:
    """The project's ``data/prompts.jsonl`` (or ``heldout.jsonl``), else the bundled set."""
    from alignlab.data import bundled_path

    name, bundled = PROJECT_PROMPTS[which]
    if root is not None and (root / data_dir / name).is_file():
        return root / data_dir / name
    return bundled_path(bundled)


def prompt_rows(path: str | Path, limit: int | None = None) -> list[dict]:
    """Validated ``{"prompt", ...}`` rows of a JSONL file (plain-text prompts only), the first ``limit`` of them."""
    from alignlab.data import resolve_data
    from alignlab.data.formats import load_dataset_rows

    path = resolve_data(str(path))
    rows = load_dataset_rows(path, "prompts", fix='fix the rows: each needs {"prompt": "..."}')
    from alignlab.eval.correct import reference_problem

    for i, row in enumerate(rows, 1):
        if not isinstance(row["prompt"], str):
            raise AlignlabError(f"prompt {i} is a conversation; sampling takes plain-text prompts", where=str(path))
        if problem := reference_problem(row):  # eval and compare grade against them
            raise AlignlabError(f"prompt {i}: {problem}", where=str(path),
                                fix='e.g. "reference": "Ottawa", "aliases": ["Ottawa"]')
    return rows[:limit] if limit else rows


def check_sampler(n: int, temperature: float, top_p: float) -> None:
    """The sampling settings, checked before any model loads (transformers refused --top-p -1 only after loading,
    and took --top-p 1.5 or --temperature -3 as given). Temperature 0 is greedy decoding."""
    if not math.isfinite(temperature) or temperature < 0:
        raise AlignlabError(f"--temperature must be 0 (greedy) or more, got {temperature}",
                            fix=f"pass e.g. --temperature {RATING_TEMPERATURE}")
    if not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise AlignlabError(f"--top-p must be in (0, 1], got {top_p}", fix="pass --top-p 1 (no nucleus cut) or e.g. 0.9")
    if n > 1 and temperature == 0:
        raise AlignlabError(f"-n {n} at temperature 0 gives {n} identical answers",
                            fix="pass --temperature > 0 or -n 1")


def sample_responses(
    store,
    model,
    tokenizer,
    rows: list[dict],
    n: int,
    *,
    model_name: str,
    run: str | None = None,
    round: int = 0,
    temperature: float = RATING_TEMPERATURE,
    top_p: float = 1.0,
    max_new_tokens: int = SHORT_MAX_NEW_TOKENS,
    batch_size: int = 16,
    seed: int = 0,
    system_prompt: str | None = None,
    source: str | None = None,
    description: str = "sampling",
    heldout: set[str] | None = None,
    each_batch: bool = True,
    drop_unfinished: bool = False,
    left_out: dict[str, int] | None = None,
) -> list[int]:
    """Generate ``n`` answers per row's prompt and store them, a batch at a time; returns the new response ids
    (grouped per prompt; an answer the store already holds is left out). Prompts in ``heldout`` are stored as the
    held-out split, which `alignlab feedback export` leaves out. ``each_batch=False`` stores all or nothing (a loop
    round is sampled whole or not at all). ``drop_unfinished`` leaves out an answer cut at ``max_new_tokens`` before
    any sentence ended (else it is stored cut), counted in ``left_out["unfinished"]``."""
    from alignlab.generate import generate
    from alignlab.progress import console, progress_bar

    if n < 1 or (n > 1 and temperature <= 0):
        raise AlignlabError(f"-n must be at least 1, got {n}" if n < 1 else
                            f"{n} samples per prompt at temperature 0 would be identical", fix="pass -n 1 or more, "
                            "and --temperature > 0 for more than one")
    prompts, held = [r["prompt"] for r in rows], set(heldout or ())
    sampler = {"n": n, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens, "seed": seed,
               "system_prompt": system_prompt}
    ids: list[int] = []
    chunk = max(1, batch_size)
    fields = dict(model=model_name, run=run, round=round, sampler=sampler)
    done: list[tuple[list[str], list[str]]] = []  # each_batch=False: generated, stored together at the end
    try:
        with progress_bar() as bar:
            task = bar.add_task(description, total=len(prompts) * n)
            for i in range(0, len(prompts), chunk):
                part = prompts[i : i + chunk]
                texts = generate(model, tokenizer, part, max_new_tokens=max_new_tokens, temperature=temperature,
                                 top_p=top_p, num_return_sequences=n, batch_size=chunk, system_prompt=system_prompt,
                                 seed=seed + i if seed is not None else None)
                texts = [_kept(t, tokenizer, max_new_tokens, drop_unfinished) for t in texts]
                if left_out is not None:
                    left_out["unfinished"] = left_out.get("unfinished", 0) + texts.count(None)
                if each_batch:
                    ids += _store_batch(store, part, texts, n, held, source, fields)
                else:
                    done.append((part, texts))
                bar.advance(task, len(part) * n)
        if done:
            with store.transaction():  # the write lock only for the writing: a rater's judgement is not kept waiting
                for part, texts in done:
                    ids += _store_batch(store, part, texts, n, held, source, fields)
    except KeyboardInterrupt:
        if each_batch:
            console.print(f"[yellow]interrupted[/]: the {len(ids)} answers of the finished batches are stored")
        raise
    return ids


def _kept(text: str, tokenizer, max_new_tokens: int, drop_unfinished: bool = False) -> str | None:
    """An answer cut at ``max_new_tokens`` kept up to its last finished sentence (as synth keeps it): rated the better
    one, a cut answer would teach the model to stop mid-sentence. An answer that ended before the limit is kept whole
    ("2 + 2 = 4" has no full stop and is finished). A cut one with no finished sentence is None with
    ``drop_unfinished``, else kept as it was cut."""
    from alignlab.eval.correct import unfinished
    from alignlab.synth.opening import trim_unfinished

    if not unfinished(text) or len(tokenizer(text, add_special_tokens=False)["input_ids"]) < max_new_tokens - 2:
        return text
    return trim_unfinished(text) or (None if drop_unfinished else text)


def _store_batch(store, prompts: list[str], texts: list[str], n: int, heldout: set[str], source: str | None,
                 fields: dict) -> list[int]:
    """One batch's answers in one transaction (Ctrl-C keeps the batches before it). An answer already stored for
    its prompt by the same model and run (a rerun with the same seed, or two samples alike) is not stored again:
    rating it twice would count one judgement twice."""
    with store.transaction():
        pids = store.add_prompts([{"text": p, "source": source, "split": "heldout" if p in heldout else "train"}
                                  for p in prompts])
        rows = []
        for i, pid in enumerate(pids):
            seen: set[str] = set()  # two samples alike in this batch
            for text in texts[i * n : (i + 1) * n]:
                if text is not None and text not in seen and store.find_response(
                        pid, text, model=fields["model"], run=fields["run"]) is None:
                    rows.append({"prompt_id": pid, "text": text, **fields})
                seen.add(text)
        return store.add_responses(rows) if rows else []

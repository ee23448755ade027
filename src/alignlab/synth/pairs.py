"""Matched persona pairs from a teacher: same question, similar length, differing in the persona.

For each prompt the teacher writes ``candidates`` answers in persona (with the persona system prompt) and
as many plain ones (no system prompt; the model's own default). The rater scores all of them. Then:

  chosen    the in-persona answer the rater scores highest
  rejected  the plain answer closest in length to the chosen one

and the pair is kept only if it is matched:

  dropped for length  longer / shorter word count > ``max_length_ratio``: a pair that differs mainly in
                      length teaches DPO "be longer" (or shorter), not the persona
  dropped other       no answer with text on a side (the teacher returned none, or cut every one before a
                      sentence ended), no in-persona answer that is correct where the prompt can be graded, identical
                      texts, or no persona gain (chosen's score does not beat rejected's by more than ``min_margin``):
                      the pair would not point along the persona axis

Pairs are written in TRL's preference format ``{"prompt", "chosen", "rejected"}`` WITHOUT the system prompt,
so training on them moves the persona from the context into the weights (context distillation).
"""

from __future__ import annotations

import json
from pathlib import Path

from alignlab.config import MAX_NEW_TOKENS, RATING_TEMPERATURE
from alignlab.errors import AlignlabError


def length_ratio(a: str, b: str) -> float:
    """Longer over shorter word count (inf when exactly one is empty, 1 when both are)."""
    la, lb = len(a.split()), len(b.split())
    if min(la, lb) == 0:
        return 1.0 if la == lb else float("inf")
    return max(la, lb) / min(la, lb)


class PartialPairs(Exception):
    """A failure (an endpoint down) once some batches finished, or Ctrl-C at any point: the ``rows`` kept from the
    first ``done`` prompts; the error that stopped the rest is the ``__cause__``."""

    def __init__(self, rows: list[dict], done: int):
        super().__init__(f"stopped after {done} prompts")
        self.rows, self.done = rows, done


def _pair(prompt: str, persona: list[str], plain: list[str], scores: list[float], j: int, n_part: int, k: int,
          right: list[bool], max_length_ratio: float, min_margin: float) -> dict | str:
    """One prompt's pair, or why it was dropped: the best in-persona answer that may be chosen, against the plain
    answer nearest it in length (then the lowest scored). Empty answers go first: an answer with no text is not a
    wrong one, and more --candidates would not help."""
    mid = n_part * k
    ours = [(a, s, ok) for a, s, ok in zip(persona, scores[j * k : (j + 1) * k], right) if a.strip()]
    theirs = [(a, s) for a, s in zip(plain, scores[mid + j * k : mid + (j + 1) * k]) if a.strip()]
    if not ours or not theirs:
        return "empty"
    ours = [(a, s) for a, s, ok in ours if ok]
    if not ours:
        return "chosen_wrong"
    chosen, c_score = max(ours, key=lambda x: x[1])
    rejected, r_score = min(theirs, key=lambda x: (length_ratio(chosen, x[0]), x[1]))
    if chosen.strip() == rejected.strip():
        return "identical"
    if length_ratio(chosen, rejected) > max_length_ratio:
        return "length"
    if c_score - r_score <= min_margin:
        return "no_persona_gain"
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def check_settings(candidates: int, max_length_ratio: float, temperature: float) -> None:
    """Settings no pair could come from, refused before a model loads or a request goes out."""
    if candidates < 1:
        raise AlignlabError(f"--candidates must be at least 1, got {candidates}")
    if candidates > 1 and temperature <= 0:  # greedy: k identical requests per side, paid for and thrown away
        raise AlignlabError(f"{candidates} candidates per side at temperature {temperature:g} would be identical",
                            fix="pass --temperature > 0 (e.g. 0.7) for more than one, or -k 1")
    if max_length_ratio < 1:
        raise AlignlabError(f"--max-length-ratio must be >= 1, got {max_length_ratio}")


def build_pairs(
    teacher,
    prompts: list[str],
    rater,
    system_prompt: str,
    candidates: int = 4,
    max_length_ratio: float = 1.5,
    min_margin: float = 0.0,
    temperature: float = RATING_TEMPERATURE,
    top_p: float = 1.0,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 8,
    rows: list[dict] | None = None,
    correct=None,
) -> tuple[list[dict], dict]:
    """(pairs, summary) where summary counts kept, dropped_length, dropped_other (and why) over ``prompts``, and the
    teacher's answers and how many of them were empty.

    With ``correct`` (graded rows -> scores, the scorecard's correct score), each in-persona answer is graded as the
    scorecard grades it against its prompt row in ``rows`` (one per prompt: its reference or chosen side, answer
    number, aliases, key terms; the bundled references by prompt): the chosen answer is the rater's best among those
    that are correct (at least 0.5) or cannot be graded; a prompt whose in-persona answers are all wrong is dropped
    (``chosen_wrong``): a pair must teach the voice, not a wrong fact."""
    from alignlab.progress import progress_bar

    if not getattr(rater, "automatic", True):
        raise AlignlabError(f"synth needs an automatic rater, not the person '{rater.name}'",
                            fix="use --rater reward:persona_heuristic, classifier or judge")
    check_settings(candidates, max_length_ratio, temperature)
    gen = dict(n=candidates, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    pairs: list[dict] = []
    why = {"empty": 0, "identical": 0, "no_persona_gain": 0, "chosen_wrong": 0, "length": 0}
    done = answers = empty = 0
    try:
        with progress_bar() as bar:
            task = bar.add_task("synth", total=len(prompts))
            for i in range(0, len(prompts), batch_size):
                part = prompts[i : i + batch_size]
                # the teacher keeps an answer cut at max_new_tokens up to its last finished sentence ("" if none)
                persona = teacher.answer(part, system_prompt, **gen)
                plain = teacher.answer(part, None, **gen)
                flat_a = [a for group in persona for a in group] + [a for group in plain for a in group]
                answers, empty = answers + len(flat_a), empty + sum(not a.strip() for a in flat_a)
                scores = rater.score([p for p in part for _ in range(candidates)] * 2, flat_a)
                graded_as = rows[i : i + batch_size] if rows else [{"prompt": p} for p in part]
                right = _correct_candidates(persona, graded_as, correct)
                for j, prompt in enumerate(part):
                    row = _pair(prompt, persona[j], plain[j], scores, j, len(part), candidates, right[j],
                                max_length_ratio, min_margin)
                    if isinstance(row, str):
                        why[row] += 1
                    else:
                        pairs.append(row)
                done = i + len(part)
                bar.advance(task, len(part))
    except (Exception, KeyboardInterrupt) as err:
        # the finished batches' pairs are not lost with the batch that failed; after Ctrl-C (or SIGTERM, which synth
        # raises as one) the command says how far it got even when none was kept
        if pairs or isinstance(err, KeyboardInterrupt):
            raise PartialPairs(pairs, done) from err
        raise
    dropped_length = why.pop("length")
    summary = {"prompts": len(prompts), "kept": len(pairs), "dropped_length": dropped_length,
               "dropped_other": sum(why.values()), "other": why, "rater": rater.name,
               "max_length_ratio": max_length_ratio, "min_margin": min_margin, "answers": answers,
               "empty_answers": empty}
    return pairs, summary


def _correct_candidates(persona: list[list[str]], rows: list[dict], correct) -> list[list[bool]]:
    """Per prompt of this batch, per in-persona answer: whether it may be the chosen side: True where the scorecard
    finds it correct or cannot grade it (True for all without a check). Empty answers are not graded."""
    ok = [[True] * len(group) for group in persona]
    if correct is None:
        return ok
    from alignlab.eval.scores import THRESHOLD
    from alignlab.synth.opening import graded

    ask = [(j, c) for j, group in enumerate(persona) for c in range(len(group)) if group[c].strip()]
    scores = correct([graded(rows[j], persona[j][c]) for j, c in ask]) if ask else []
    for (j, c), v in zip(ask, scores):
        ok[j][c] = v is None or v >= THRESHOLD
    return ok


def write_pairs(path: str | Path, rows: list[dict], append: bool = False) -> Path:
    """Write rows as JSONL atomically (a temporary file in the same directory, then rename); with ``append``, after
    the rows the file holds (a run going on after one that stopped)."""
    from alignlab import fsutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.read_text(encoding="utf-8") if append and path.is_file() else ""
    if before.strip() and not before.endswith("\n"):
        before += "\n"
    return fsutil.write_text(path, before + "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def summary_line(summary: dict, out: str | Path | None = None) -> str:
    other = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary["other"].items() if v) or "none"
    where = (f" -> {out}" if summary["kept"] else " (nothing written)") if out else ""
    return (f"kept {summary['kept']} of {summary['prompts']} pairs{where}; dropped for length {summary['dropped_length']}"
            f" (ratio > {summary['max_length_ratio']:g}); dropped other {summary['dropped_other']} ({other})")

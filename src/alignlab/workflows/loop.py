"""`alignlab loop`: rounds of sample -> judge -> export -> train -> score, each round starting from the last adapter.

One round r:

  1. sample   ``n`` answers to ``per_round`` train prompts not used in any earlier round, from the current
              policy (round 1: the base; round r: round r-1's adapter), into the feedback store as round r
  2. judge    a person rates them (`alignlab rate --round r`; the loop polls the store until enough
              judgements are in or Enter is pressed), or an automatic rater scores each prompt's answers and
              stores picks (dpo: best vs worst) or thumbs (kto: above / below the prompt's mean score)
  3. export   round r's judgements as a dpo or kto dataset under ``data/loop/``
  4. train    a new run starting from the previous round's adapter (``init_adapter``)
  5. score    the new adapter against the base on held-out prompts (never a train prompt: one in both files is
              left out of training), by the scorecard or --eval-rater; the loop warns when that score shares
              the labeller's signal (the same rater, classifier or voice contrast), as it then grades itself

Each round is a row of the store's ``rounds`` table, written as the round goes, so the loop can stop after any
step and pick up where it left off: a finished round is never redone, an unfinished one resumes at the first
step it had not finished. ``rounds`` is the total: asking for 3 after 2 are done runs round 3 only. A round keeps
the method it sampled for; answers stored by a run that stopped before recording them count as the round's.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from alignlab import methods
from alignlab.config import DEFAULT_PERSONA, LoopConfig
from alignlab.errors import AlignlabError
from alignlab.progress import console

METHODS = methods.names(loop=True)  # the export format of each: methods.get(name).feedback


_LOOP = LoopConfig()


@dataclass
class LoopSettings:
    """One run of `alignlab loop`: ``rounds`` and the run's own options over the project's ``loop:`` section
    (``alignlab.config.LoopConfig`` holds every default)."""

    rounds: int
    rater: str = _LOOP.rater
    method: str = _LOOP.method or METHODS[0]
    per_round: int = _LOOP.per_round
    n: int = _LOOP.n
    eval_rater: str | None = None  # None: the scorecard (a warning says when it shares the labeller's signal)
    eval_prompts: int = _LOOP.eval_prompts
    temperature: float = _LOOP.temperature
    top_p: float = _LOOP.top_p
    max_new_tokens: int = _LOOP.max_new_tokens
    keep_unfinished: bool = _LOOP.keep_unfinished
    catchphrase_cost: float = _LOOP.catchphrase_cost
    eval_temperature: float = _LOOP.eval_temperature
    seed: int = _LOOP.seed
    need: int | None = None  # judgements to wait for from a person (default: one per prompt for dpo, per response for kto)
    poll_seconds: float = _LOOP.poll_seconds
    judge: dict = field(default_factory=dict)  # judge_url, judge_model, judge_key_env
    start_run: str | None = None  # round 1 starts from this run's adapter instead of the base

    @classmethod
    def from_config(cls, loop, rounds: int, **given) -> "LoopSettings":
        """The project's ``loop:`` section (a LoopConfig) with the options given here (None: not given) on top."""
        fields = {k: getattr(loop, k) for k in type(loop).model_fields if getattr(loop, k) is not None}
        return cls(rounds=rounds, **{**fields, **{k: v for k, v in given.items() if v is not None}})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- steps -----------------------------------------------------------------------------------------------------


def fresh_prompts(store, rows: list[dict], k: int) -> list[dict]:
    """The first ``k`` rows whose prompt has no response in any round >= 1 yet."""
    used = store.prompts_answered_in_rounds()
    return [row for row in rows if row["prompt"] not in used][:k]


def collect_automatic(store, rater, r: int, method: str, tol: float = 1e-6, references: dict | None = None,
                      rows: dict | None = None) -> dict:
    """Score round r's responses with ``rater`` and store picks (dpo) or thumbs (kto); returns counts and mean score.
    ``rows`` (prompt -> its row of the prompts file) gives the rater that row's columns, one value per response: a
    reward spec's ``answer``, the scorecard's ``reference`` (so it counts a wrong answer as wrong); ``references``
    (prompt -> reference answer) adds a ``reference`` column of its own."""
    judgements, mean = automatic_judgements(store, rater, r, method, tol, references, rows)
    store.add_judgements(judgements)
    return {"judgements": len(judgements), "mean_score": mean}


def automatic_judgements(store, rater, r: int, method: str, tol: float = 1e-6, references: dict | None = None,
                         rows: dict | None = None) -> tuple[list[dict], float | None]:
    """:func:`collect_automatic`'s judgements and mean score, not stored: the loop stores them together with the
    round's count of them."""
    from alignlab.eval.raters import Rater

    responses = store.round_responses(r)
    if not responses:
        return [], None
    found = [(rows or {}).get(x["prompt"], {}) for x in responses]
    keys = [k for k in dict.fromkeys(k for row in found for k in row) if k != "prompt"]
    columns = {k: [row.get(k) for row in found] for k in keys}
    if references:
        columns["reference"] = [references.get(x["prompt"]) for x in responses]
    scores = rater.score([x["prompt"] for x in responses], [x["text"] for x in responses], **columns)
    # the floor (the scorecard's wrong or flagged) is read before a charge that only orders the answers
    floors = dict(zip((x["id"] for x in responses), getattr(rater, "floor_scores", None) or scores))
    groups: dict[int, list] = {}
    for x, s in zip(responses, scores):
        groups.setdefault(x["prompt_id"], []).append((x, s))
    own_pick = type(rater).pick is not Rater.pick  # the judge asks for the pick itself (both orders)
    judgements = []
    for items in groups.values():
        if len(items) < 2:
            continue
        if methods.get(method).kind == "preference":  # a pick between the best and the worst answer
            # clean (at or above the floor) first, then by score: a charge (the scorecard's catchphrase) orders the
            # answers, and never puts a wrong or flagged one above a clean one
            clean = lambda t: rater.floor is None or floors[t[0]["id"]] >= rater.floor  # noqa: E731
            (best, sb), (worst, sw) = (max(items, key=lambda t: (clean(t), t[1])),
                                       min(items, key=lambda t: (clean(t), t[1])))
            if best["id"] == worst["id"]:
                worst, sw = next((x, s) for x, s in items if x["id"] != best["id"])
            if own_pick:
                verdict = rater.pick(best["prompt"], best["text"], worst["text"])
            else:  # a best answer under the rater's floor (the scorecard's wrong or flagged) teaches nothing
                ahead = sb > sw + tol or not clean((worst, sw))
                verdict = "a" if clean((best, sb)) and ahead else "tie"
            judgements.append({"kind": "pick", "response_id": best["id"], "value": verdict,
                               "other_response_id": worst["id"], "rater": rater.name, "round": r})
        else:  # thumbs: up above the prompt's mean score, down below it; never up under the rater's floor
            mean = sum(s for _, s in items) / len(items)
            for x, s in items:
                if abs(s - mean) > tol:
                    up = s > mean and (rater.floor is None or floors[x["id"]] >= rater.floor)
                    judgements.append({"kind": "thumb", "response_id": x["id"], "value": 1 if up else -1,
                                       "rater": rater.name, "round": r})
    return judgements, sum(scores) / len(scores)


class EnterKey:
    """Reads lines from ``input_fn`` on a daemon thread, so the loop can poll for Enter while it polls the store.
    ``terminal``: whether someone can press Enter (stdin a terminal, or an ``input_fn`` of the caller's own)."""

    def __init__(self, input_fn: Callable[[str], str], terminal: bool = True):
        self.input_fn, self.lines, self.thread, self.terminal = input_fn, queue.Queue(), None, terminal

    def _read(self) -> None:
        while True:
            try:
                self.input_fn("")
            except (EOFError, OSError, RuntimeError):
                return  # no terminal: only the judgement count can end the wait
            self.lines.put(True)

    def clear(self) -> None:
        while not self.lines.empty():
            self.lines.get_nowait()
        if self.thread is None:
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def pressed(self) -> bool:
        try:
            return self.lines.get_nowait()
        except queue.Empty:
            return False


def wait_for_person(store, r: int, need: int, poll_seconds: float, enter: EnterKey, mode: str,
                    echo: Callable[[str], Any], left: Callable[[], int] | None = None) -> int:
    """Tell the person what to rate, then poll the store until ``need`` judgements are in, Enter is pressed, or
    ``left()`` (what the person has not rated yet) is 0: waiting on would wait forever."""
    have = store.count_judgements(r)
    echo(f"round {r}: rate the new answers in another terminal:  alignlab rate --round {r} --mode {mode}")
    # without a terminal (stdin closed or a file) Enter cannot be pressed: offering it misled
    now = "; press Enter to start now." if enter.terminal else " (or when every answer is rated)."
    echo(f"  (or in the browser: alignlab ui --round {r}). Training starts at {need} judgements{now}")
    enter.clear()
    last = -1
    while have < need and not enter.pressed() and (left is None or left() > 0):
        if have != last:
            echo(f"  {have}/{need} judgements")
            last = have
        time.sleep(poll_seconds)
        have = store.count_judgements(r)
    return have


class _Policies:
    """One loaded policy at a time: the adapter scored at the end of round r samples round r+1 without a reload."""

    def __init__(self, model_name: str, device: str):
        self.model_name, self.device, self.key, self.value = model_name, device, object(), None

    def get(self, run_dir: str | None):
        from alignlab.models.loading import load_for_inference

        if self.key != run_dir:
            self.value = None
            model, tok, _ = load_for_inference(None if run_dir else self.model_name, run_dir, device=self.device)
            self.key, self.value = run_dir, (model, tok)
        return self.value


# --- the loop --------------------------------------------------------------------------------------------------


def base_answers(model, tok, prompts: list[str], s: LoopSettings, system_prompt: str | None, description: str,
                 seed: int, chunk: int = 16) -> list[str]:
    """One answer to each prompt from ``model``'s base (its LoRA adapter switched off), decoded and trimmed as a
    round's answers are (``s``'s temperature, top_p and token cap; a cut answer kept to its last finished sentence),
    with a progress bar."""
    from alignlab.generate import generate
    from alignlab.progress import progress_bar
    from alignlab.synth.sample import _kept

    out: list[str] = []
    with model.disable_adapter(), progress_bar() as bar:
        task = bar.add_task(description, total=len(prompts))
        for i in range(0, len(prompts), chunk):
            texts = generate(model, tok, prompts[i : i + chunk], max_new_tokens=s.max_new_tokens,
                             temperature=s.temperature, top_p=s.top_p, batch_size=chunk, system_prompt=system_prompt,
                             seed=seed + i)
            out += [_kept(t, tok, s.max_new_tokens) for t in texts]
            bar.advance(task, len(prompts[i : i + chunk]))
    return out


def _check_settings(s: LoopSettings) -> None:
    if s.method not in METHODS:
        raise AlignlabError(f"unknown loop method '{s.method}' (--method, else alignlab.yaml's loop.method)",
                            fix="use " + " or ".join(f"--method {m}" for m in METHODS))
    if s.n < 2:
        raise AlignlabError(f"-n {s.n}: the loop compares answers to the same prompt, so it needs -n 2 or more")
    if s.temperature <= 0:  # the sampler would refuse it only after the models load, with advice the loop refuses
        raise AlignlabError(f"--temperature must be > 0, got {s.temperature} (the loop compares 2+ answers to each "
                            "prompt, and at 0 they are all the same)",
                            fix="pass --temperature 1, or set alignlab.yaml's loop.temperature above 0")
    if s.rounds < 1:
        raise AlignlabError(f"--rounds must be at least 1, got {s.rounds}")


def run_loop(root: str | Path, cfg, s: LoopSettings, input_fn: Callable[[str], str] = input,
             echo: Callable[[str], Any] = console.print) -> list[dict]:
    """:func:`_run_rounds`, one loop per project at a time (two would both train round N on one store)."""
    from alignlab import fsutil

    with fsutil.exclusive(Path(root) / ".alignlab-loop.lock", "an alignlab loop"):
        return _run_rounds(root, cfg, s, input_fn, echo)


def _stdin_is_terminal(input_fn: Callable[[str], str]) -> bool:
    """Whether a person can answer ``input_fn`` (press Enter): the builtin input() on a terminal, or the caller's own."""
    import sys

    if input_fn is not input:
        return True
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (OSError, ValueError):  # a closed stdin
        return False


def _check_someone_rates(s: LoopSettings, terminal: bool) -> None:
    """A person rater under CI with no terminal is refused before anything runs: no one is there to rate, and the
    loop would wait for judgements forever. Without CI a closed stdin is fine: `alignlab ui` or `alignlab rate` in
    another terminal rates while the loop waits (a loop started in the background, say)."""
    import os

    ci = os.environ.get("CI", "").strip()
    if ci.lower() not in ("", "0", "false", "no") and not terminal and s.rater.partition(":")[0].strip() == "person":
        raise AlignlabError(f"the loop's rater is a person, and this runs under CI (CI={ci}) with no terminal: it "
                            "would wait for judgements forever",
                            fix="pass an automatic rater (--rater scorecard, judge, classifier, contrast or "
                                "reward:<name>), or run it in a terminal (or unset CI to wait for `alignlab ui`)")


def _run_rounds(root: str | Path, cfg, s: LoopSettings, input_fn: Callable[[str], str],
                echo: Callable[[str], Any]) -> list[dict]:
    """Run rounds ``last finished + 1 .. s.rounds``; returns the rounds table.

    Each round, from the previous round's adapter (or the base): 1. sample answers to fresh train prompts,
    2. judge them (an automatic rater, or a person through the store), 3. export the judgements in the
    method's format, 4. train, 5. score the new adapter on held-out prompts. Every step writes its result
    to the store's rounds table first, so a rerun continues where the last one stopped.
    """
    from alignlab import rundir
    from alignlab.feedback.store import DB_NAME, open_store

    root = Path(root)
    _check_settings(s)
    if s.start_run:
        s.start_run = str(rundir.check_run_dir(s.start_run))
    store = open_store(root / DB_NAME)
    loop = None
    try:
        done = [x["round"] for x in store.rounds_table() if x["status"] == "done"]
        first = max(done, default=0) + 1
        if first > s.rounds:
            echo(f"{first - 1} round(s) already done; ask for --rounds {first} or more to continue")
            return store.rounds_table()
        _same_method(store.round_row(first), s)
        terminal = _stdin_is_terminal(input_fn)
        _check_someone_rates(s, terminal)
        loop = _Loop(root, cfg, s, store, EnterKey(input_fn, terminal), echo)
        loop.check_training(_init_run(store, first, s))  # a bad training setting fails now, not after a round is rated
        for r in range(first, s.rounds + 1):
            init_run = _init_run(store, r, s)
            was = store.round_row(r) or {}
            judged = was.get("judgements") is not None  # the rater who judged it stays named
            if judged and was.get("rater") not in (None, loop.label.name):
                echo(f"round {r} was labelled by {was['rater']}: it trains on those labels ({loop.label.name} labels "
                     f"from round {r + 1})")
            row = store.update_round(r, method=s.method, **({} if judged else {"rater": loop.label.name}),
                                     eval_rater=loop.scorer.name if loop.scorer else None, init_run=init_run)
            echo(f"[bold]round {r}/{s.rounds}[/] from {init_run or 'the base model'}")
            details = json.loads(row["details"]) if row["details"] else {}
            row = loop.sample(r, row, init_run)
            row = loop.judge(r, row, details, init_run)
            info = rundir.read_run(row["run_dir"]) if row["run_dir"] and Path(row["run_dir"], "run.json").is_file() else {}
            if info.get("status") != "done":
                trained = (details.get("export") or {}).get("sha256")  # what the round's run trained on, if it began
                data = loop.export(r, row, details)
                resume = _resumable(row["run_dir"], info, s.method, trained == details["export"]["sha256"])
                row = loop.train(r, data, details, init_run, resume=resume)
            loop.score(r, row, details)
        return store.rounds_table()
    finally:
        if loop is not None:
            loop.close()
        store.close()


class _Loop:
    """The five steps of a round, over one store, one labelling rater and one held-out scorer."""

    def __init__(self, root: Path, cfg, s: LoopSettings, store, enter: EnterKey, echo: Callable[[str], Any]):
        from alignlab.eval.raters import get_rater
        from alignlab.eval.scorecard import stratified
        from alignlab.models.loading import pick_device

        self.root, self.cfg, self.s, self.store, self.enter, self.echo = root, cfg, s, store, enter, echo
        self.label = self.scorer = self.persona_rater = None
        self.unfinished = 0  # the last sampling's answers cut before any sentence ended (left out unless kept)
        self.train_rows, held = _split_prompts(root, cfg.data_dir, echo)
        self.heldout_texts = {row["prompt"] for row in held}
        self.heldout = stratified(held, None, s.eval_prompts)
        raters = dict(project=root, persona=cfg.persona, **s.judge)
        self.label = get_rater(s.rater, **raters)
        if hasattr(self.label, "catchphrase_cost"):
            self.label.catchphrase_cost = s.catchphrase_cost
        try:
            self.label.check_rows(self.train_rows)  # a reward's missing 'answer' fails now, not after sampling
            self.persona_rater = get_rater(s.eval_rater, voice_only=True, **raters) if s.eval_rater else None
            if self.persona_rater is not None and not self.persona_rater.automatic:  # it failed after a whole round
                raise AlignlabError(f"--eval-rater {s.eval_rater}: held-out answers are scored by an automatic rater "
                                    "when the round ends, not rated by a person",
                                    fix="leave --eval-rater out (the scorecard), or pass judge, classifier or "
                                        "reward:<name>; a person compares rounds with "
                                        "`alignlab compare A B --judge person`")
            self.scorer = self._scorer()
        except BaseException:
            self.close()
            raise
        if self.scorer is None:
            echo("no labelled answers for this persona yet: each round is scored on held-out prompts once there are "
                 "(the picks of this loop's own rounds count)")
        elif warning := _shared_signal(self.label, self.scorer):
            echo(f"[yellow]warning: {warning}; --eval-rater gives a score that does not come from the labeller[/]")
        elif self.persona_rater is None and self.cfg.persona != DEFAULT_PERSONA and _only_loop_labels(root):
            echo("[yellow]note: the held-out scorer is trained on this loop's own picks (no other labelled pairs); "
                 "--eval-rater gives a score that does not come from the labeller[/]")
        self.policies = _Policies(cfg.model, pick_device(cfg.train.device))
        self.runs_dir = root / cfg.runs_dir

    def _scorer(self):
        """The held-out scorer; None for a persona of the user's own with no labelled pairs yet and no rater given
        (the loop starts from prompts alone; a round is scored once there are labels, its own picks included)."""
        from alignlab.eval.scores import scorer_for
        from alignlab.project import labelled_pairs

        if self.persona_rater is None and self.cfg.persona != DEFAULT_PERSONA and not labelled_pairs(self.root):
            return None
        scorer = scorer_for(self.root, self.cfg.persona, self.persona_rater)
        scorer.name = self.persona_rater.name if self.persona_rater else "scorecard"
        return scorer

    def _same_scorer(self, r: int, details: dict) -> None:
        """Record which labels the held-out persona classifier was trained on, and say so when they changed since
        the previous round (a rerun retrains it on the labels there are now): the persona columns of the two rounds,
        the base's included, then come from different scorers."""
        digest, labels = _labels(self.scorer)
        if self.scorer.persona_rater is not None or not digest:
            return
        details["scorer_labels"] = {"sha256": digest, "labels": labels}
        prev = self.store.round_row(r - 1) if r > 1 else None
        was = (json.loads(prev["details"]) if prev and prev["details"] else {}).get("scorer_labels")
        if was and was["sha256"] != digest:
            self.echo(f"[yellow]round {r} note: the persona scorer was retrained ({was['labels']} -> {labels} "
                      f"labelled answers) since round {r - 1}: compare the two rounds' persona scores with care[/]")

    def close(self) -> None:
        for rater in (self.label, getattr(self, "persona_rater", None)):
            if rater is not None:
                rater.close()

    def check_training(self, init_run: str | None) -> None:
        """engine.prepare's cheap checks (method, config, trainer overrides, the adapter to go on from) on one stand-in
        row, before the round samples: a bad --set failed only after a round was sampled and rated."""
        import tempfile

        from alignlab.train import engine

        if methods.get(self.s.method).kind == "preference":
            rows = [{"prompt": "Hello?", "chosen": "Hi.", "rejected": "Hello."}]
        else:
            rows = [{"prompt": "Hello?", "completion": text, "label": up}
                    for text, up in (("Hi.", True), ("Hello.", False))]
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "check.jsonl"
            data.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
            engine.prepare(self.s.method, self.cfg, str(data), self.runs_dir, run_dir=Path("/dev/null"),
                           skip_invalid=True, init_adapter=init_run)

    def sample(self, r: int, row: dict, init_run: str | None) -> dict:
        """1. ``n`` answers to each of ``per_round`` train prompts no earlier round used, from the current policy.
        Answers the store holds for the round count as sampled (a run stopped before it recorded them would have
        sampled more prompts); a round without two different answers to any prompt is sampled again."""
        if row["judgements"] is not None:
            return row
        two = self.label.automatic or methods.get(self.s.method).kind == "preference"  # a person can thumb one answer
        groups = _answers(self.store, r)
        if not groups:
            prompts = fresh_prompts(self.store, self.train_rows, self.s.per_round)
            if not prompts:
                raise AlignlabError(f"round {r}: every train prompt was used in an earlier round",
                                    fix=f"add prompts to {self.cfg.data_dir}/prompts.jsonl")
            self._sample(r, prompts, init_run)
        elif two and row["responses"] and not _comparable(groups):  # the rerun the error below asks for
            self._sample(r, [{"prompt": prompt} for prompt in groups], init_run)
        groups = _answers(self.store, r)
        row = self.store.update_round(r, prompts=len(groups), responses=sum(map(len, groups.values())))
        if not groups or (two and not _comparable(groups)):
            raise self._nothing_to_rate(r, row)
        return row

    def _nothing_to_rate(self, r: int, row: dict) -> AlignlabError:
        """A round left with no answer, or (for picks) no prompt with two different answers: the token cap is named
        when it left out more answers than it kept, the temperature otherwise."""
        cut, s = self.unfinished, self.s
        again = f": round {r} samples its prompts again"
        if not row["responses"] and cut:
            return AlignlabError(f"round {r}: every answer was cut at --max-new-tokens {s.max_new_tokens} before any "
                                 f"sentence ended ({cut} left out), so there is nothing to rate",
                                 fix=f"rerun `alignlab loop` with a higher --max-new-tokens (or --keep-unfinished){again}")
        if not row["responses"]:  # every answer repeated one the store already holds for this model
            return AlignlabError(f"round {r}: no new answer was stored: at --temperature {s.temperature} every answer "
                                 "repeated one the feedback store already holds", fix="rerun `alignlab loop` with a "
                                 f"higher --temperature (or another --seed){again}")
        hints = ["a higher --temperature (or another --seed)"]
        if cut:
            hints.insert(0 if cut >= row["responses"] else 1, f"a higher --max-new-tokens than {s.max_new_tokens}")
        return AlignlabError(
            f"round {r}: no prompt got two different answers ({row['responses']} answer(s) to {row['prompts']} "
            f"prompt(s) at --temperature {s.temperature}" + (f"; {cut} cut before any sentence ended were left out"
                                                              if cut else "") + "), so there is nothing to compare",
            fix=f"rerun `alignlab loop` with {' and '.join(hints)}{again}")

    def _sample(self, r: int, prompts: list[dict], init_run: str | None) -> None:
        from alignlab.synth.sample import sample_responses

        s = self.s
        model, tok = self.policies.get(init_run)
        left_out: dict[str, int] = {}
        sample_responses(self.store, model, tok, prompts, s.n, model_name=self.cfg.model,
                         run=Path(init_run).name if init_run else None, round=r,
                         temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                         seed=s.seed + r, system_prompt=self.cfg.system_prompt, source="loop",
                         description=f"round {r}: sampling", heldout=self.heldout_texts, each_batch=False,
                         drop_unfinished=not s.keep_unfinished, left_out=left_out)
        self.unfinished = left_out.get("unfinished", 0)
        if self.unfinished:
            self.echo(f"round {r}: {self.unfinished} of {len(prompts) * s.n} answers were cut at --max-new-tokens "
                      f"{s.max_new_tokens} before any sentence ended and are left out (raise --max-new-tokens, or "
                      "set loop.keep_unfinished: true)")

    def judge(self, r: int, row: dict, details: dict, init_run: str | None = None) -> dict:
        """2. An automatic rater judges now; a person's judgements are awaited in :meth:`export`. The scorecard
        rater gets the base's answers to the round's prompts, to find the answers' catchphrases against."""
        if not self.label.automatic or row["judgements"] is not None:
            return row
        rows = {row["prompt"]: row for row in self.train_rows}  # their columns: the reference, a reward's answer
        if getattr(self.label, "catchphrase_cost", 0):
            self.label.others = self._base_answers(r, init_run)
        details.pop("catchphrases", None)  # an earlier judging's words, set aside with its judgements
        judgements, mean = automatic_judgements(self.store, self.label, r, self.s.method, rows=rows)
        details["label_mean_score"] = mean
        if getattr(self.label, "found", None):
            found, held, total = self.label.found, self.label.held, row["responses"]
            details["catchphrases"] = {"words": found, "answers": held}
            more = f" and {len(found) - 6} more" if len(found) > 6 else ""
            self.echo(f"round {r}: {held} of {total} answers lean on {', '.join(repr(w) for w in found[:6])}{more} "
                      f"(the base's answers to the same prompts do not): each loses {self.label.catchphrase_cost} in "
                      "the pick, so a snarky answer without it wins")
        with self.store.transaction():  # the judgements and their count together: stopped between, a rerun judged twice
            self.store.add_judgements(judgements)
            return self.store.update_round(r, judgements=len(judgements), details=json.dumps(details))

    def _base_answers(self, r: int, init_run: str | None) -> list[str] | None:
        """One answer from the base to each of round r's prompts (:func:`base_answers`); None when the round samples
        the base itself (nothing to compare with) or a policy without an adapter."""
        if init_run is None:  # the round samples the base itself
            return None
        model, tok = self.policies.get(init_run)
        if not hasattr(model, "disable_adapter"):
            self.echo(f"round {r}: {init_run} has no LoRA adapter to switch off (a full fine-tune), so no base answers "
                      "to find catchphrases against: none is charged")
            return None
        prompts = list(dict.fromkeys(x["prompt"] for x in self.store.round_responses(r)))
        return base_answers(model, tok, prompts, self.s, self.cfg.system_prompt, f"round {r}: the base's answers",
                            seed=self.s.seed + r)

    def export(self, r: int, row: dict, details: dict) -> Path:
        """3. The round's judgements in the method's training format (waiting for a person's until they give rows)."""
        from alignlab.feedback.export import export

        spec = methods.get(self.s.method)
        data = self.root / self.cfg.data_dir / "loop" / f"round{r}_{self.s.method}.jsonl"
        pairs = spec.kind == "preference"
        me = self.label.name
        left = (lambda: len(self.store.pending_pairs(me, round=r))) if pairs else (
            lambda: len(self.store.pending_single(me, round=r)))
        need = _need(_answers(self.store, r), pairs, self.s.need)
        while True:
            if not self.label.automatic:
                got = wait_for_person(self.store, r, need, self.s.poll_seconds, self.enter, "pair" if pairs else "single",
                                      self.echo, left)
                row = self.store.update_round(r, judgements=got)
            summary = export(self.store, spec.feedback, data, round=r)
            if not summary["rows"]:
                data.unlink(missing_ok=True)  # an empty file would count as the project's labels (project.labelled_pairs)
            if summary["rows"] or self.label.automatic or not left():  # all rated: another judgement will not come
                break
            self.echo(f"round {r}: no {self.s.method} rows from {row['judgements']} judgement(s) yet; keep rating")
            need = got + 1  # the next export waits for a new judgement (it went round at full speed)
        if not summary["rows"]:  # the rater's judgements are set aside, so a rerun judges the same answers again
            who = row.get("rater") or self.label.name  # the rater who judged it (an earlier run's, maybe)
            with self.store.transaction():
                self.store.undo_round(r, who)
                self.store.update_round(r, judgements=None)
            raise AlignlabError(f"round {r}: {row['judgements']} judgement(s) by {who} gave no "
                                f"{self.s.method} rows (all ties?)",
                                fix=f"rerun `alignlab loop` with a rater that separates the answers (--rater ...): "
                                    f"round {r}'s {row['responses']} answers are kept and judged again")
        details["export"] = {k: summary[k] for k in ("rows", "skipped")} | {"conflicts": len(summary["conflicts"]),
                                                                            "sha256": _digest(data)}
        return data

    def train(self, r: int, data: Path, details: dict, init_run: str | None, resume: Path | None = None) -> dict:
        """4. Train the method on the exported rows, continuing from the previous round's adapter; ``resume``: the
        round's interrupted run, continued from its last checkpoint."""
        from alignlab.train import engine

        method = self.s.method
        name = f"{datetime.now():%Y%m%d-%H%M%S}-round{r}-{method}"
        # a new run's directory is made by prepare, once its checks passed: a refused round leaves no empty folder
        ctx = engine.prepare(method, self.cfg, str(data), self.runs_dir, run_dir=resume, name=None if resume else name,
                             skip_invalid=True, init_adapter=init_run)
        row = self.store.update_round(r, run_dir=str(ctx.run_dir), data=str(data), pairs=len(ctx.rows),
                                      details=json.dumps(details))
        self.echo(f"round {r}: continuing the interrupted {ctx.run_dir} from its last checkpoint" if resume else
                  f"round {r}: {method} on {len(ctx.rows)} rows -> {ctx.run_dir}")
        ctx.resume_hint = False  # a rerun of the loop continues this run: the CLI says so after Ctrl-C
        engine.run(ctx, str(data), resume=resume is not None)
        return row

    def score(self, r: int, row: dict, details: dict) -> dict:
        """5. The new adapter against the base on held-out prompts: scorecard in the rounds table and report.html."""
        from alignlab.eval.report import write_report
        from alignlab.eval.scorecard import evaluate_run, point

        from alignlab.rundir import sampling_for

        cfg = self.cfg
        if self.scorer is None:
            self.scorer = self._scorer()
            if self.scorer is None:
                self.echo(f"round {r} done, not scored: no labelled answers for this persona yet")
                return self.store.update_round(r, status="done", details=json.dumps(details), finished_at=_now())
            self.store.update_round(r, eval_rater=self.scorer.name)
        own = sampling_for(cfg.sampling, row["run_dir"])  # a round from a distilled run decodes alone
        model, tok = self.policies.get(row["run_dir"])
        card = evaluate_run(row["run_dir"], self.heldout, self.scorer, model=model, tokenizer=tok,
                            max_new_tokens=cfg.sampling.max_new_tokens, temperature=self.s.eval_temperature,
                            seed=self.s.seed, repetition_penalty=cfg.sampling.repetition_penalty,
                            system_prompt=cfg.system_prompt, base_opening=own.base_opening, amplify=own.amplify)
        write_report(row["run_dir"], card)
        a, b = card["adapter"], card["base"]
        details["scorecard"] = {k: v for k, v in card.items() if k != "samples"}
        self._same_scorer(r, details)
        row = self.store.update_round(
            r, status="done", persona_score=point(a["persona"]), base_persona_score=point(b["persona"]),
            length=a["length"], distinct_1=a["distinct_1"], distinct_2=a["distinct_2"], kl=a["kl"],
            accuracy=point(a["correct_share"]), details=json.dumps(details), finished_at=_now())
        self.echo(f"round {r} done: persona {_f(point(b['persona']))} -> {_f(point(a['persona']))} ({self.scorer.name}), "
                  f"correct {_f(point(b['correct_share']))} -> {_f(point(a['correct_share']))}, "
                  f"mimicry flagged {_f(point(a['flagged']))}"
                  + (f", catchphrase {_f(point(a['catchphrase']))}" if a.get("catchphrase") is not None else "")
                  + f", KL {_f(a['kl'])}, distinct-2 {_f(a['distinct_2'])}")
        for w in card["warnings"]:
            self.echo(f"[yellow]round {r} warning: {w}[/]")
        if card.get("note"):
            self.echo(f"round {r} note: {card['note']}")
        return row


def _same_classifier(label, scorer) -> bool:
    """The labelling rater is a persona classifier trained on the very labels the held-out scorer's is (the
    classifier rater of a persona of your own): then the held-out persona score is the labeller's."""
    digest = _labels(label)[0]
    return scorer.persona_rater is None and digest is not None and digest == _labels(scorer)[0]


def _labels(holder) -> tuple[str | None, int | None]:
    """(digest, count) of the labels the persona classifier of a rater or scorer was trained on; Nones without one."""
    meta = getattr(getattr(holder, "classifier", None), "meta", None) or {}
    return meta.get("labels_sha256"), meta.get("labels")


def _resumable(run_dir: str | None, info: dict, method: str, same_data: bool) -> Path | None:
    """The round's run when it was interrupted or died with a checkpoint to go on from (a rerun of the loop continues
    it rather than training the round again from its first step), else None. Never a run of another method or one
    that trained other rows (judgements added since): its checkpoint would carry them into this round's run."""
    from alignlab import rundir

    if not run_dir or not info or rundir.shown_status(info) not in ("interrupted", "died"):
        return None
    if info.get("method") != method or not same_data:
        return None
    checkpoints = rundir.Run(Path(run_dir)).checkpoints_dir
    return Path(run_dir) if checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*")) else None


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _init_run(store, r: int, s: LoopSettings) -> str | None:
    """The adapter round r starts from: the previous round's run, or --from for round 1 (None: the base)."""
    prev = store.round_row(r - 1) if r > 1 else None
    return prev["run_dir"] if prev else s.start_run


def _same_method(row: dict | None, s: LoopSettings) -> None:
    """A sampled round keeps its method: a rerun with another one set the round's picks aside as 'no kto rows', or
    resumed its DPO checkpoint as KTO."""
    if row and row["responses"] and row["method"] and row["method"] != s.method:
        r = row["round"]
        raise AlignlabError(f"round {r} was sampled for {row['method']}, not {s.method} (--method, else alignlab.yaml's "
                            "loop.method): a round keeps its method",
                            fix=f"rerun with --method {row['method']} to finish round {r}; another method can start "
                                f"at round {r + 1}")


def _split_prompts(root: Path, data_dir: str, echo: Callable[[str], Any]) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows): a prompt in both files is left out of training, since each round is scored on the
    held-out ones (trained on, it would score its own labels)."""
    from alignlab.synth.sample import default_prompts, prompt_rows

    train_file, held_file = (default_prompts(root, data_dir, which) for which in ("train", "heldout"))
    held = prompt_rows(held_file)
    texts = {row["prompt"].strip() for row in held}
    rows = prompt_rows(train_file)
    train = [row for row in rows if row["prompt"].strip() not in texts]
    if rows and not train:
        raise AlignlabError(f"every prompt of {train_file} is also in {held_file}: nothing is left to train on (each "
                            "round is scored on the held-out prompts)",
                            fix=f"put training prompts in {train_file}; keep {held_file} for the scorecard")
    if len(train) < len(rows):
        echo(f"[yellow]note: {len(rows) - len(train)} prompt(s) of {train_file} are also in {held_file}: the loop "
             "leaves them out of training[/]")
    return train, held


def _answers(store, r: int) -> dict[str, list[str]]:
    """Round r's answer texts by prompt."""
    out: dict[str, list[str]] = {}
    for x in store.round_responses(r):
        out.setdefault(x["prompt"], []).append(x["text"])
    return out


def _comparable(groups: dict[str, list[str]]) -> bool:
    """Whether some prompt has two different answers (the sampler stores an answer once, so alike ones are one)."""
    return any(len(set(texts)) > 1 for texts in groups.values())


def _need(groups: dict[str, list[str]], pairs: bool, given: int | None) -> int:
    """Judgements a person gives before training starts: ``given``, else one per prompt with two different answers
    (pairs) or one per answer (thumbs); never more than can be given, or the loop would wait forever."""
    if pairs:
        possible = sum(len(set(t)) * (len(set(t)) - 1) // 2 for t in groups.values())
        default = sum(len(set(t)) > 1 for t in groups.values())
    else:
        possible = default = sum(map(len, groups.values()))
    return min(given or default, possible)


def _shared_signal(label, scorer) -> str | None:
    """Why the held-out persona score shares the labelling rater's signal, or None: then it grades the labels."""
    if scorer.name == label.name or _same_classifier(label, scorer):
        return f"held-out scores use the same rater that labels the rounds ({label.name})"
    if label.name == "contrast" and scorer.persona_rater is None and scorer.contrast:
        # on 15 bundled pairs the two picked the same answer 15 times (rank correlation 0.90)
        return ("held-out persona scores read the same voice contrast that labels the rounds "
                "(--rater contrast)")
    return None


def _f(v) -> str:
    return "-" if v is None else f"{v:.3g}"


# --- the table and its plot ------------------------------------------------------------------------------------

TABLE = (("round", "round"), ("status", "status"), ("method", "method"), ("rater", "labels"), ("judgements", "judgements"),
         ("pairs", "rows"), ("eval_rater", "scored by"), ("base_persona_score", "base persona"), ("persona_score", "persona"),
         ("length", "length"), ("distinct_2", "distinct-2"), ("kl", "KL"), ("accuracy", "correct"), ("run_dir", "run"))


def table(rows: list[dict]) -> list[list[str]]:
    """The rounds as strings for printing: a header row, then one row per round."""
    out = [[label for _, label in TABLE]]
    for row in rows:
        cells = []
        for key, _ in TABLE:
            v = row.get(key)
            cells.append(_f(v) if isinstance(v, float) else Path(v).name if key == "run_dir" and v else "-" if v is None else str(v))
        out.append(cells)
    return out


def y_limits(key: str, values: list[float | None]) -> tuple[float, float]:
    """rounds.png's y range: from zero (a tiny change must look tiny); scores in [0, 1] up to 1."""
    top = max([v for v in values if v is not None and v == v] or [1.0])
    if key in ("persona_score", "distinct_2"):
        return 0.0, max(1.0, top)
    return 0.0, top * 1.1 if top > 0 else 1.0


def plot_rounds(rows: list[dict], path: str | Path) -> Path:
    """rounds.png: persona (adapter vs base), KL from base, answer length, distinct-2 by round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["status"] == "done"]
    xs = [r["round"] for r in rows]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    panels = (("persona_score", "persona score"), ("kl", "KL(policy || base) / token"), ("length", "answer length (words)"),
              ("distinct_2", "distinct-2"))
    for ax, (key, title) in zip(axes, panels):
        ax.plot(xs, [r[key] if r[key] is not None else float("nan") for r in rows], marker="o", color="#c44", label="adapter")
        if key == "persona_score":
            ax.plot(xs, [r["base_persona_score"] if r["base_persona_score"] is not None else float("nan") for r in rows],
                    marker=".", linestyle="--", color="#999", label="base")
            ax.legend(fontsize=8)
            if rows:
                title += f" ({rows[-1]['eval_rater']})"
        values = [r[key] for r in rows] + ([r["base_persona_score"] for r in rows] if key == "persona_score" else [])
        ax.set_ylim(*y_limits(key, values))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round")
        ax.set_xticks(xs)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _only_loop_labels(root: Path) -> bool:
    """Whether the project's only labelled pairs are the ones this loop's rounds exported."""
    from alignlab.project import labelled_pairs

    found = labelled_pairs(root)
    return bool(found) and all(p.parent.name == "loop" for p in found)

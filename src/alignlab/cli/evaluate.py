"""`alignlab eval RUN` (base vs adapter on held-out prompts) and `alignlab eval --answers FILE` (score given answers)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from alignlab.config import SamplingConfig, field_help as fh

_S = SamplingConfig.model_fields


def read_answers(path: Path) -> list[dict]:
    """Rows of an answers file: JSONL with ``prompt`` and ``answer`` (text), optional ``reference``, ``source``."""
    from alignlab.data.formats import read_objects
    from alignlab.errors import AlignlabError
    from alignlab.eval.correct import reference_problem

    fix = 'each row needs {"prompt": "...", "answer": "..."}'
    rows = read_objects(path, ("prompt", "answer"), fix)
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        try:
            json.dumps(row, allow_nan=False)
        except ValueError:
            raise AlignlabError("the row holds NaN or Infinity, which JSON has no place for", where=where,
                                fix="write the number out, or leave the field out") from None
        if problem := reference_problem(row):
            raise AlignlabError(problem, where=where, fix='e.g. "reference": "Ottawa", "aliases": ["Ottawa"]')
    if not rows:
        raise AlignlabError(f"{path} holds no answers", fix=fix)
    return [row for _, row in rows]


def _scorer(root, cfg, rater: str, judge: dict):
    from alignlab.eval.scores import scorer_for

    persona_rater = None
    if rater != "scorecard":
        from alignlab.eval.raters import get_rater

        # the scorecard's three scores stay apart: a judge rates the voice alone here, correctness on its own
        persona_rater = get_rater(rater, root, persona=cfg.persona, voice_only=True, **judge)
    return scorer_for(root, cfg.persona, persona_rater)


def catchphrase_rows(rows: list[dict], base_source: str, path: Path) -> tuple[list[bool | None], dict[str, list]]:
    """Per row: whether it holds one of its source's catchphrases (eval.mimicry.catchphrases), found against the
    ``base_source`` rows' answers to the same prompts; None for the base's rows, and for a source with no prompt in
    common with the base or whose base answers are too short to compare with. Also each source's words."""
    from alignlab.errors import AlignlabError
    from alignlab.eval.mimicry import catchphrases, holds_catchphrase, source_key

    # NAME as the table shows a source: a name as written, 5 or false as JSON, "-" for rows without one
    keys = {source_key(r.get("source")) for r in rows if _source_label(r.get("source")) == base_source}
    if len(keys) != 1:
        names = sorted({_source_label(r.get("source")) for r in rows})
        raise AlignlabError(f"{path}: " + (f"no row has source {base_source!r}" if not keys else
                                           f"{base_source!r} names {len(keys)} sources") +
                            f" (--base-source); its sources: {', '.join(names)}",
                            fix="pass one of them as --base-source" if not keys else "give the sources distinct names")
    (base_key,) = keys
    base = {}
    for r in rows:
        if source_key(r.get("source")) == base_key:
            base.setdefault(r["prompt"], r["answer"])
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(source_key(r.get("source")), []).append(i)
    held: list[bool | None] = [None] * len(rows)
    words: dict[str, list | None] = {}  # None: nothing to compare with
    for key, idx in groups.items():
        if key == base_key:
            continue
        both = [i for i in idx if rows[i]["prompt"] in base]
        found = catchphrases([rows[i]["answer"] for i in both], [rows[i]["prompt"] for i in both],
                             [base[rows[i]["prompt"]] for i in both]) if both else None
        words[_source_label(rows[idx[0]].get("source"))] = found
        if found is None:
            continue
        for i, h in zip(idx, holds_catchphrase([rows[i]["answer"] for i in idx], found, [rows[i]["prompt"] for i in idx])):
            held[i] = h
    return held, words


def _score_answers(path: Path, scorer, as_json: bool, base_source: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from alignlab.eval.mimicry import source_key
    from alignlab.eval.scorecard import fmt
    from alignlab.eval.scores import summarize, wilson

    rows = read_answers(path)
    held, words = catchphrase_rows(rows, base_source, path) if base_source is not None else (None, {})
    scored_in = []
    for r in rows:
        # a row's own "number" column is no reference (a question number graded "Paris." 0.0): a number reference
        # comes as `reference` itself, which correct.own_reference reads
        scored_in.append({k: v for k, v in r.items() if k != "number"})
    scored = _scored_with_progress(scorer, scored_in)
    if as_json:
        for i, (r, s) in enumerate(zip(rows, scored)):
            extra = {"catchphrase": held[i]} if held is not None else {}
            typer.echo(json.dumps({**r, "persona": s["persona"], "correct": s["correct"], "mimicry": s["mimicry"],
                                   **extra}, ensure_ascii=False))
        return
    by_source: dict[str, tuple[str, list[dict]]] = {}  # keyed as mimicry's contexts are: 5 and "5" are two models
    for i, (r, s) in enumerate(zip(rows, scored)):
        by_source.setdefault(source_key(r.get("source")), (_source_label(r.get("source")), []))[1].append(
            {**s, "held": held[i] if held is not None else None})
    table = Table(title=f"{path.name}: {len(rows)} answers (95% intervals)")
    cols = ("source", "n", "persona", "in persona", "correct", "graded", "correct share", "mimicry", "flagged")
    for col in cols + (("catchphrase",) if held is not None else ()):
        table.add_column(col, justify="left" if col == "source" else "right")
    for src, ss in by_source.values():
        m = summarize(ss, scorer.persona_cut)
        cells = [src, str(m["n"]), fmt(m["persona"]), fmt(m["in_persona"]), fmt(m["correct"]), str(m["graded"]),
                 fmt(m["correct_share"]), fmt(m["mimicry"]), fmt(m["flagged"])]
        if held is not None:
            marks = [x["held"] for x in ss]
            cells.append("-" if None in marks else fmt(wilson(sum(marks), len(marks))))
        table.add_row(*cells)
    Console(width=150).print(table, markup=False)
    for src, found in words.items():
        typer.echo(f"catchphrases of {src} (against {base_source}): " + (
            "nothing to compare (no prompt in common, or the base's answers too short)" if found is None else
            ", ".join(map(repr, found)) or "none"))
    if scorer.correct_rater is not None:
        typer.echo(f"correct: rated by {scorer.correct_rater.name} against each row's reference")
    if scorer.note:
        typer.echo(f"note: {scorer.note}")


def _scored_with_progress(scorer, rows: list[dict]) -> list[dict]:
    """``scorer.score(rows)`` with progress on stderr (the voice contrast's two passes are most of the time: 41 of 59 s
    for 60 rows on one core) and, on Ctrl-C, one line saying nothing was written (every row is scored before any is
    printed: mimicry reads each answer among its source's others)."""
    from alignlab.eval import contrast
    from alignlab.progress import progress_bar

    n = len(rows)
    timed = scorer.contrast and scorer.persona_rater is None
    try:
        with progress_bar() as bar:
            what = f"scoring {n} answers" + (" (voice contrast)" if timed else "")
            task = bar.add_task(what, total=n if timed else None)
            with contrast.reporting(lambda share: bar.update(task, completed=round(share * n))):
                return scorer.score(rows)
    except KeyboardInterrupt:
        typer.echo(f"interrupted while scoring {n} answers; nothing was written", err=True)
        raise typer.Exit(130) from None  # from None: the entry point would add a bare "interrupted" line


@contextmanager
def scorecard_progress(label: str, doing: str):
    """Progress of a scorecard (`eval RUN`, train's held-out check), which said nothing for minutes: it answers every
    prompt with each side in one batch and reports nothing meanwhile (the elapsed time then, a line every 30 s in a
    log), then the voice contrast scores the answers, by share."""
    from alignlab.eval import contrast
    from alignlab.progress import working

    with working(label, doing) as note, \
            contrast.reporting(lambda share: note(f"scoring the answers (voice contrast) {share:.0%}")):
        yield


def _source_label(value) -> str:
    """A source as the table shows it: a name as written, any other JSON value (5, false, or the text "5") as JSON."""
    from alignlab.eval.mimicry import source_key

    key = source_key(value)
    if not key:
        return "-"
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return key


def _opening(value: str | None, sampling):
    """--base-opening, else ``sampling.base_opening``; a bad value is one line naming what is accepted."""
    from alignlab.config import checked_base_opening

    return checked_base_opening(value if value is not None else sampling.base_opening)


# the flags that steer how `eval RUN` generates answers: beside --answers (answers already written) nothing reads them
_GENERATION = ("prompts", "per_category", "limit", "max_new_tokens", "temperature", "repetition_penalty",
               "base_opening", "amplify", "device")


def _check_flags(ctx: typer.Context, run: Path | None, answers: Path | None, as_json: bool,
                 base_source: str | None = None) -> None:
    """Refuse what one form of eval would ignore: --json or --base-source without --answers (`eval RUN` printed its
    table, its base is the base model), a run beside --answers (it was not evaluated), and generation flags beside
    --answers (they changed nothing)."""
    from alignlab.errors import AlignlabError

    if answers is None:
        if as_json:
            raise AlignlabError("--json prints the scores of --answers FILE row by row; `eval RUN` writes its "
                                "scorecard as JSON to the run's eval.json", fix="drop --json, or pass --answers FILE")
        if base_source is not None:
            raise AlignlabError("--base-source names the base's rows of an --answers FILE; `eval RUN` answers with the "
                                "base model itself", fix="drop --base-source, or pass --answers FILE")
        return
    if run is not None:
        raise AlignlabError(f"--answers scores the answers in {answers} and generates none, so the run {run} would "
                            "not be evaluated",
                            fix=f"pass one: alignlab eval {run}, or alignlab eval --answers {answers}")
    # by the source's name: typer ships its own copy of click, whose ParameterSource is not click's
    given = [p.opts[0] for p in ctx.command.params if p.name in _GENERATION
             and getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")]
    if given:
        raise AlignlabError(f"{', '.join(given)} {'steers' if len(given) == 1 else 'steer'} how `eval RUN` generates "
                            "answers; --answers scores answers already written", fix=f"drop {', '.join(given)}")


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        ctx: typer.Context,
        run: Optional[Path] = typer.Argument(None, help="run directory (runs/<id>); omit with --answers"),
        answers: Optional[Path] = typer.Option(None, "--answers", help="score the answers in this JSONL file ({prompt, answer, (reference), (source)}) without generating"),
        as_json: bool = typer.Option(False, "--json", help="--answers: one JSON object per input row, in input order"),
        base_source: Optional[str] = typer.Option(None, "--base-source", help="--answers: the source whose answers are the yardstick for every other source's catchphrases (words in 20%+ of its answers, five times rarer in this source's answers to the same prompts): a catchphrase column, and `catchphrase` per row with --json"),
        prompts: Optional[str] = typer.Option(None, "--prompts", help="JSONL of {prompt, (category), (reference)} rows or bundled:NAME (default: the project's data/heldout.jsonl)"),
        per_category: int = typer.Option(6, "--per-category", min=1, help="held-out prompts taken from each category"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="at most N prompts (still spread over the categories)"),
        rater: str = typer.Option("scorecard", "--rater", help="persona score by: scorecard (the classifier on the bundled labelled set with the voice contrast; for a persona of your own, a classifier on the project's pairs), judge (also the correct score, against the reference), classifier or reward:<name>"),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help=_S["max_new_tokens"].description + " (default: the project's sampling.max_new_tokens)"),
        temperature: Optional[float] = typer.Option(None, "--temperature", "-t", min=0.0, help=_S["temperature"].description + " (default: the project's sampling.temperature)"),
        repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty", min=1.0, help=_S["repetition_penalty"].description + " (default: the project's sampling.repetition_penalty)"),
        base_opening: Optional[str] = typer.Option(None, "--base-opening", help=_S["base_opening"].description + " (default: the project's sampling.base_opening; off for a run trained on distilled rows)"),
        amplify: Optional[float] = typer.Option(None, "--amplify", min=0.0, help=_S["amplify"].description + " (default: the project's sampling.amplify)"),
        judge_url: Optional[str] = typer.Option(None, "--judge-url", help=fh("judge", "url")),
        judge_model: Optional[str] = typer.Option(None, "--judge-model", help=fh("judge", "model")),
        judge_key_env: Optional[str] = typer.Option(None, "--judge-key-env", help=fh("judge", "key_env")),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
    ) -> None:
        """The scorecard: persona, correct and mimicry (with 95% intervals), KL, length and distinct-n, base vs adapter."""
        from alignlab.config import find_project, project_config
        from alignlab.rundir import sampling_for
        from alignlab.errors import AlignlabError

        _check_flags(ctx, run, answers, as_json, base_source)
        if answers is not None:
            cfg, root = project_config(project or find_project(Path.cwd()))
            judge = cfg.judge.settings(judge_url, judge_model, judge_key_env)
            _score_answers(answers, _scorer(root, cfg, rater, judge), as_json, base_source)
            return
        if run is None:
            raise AlignlabError("eval needs a run directory or --answers FILE", fix="alignlab eval runs/<id>")
        from rich.console import Console
        from rich.table import Table

        from alignlab.eval.report import write_report
        from alignlab.eval.scorecard import evaluate_run, stratified, table_columns, table_rows
        from alignlab.synth.sample import default_prompts, prompt_rows
        from alignlab.rundir import check_run_dir, trained_under

        if run.is_file():  # "run directory not found" for a file that is there: the --answers was forgotten
            answers_file = run.suffix.lower() in (".jsonl", ".json")
            raise AlignlabError(f"'{run}' is a file, not a run directory",
                                fix=f"to score the answers in it: alignlab eval --answers {run}" if answers_file
                                else "pass a run directory (see `alignlab runs`)")
        run = check_run_dir(run)
        cfg, root = project_config(project or find_project(run))
        rows = stratified(prompt_rows(prompts or str(default_prompts(root, cfg.data_dir, "heldout"))), per_category, limit)
        scorer = _scorer(root, cfg, rater, cfg.judge.settings(judge_url, judge_model, judge_key_env))
        own = sampling_for(cfg.sampling, run)  # the project's, or the run's own (a distilled run decodes alone)
        answering = f"answering {len(rows)} held-out prompts with the base and the adapter"
        with scorecard_progress(f"eval {run.name}", answering):
            card = evaluate_run(
                run, rows, scorer, device=device,
                max_new_tokens=own.max_new_tokens if max_new_tokens is None else max_new_tokens,
                temperature=own.temperature if temperature is None else temperature,
                repetition_penalty=own.repetition_penalty if repetition_penalty is None else repetition_penalty,
                system_prompt=trained_under([run], cfg.system_prompt),  # both sides, as it answers
                base_opening=_opening(base_opening, own), amplify=own.amplify if amplify is None else amplify)
        data, page = write_report(run, card)
        table = Table(title=f"{run.name}: {card['n_prompts']} held-out prompts (95% intervals)")
        for col in table_columns(card):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for r in table_rows(card):
            table.add_row(*r)
        Console(width=110).print(table, markup=False)
        for w in card["warnings"]:
            typer.secho(f"warning: {w}", fg="yellow")
        if scorer.correct_rater is not None:
            typer.echo(f"correct: rated by {scorer.correct_rater.name} against each prompt's reference")
        if card.get("note"):
            typer.echo(f"note: {card['note']}")
        typer.echo(f"wrote {data} and {page}")

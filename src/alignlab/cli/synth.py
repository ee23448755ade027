"""`alignlab synth`: matched persona pairs from a teacher (a local model in persona, or an OpenAI-compatible endpoint);
`alignlab distil`: SFT rows that teach a run the base's opening."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlab import fsutil
from alignlab.config import MAX_NEW_TOKENS, RATING_TEMPERATURE, field_help as fh


def register(app: typer.Typer) -> None:
    _register_synth(app)
    _register_distil(app)


def _register_synth(app: typer.Typer) -> None:
    @app.command()
    def synth(
        teacher_url: Optional[str] = typer.Option(None, "--teacher-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (default: the local model)"),
        teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="model name at the endpoint"),
        teacher_key_env: Optional[str] = typer.Option(None, "--teacher-key-env", help="name of the env var holding the endpoint's API key (default: $OPENAI_API_KEY, sent to api.openai.com only; '' = no key)"),
        run: Optional[Path] = typer.Option(None, "--run", "-r", help="local teacher: this run's adapter (default: the base)"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="local teacher's base model (default: the project's)"),
        prompts: Optional[str] = typer.Option(None, "--prompts", help="JSONL of {prompt} rows or bundled:NAME (default: the project's data/prompts.jsonl)"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N prompts (after --skip)"),
        teacher_timeout: float = typer.Option(60.0, "--teacher-timeout", min=0.1, help="seconds to wait for one teacher answer before retrying"),
        teacher_workers: int = typer.Option(8, "--teacher-workers", min=1, help="teacher requests at once (1 for a server that answers one at a time)"),
        teacher_retries: int = typer.Option(8, "--teacher-retries", min=0, help="retries of a request the endpoint rate-limits (HTTP 429, 503), each after about twice the last wait or what its Retry-After asks, up to 60 s (a longer Retry-After stops at once)"),
        skip: int = typer.Option(0, "--skip", min=0, help="leave out the first N prompts (to go on after a run that stopped part way, with --append)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="output JSONL (default: <project>/data/pairs.jsonl when the project has none yet, so `train` and `recipe` find it; else data/synth_pairs.jsonl)"),
        force: bool = typer.Option(False, "--force", help="replace an existing output file"),
        append: bool = typer.Option(False, "--append", help="add the pairs to an existing output file (going on after a stop)"),
        candidates: int = typer.Option(4, "--candidates", "-k", min=1, help="answers per prompt in persona and plain; the rater keeps the best in-persona one"),
        rater: Optional[str] = typer.Option(None, "--rater", help="judge, classifier, contrast or reward:<name> (default: reward:persona_heuristic, snark markers, for the example persona; contrast, the default model's voice contrast, for another)"),
        max_length_ratio: float = typer.Option(1.5, "--max-length-ratio", help="drop pairs whose longer answer has more than this many times the words of the shorter"),
        min_margin: float = typer.Option(0.0, "--min-margin", help="drop pairs where chosen does not out-score rejected by more than this"),
        persona_prompt: Optional[str] = typer.Option(None, "--persona-prompt", help="system prompt that puts the teacher in persona (default: built from the project's persona)"),
        temperature: float = typer.Option(RATING_TEMPERATURE, "--temperature", "-t", help="sampling temperature (above 0 for more than one candidate)"),
        top_p: float = typer.Option(1.0, "--top-p", help="nucleus sampling"),
        max_new_tokens: int = typer.Option(MAX_NEW_TOKENS, "--max-new-tokens", min=1, help="length limit of each answer"),
        seed: int = typer.Option(0, "--seed", help="sampling seed (local teacher)"),
        judge_url: Optional[str] = typer.Option(None, "--judge-url", help=fh("judge", "url")),
        judge_model: Optional[str] = typer.Option(None, "--judge-model", help=fh("judge", "model")),
        judge_key_env: Optional[str] = typer.Option(None, "--judge-key-env", help=fh("judge", "key_env")),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
    ) -> None:
        """Build matched pairs (same question, similar length, in persona vs plain); writes TRL preference JSONL."""
        _synth(**locals())


def _synth(*, teacher_url, teacher_model, teacher_key_env, run, model, prompts, limit, teacher_timeout,
           teacher_workers, teacher_retries, skip, out, force, append, candidates, rater, max_length_ratio, min_margin,
           persona_prompt, temperature, top_p, max_new_tokens, seed, judge_url, judge_model, judge_key_env, device,
           project) -> None:
    """`alignlab synth`: every refusal first (flags, prompts, the output file), then the rater and teacher load."""
    from alignlab.config import project_config
    from alignlab.errors import AlignlabError
    from alignlab.eval.raters import get_rater
    from alignlab.synth import default_prompts, persona_prompt as make_prompt, prompt_rows, summary_line, write_pairs
    from alignlab.synth.pairs import check_settings

    cfg, root = project_config(project)
    _check_teacher_flags(teacher_url, teacher_model, teacher_key_env, run, model)
    check_settings(candidates, max_length_ratio, temperature)
    source = prompts or str(default_prompts(root, cfg.data_dir, "train"))
    rows = prompt_rows(source)
    if skip and skip >= len(rows):
        raise AlignlabError(f"--skip {skip} leaves none of the {len(rows)} prompts", where=str(source),
                            fix=f"pass --skip below {len(rows)} (the number of prompts a stopped run finished)")
    rows = rows[skip:][:limit] if limit else rows[skip:]
    if out is None:
        data_dir = root / cfg.data_dir if root is not None else Path(".")
        out = data_dir / ("synth_pairs.jsonl" if (data_dir / "pairs.jsonl").exists() else "pairs.jsonl")
    out = fsutil.check_out(out)
    if force and append:
        raise AlignlabError("--force replaces the output file and --append adds to it", fix="pass one of them")
    _refuse_overwrite(out, source, force, command="synth", append=append)
    if rater is None:
        from alignlab.config import DEFAULT_PERSONA

        rater = "reward:persona_heuristic" if cfg.persona == DEFAULT_PERSONA else "contrast"
    judge = get_rater(rater, root, persona=cfg.persona, **cfg.judge.settings(judge_url, judge_model, judge_key_env))
    teacher = _teacher(teacher_url, teacher_model, teacher_key_env, teacher_timeout, teacher_workers, teacher_retries,
                       run, model or cfg.model, device, seed)
    typer.echo(f"rater: {judge.name}" + ("   (the default model's voice contrast: no labels or endpoint "
                                          "needed; --rater judge with an endpoint reads better)"
                                          if judge.name == "contrast" else ""))
    from alignlab.eval.scores import correctness_scorer

    # every in-persona answer is graded as the scorecard grades it: a reference, a number, aliases or key terms
    pairs, summary = _build_or_keep(out, append, (skip, limit, force), teacher, [r["prompt"] for r in rows], judge,
                                    persona_prompt or make_prompt(cfg.persona), candidates=candidates,
                                    max_length_ratio=max_length_ratio, min_margin=min_margin,
                                    temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                    rows=rows, correct=correctness_scorer().correct)
    if pairs:  # an empty file would pass for a finished result (and replace a good one)
        write_pairs(out, pairs, append=append)
    typer.echo(summary_line(summary, out))
    if not pairs:
        raise _nothing_kept(out, append, summary, teacher)
    _next_step(root, cfg, out)


def _check_teacher_flags(url, model_name, key_env, run, model) -> None:
    """Flags that would be ignored are refused: the endpoint's without --teacher-url, the local model's with it."""
    from alignlab.errors import AlignlabError

    if not url and (model_name is not None or key_env is not None):
        flag = "--teacher-model" if model_name is not None else "--teacher-key-env"
        raise AlignlabError(f"{flag} names the endpoint teacher, and no --teacher-url was given (the local model would "
                            "answer)", fix="add --teacher-url URL, or leave out the endpoint's flags")
    if url and (run is not None or model is not None):
        raise AlignlabError(f"{'--run' if run is not None else '--model'} picks the local teacher, and --teacher-url "
                            "asks an endpoint", fix="pass one or the other")


def _nothing_kept(out: Path, append: bool, summary: dict, teacher):
    from alignlab.errors import AlignlabError

    kept = f"nothing was added to {out}" if append and out.exists() else f"{out} was not written"
    if summary["answers"] and summary["empty_answers"] == summary["answers"]:
        cut = getattr(teacher, "cut_short", 0)
        return AlignlabError(f"the teacher returned no text in any of its {summary['answers']} answers"
                             + (f" ({cut} cut at --max-new-tokens before a sentence ended)" if cut else "")
                             + f", so {kept}",
                             fix="raise --max-new-tokens (a reasoning model spends tokens before it answers), and "
                                 "check --teacher-model and the server's log (a refusal has no text)")
    return AlignlabError(f"no pair survived, so {kept}",
                         fix="see the reasons above: more prompts (--limit), more --candidates, or a looser "
                             "--max-length-ratio / --min-margin")


def _next_step(root, cfg, out: Path) -> None:
    if root is not None and out.name == "pairs.jsonl":
        typer.echo("next: alignlab data check data/pairs.jsonl, then alignlab recipe")
    elif root is not None and out.name == "synth_pairs.jsonl":
        typer.echo(f"{cfg.data_dir}/pairs.jsonl exists, so these went beside it (the scorecard reads both); "
                   f"train on them: alignlab recipe --pairs {cfg.data_dir}/synth_pairs.jsonl, or add them to the "
                   f"project's pairs: cat {cfg.data_dir}/synth_pairs.jsonl >> {cfg.data_dir}/pairs.jsonl")


def _build_or_keep(out: Path, append: bool, span: tuple, teacher, prompts: list[str], *args, **kwargs):
    """``build_pairs``; when it stops part way (an endpoint down, Ctrl-C, SIGTERM), the pairs the finished batches
    kept are written to ``out`` (after its rows with ``append``) and one line says how to go on: the same command from
    the next prompt (``span``: this run's --skip, --limit and --force), adding to the same file. An interrupt is no
    user error: its line starts "interrupted" and the exit code is 130 (143 after SIGTERM)."""
    from alignlab.errors import AlignlabError
    from alignlab.progress import sigterm_as_ctrl_c
    from alignlab.synth import build_pairs, write_pairs
    from alignlab.synth.pairs import PartialPairs

    try:
        with sigterm_as_ctrl_c():  # a kill or a timeout's SIGTERM lost every kept pair (hours of a teacher's answers)
            return build_pairs(teacher, prompts, *args, **kwargs)
    except PartialPairs as part:
        if part.rows:
            write_pairs(out, part.rows, append=append)
        cause = part.__cause__
        go_on = _go_on(out, span, part.done)
        if isinstance(cause, KeyboardInterrupt):
            _say_interrupted(out, append, part, len(prompts), go_on)
            raise typer.Exit(130) from None  # from None: the entry point adds no bare "interrupted" after it
        why = str(cause) if isinstance(cause, AlignlabError) else type(cause).__name__
        raise AlignlabError(f"stopped after {part.done} of {len(prompts)} prompts ({why}); the {len(part.rows)} pairs "
                            f"kept so far are in {out}", fix=go_on) from cause


def _go_on(out: Path, span: tuple, done: int) -> str:
    """How to go on after a stop at prompt ``done`` of this run: the same command, from the next prompt, adding to
    ``out``."""
    import shlex

    skip, limit, force = span
    rest = f" --limit {limit - done}" if limit else ""
    same = "the same command without --force" if force else "the same command"
    return f"go on with {same} and --skip {skip + done}{rest} --out {shlex.quote(str(out))} --append (the pairs are " \
           "added to the file)"


def _say_interrupted(out: Path, append: bool, part, total: int, go_on: str) -> None:
    """The one line after Ctrl-C or SIGTERM: how far it got, where the kept pairs are, how to go on."""
    from rich.markup import escape

    from alignlab.progress import console

    if part.rows:
        line = f"after {part.done} of {total} prompts; the {len(part.rows)} pairs kept are in {out}; {go_on}"
    else:
        kept = f"nothing was added to {out}" if append and out.exists() else f"{out} was not written"
        line = (f"after {part.done} of {total} prompts, which kept no pair, so {kept}; {go_on}" if part.done else
                f"before the first batch of prompts was answered, so {kept}")
    console.print(f"[yellow]interrupted[/] {escape(line)}")


def _refuse_overwrite(out: Path, prompts: str, force: bool, command: str = "distil", append: bool = False) -> None:
    """The output never replaces the prompts file the command reads, and replaces another file only with --force
    (synth: or adds to it with --append)."""
    from alignlab.errors import AlignlabError

    from alignlab.data import resolve_data

    src = Path(resolve_data(prompts))
    if src.is_file() and out.exists() and out.resolve() == src.resolve():
        default = "distil" if command == "distil" else "pairs"
        raise AlignlabError(f"--out {out} is the prompts file {command} reads",
                            fix=f"write to another file (default: data/{default}.jsonl)")
    if out.exists() and not force and not append:
        go_on = ", --append to add to it (going on after a stop)" if command == "synth" else ""
        raise AlignlabError(f"{out} exists", fix=f"pass --force to replace it{go_on}, or --out another.jsonl")


def _teacher(url, model_name, key_env, timeout: float, workers: int, retries: int, run, model: str, device: str,
             seed: int):
    """An endpoint teacher (--teacher-url), else the local model or run as its own teacher."""
    from alignlab.errors import AlignlabError
    from alignlab.synth import EndpointTeacher, LocalTeacher

    if url:
        if not model_name:
            raise AlignlabError("--teacher-url needs --teacher-model (the model name at the endpoint)")
        return EndpointTeacher(url, model_name, api_key_env=key_env, timeout=timeout, max_workers=workers,
                               rate_retries=retries)
    from alignlab.models.loading import load_for_inference

    m, tok, name = load_for_inference(None if run else model, run, device=device)
    return LocalTeacher(m, tok, name=str(run or name), seed=seed)


def _register_distil(app: typer.Typer) -> None:
    @app.command()
    def distil(
        run: Path = typer.Argument(..., help="the run whose answers, opened by the base, become SFT rows"),
        prompts: Optional[str] = typer.Option(None, "--prompts", help="JSONL of {prompt, reference or chosen} rows or bundled:NAME (default: the project's data/rewrites.jsonl, else data/prompts.jsonl)"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="at most N prompts, spread evenly over the file"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="output JSONL (default: <project>/data/distil.jsonl)"),
        batch_size: int = typer.Option(64, "--batch-size", min=1, help="prompts per generation batch (larger is faster on a CPU)"),
        amplify: Optional[float] = typer.Option(None, "--amplify", min=0.0, help="decode after the opening from adapter + A x (adapter - base) logits (default: the project's sampling.amplify)"),
        force: bool = typer.Option(False, "--force", help="replace an existing output file"),
        screen: bool = typer.Option(True, "--screen/--no-screen", help="answer only prompts whose base opening is correct against the reference (a sixth of the answering on the demo's prompts); --no-screen answers every prompt, and still drops a row whose opening is wrong"),
        reference_opening: bool = typer.Option(False, "--reference-opening", help="where the base's opening is wrong, go on from the first sentence of the prompt's reference (or a rewrite's chosen side) instead of dropping the prompt"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
    ) -> None:
        """SFT rows that teach a run the base's opening (stage 3 of the recipe).

        The run's answers after the base's first sentence (where that is correct), kept when finished, correct
        against the reference, not flagged and free of stock phrases."""
        from alignlab.config import project_config
        from alignlab.synth.opening import distil as run_distil, summary_line
        from alignlab.synth.sample import default_prompts

        cfg, root = project_config(project)
        if prompts is None:
            rewrites = root / cfg.data_dir / "rewrites.jsonl" if root is not None else None
            prompts = str(rewrites if rewrites is not None and rewrites.is_file() else default_prompts(root, cfg.data_dir, "train"))
        out = fsutil.check_out(out or ((root / cfg.data_dir if root is not None else Path(".")) / "distil.jsonl"))
        _refuse_overwrite(out, prompts, force)
        counts = run_distil(run, prompts, out, cfg, root, limit=limit, batch_size=batch_size, device=device,
                            amplify=amplify, screen=screen, reference_opening=reference_opening)
        typer.echo(summary_line(counts, out))
        if not counts["kept"]:
            from alignlab.errors import AlignlabError

            more = "a larger --limit, or none" if limit else "a --prompts file with more rows"
            raise AlignlabError(f"no answer was kept, so {out} was not written",
                                fix=f"see the reasons above: more prompts ({more})")
        typer.echo(f"next: alignlab train sft --from {run} --data {out} --lr 1e-4 --epochs 2")

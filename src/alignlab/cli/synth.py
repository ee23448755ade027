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
        teacher_key_env: Optional[str] = typer.Option(None, "--teacher-key-env", help="env var holding the endpoint's API key (default: $OPENAI_API_KEY, sent to api.openai.com only; '' = no key)"),
        run: Optional[Path] = typer.Option(None, "--run", "-r", help="local teacher: this run's adapter (default: the base)"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="local teacher's base model (default: the project's)"),
        prompts: Optional[str] = typer.Option(None, "--prompts", help="JSONL of {prompt} rows or bundled:NAME (default: the project's data/prompts.jsonl)"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N prompts"),
        teacher_timeout: float = typer.Option(60.0, "--teacher-timeout", min=0.1, help="seconds to wait for one teacher answer before retrying"),
        teacher_workers: int = typer.Option(8, "--teacher-workers", min=1, help="teacher requests at once (1 for a server that answers one at a time)"),
        skip: int = typer.Option(0, "--skip", min=0, help="leave out the first N prompts (to go on after a run that stopped part way)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="output JSONL (default: <project>/data/pairs.jsonl when the project has none yet, so `train` and `recipe` find it; else data/synth_pairs.jsonl)"),
        candidates: int = typer.Option(4, "--candidates", "-k", min=1, help="answers per prompt in persona and plain; the rater keeps the best in-persona one"),
        rater: Optional[str] = typer.Option(None, "--rater", help="judge, classifier, contrast or reward:<name> (default: reward:persona_heuristic, snark markers, for the example persona; contrast, the default model's voice contrast, for another)"),
        max_length_ratio: float = typer.Option(1.5, "--max-length-ratio", help="drop pairs whose longer answer has more than this many times the words of the shorter"),
        min_margin: float = typer.Option(0.0, "--min-margin", help="drop pairs where chosen does not out-score rejected by more than this"),
        persona_prompt: Optional[str] = typer.Option(None, "--persona-prompt", help="system prompt that puts the teacher in persona (default: built from the project's persona)"),
        temperature: float = typer.Option(RATING_TEMPERATURE, "--temperature", "-t", help="sampling temperature"),
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
        from alignlab.config import project_config
        from alignlab.errors import AlignlabError
        from alignlab.eval.raters import get_rater
        from alignlab.synth import (default_prompts, persona_prompt as make_prompt,
                                    prompt_rows, summary_line, write_pairs)

        cfg, root = project_config(project)
        rows = prompt_rows(prompts or str(default_prompts(root, cfg.data_dir, "train")))[skip:]
        rows = rows[:limit] if limit else rows
        if rater is None:
            from alignlab.config import DEFAULT_PERSONA

            rater = "reward:persona_heuristic" if cfg.persona == DEFAULT_PERSONA else "contrast"
        judge = get_rater(rater, root, persona=cfg.persona, **cfg.judge.settings(judge_url, judge_model, judge_key_env))
        teacher = _teacher(teacher_url, teacher_model, teacher_key_env, teacher_timeout, teacher_workers,
                           run, model or cfg.model, device, seed)
        if out is None:
            data_dir = root / cfg.data_dir if root is not None else Path(".")
            out = data_dir / ("synth_pairs.jsonl" if (data_dir / "pairs.jsonl").exists() else "pairs.jsonl")
        out = fsutil.check_out(out)
        typer.echo(f"rater: {judge.name}" + ("   (the default model's voice contrast: no labels or endpoint "
                                              "needed; --rater judge with an endpoint reads better)"
                                              if judge.name == "contrast" else ""))
        from alignlab.eval.scores import correctness_scorer
        from alignlab.synth.opening import reference_of

        refs = [reference_of(r) for r in rows]  # the bundled prompts carry one for 186 of 269
        pairs, summary = _build_or_keep(out, skip, teacher, [r["prompt"] for r in rows], judge,
                                        persona_prompt or make_prompt(cfg.persona), candidates=candidates,
                                        max_length_ratio=max_length_ratio, min_margin=min_margin,
                                        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                        references=refs, correct=correctness_scorer().correct if any(refs) else None)
        if pairs:  # an empty file would pass for a finished result (and replace a good one)
            write_pairs(out, pairs)
        typer.echo(summary_line(summary, out))
        if not pairs:
            raise AlignlabError(f"no pair survived, so {out} was not written",
                                fix="see the reasons above: more prompts (--limit), more --candidates, or a looser "
                                    "--max-length-ratio / --min-margin")
        if root is not None and out.name == "pairs.jsonl":
            typer.echo("next: alignlab data check data/pairs.jsonl, then alignlab recipe")
        elif root is not None and out.name == "synth_pairs.jsonl":
            typer.echo(f"{cfg.data_dir}/pairs.jsonl exists, so these went beside it (the scorecard reads both); "
                       f"train on them: alignlab recipe --pairs {cfg.data_dir}/synth_pairs.jsonl, or add them to the "
                       f"project's pairs: cat {cfg.data_dir}/synth_pairs.jsonl >> {cfg.data_dir}/pairs.jsonl")


def _build_or_keep(out: Path, skip: int, teacher, prompts: list[str], *args, **kwargs):
    """``build_pairs``; when it stops part way (an endpoint down, Ctrl-C), the pairs the finished batches kept are
    written to ``out`` and the error says how to go on."""
    from alignlab.errors import AlignlabError
    from alignlab.synth import build_pairs, write_pairs
    from alignlab.synth.pairs import PartialPairs

    try:
        return build_pairs(teacher, prompts, *args, **kwargs)
    except PartialPairs as part:
        write_pairs(out, part.rows)
        cause = part.__cause__
        why = str(cause) if isinstance(cause, AlignlabError) else type(cause).__name__
        raise AlignlabError(f"stopped after {part.done} of {len(prompts)} prompts ({why}); the {len(part.rows)} pairs "
                            f"kept so far are in {out}",
                            fix=f"go on with --skip {skip + part.done} --out another.jsonl, then join the two files") from cause


def _refuse_overwrite(out: Path, prompts: str, force: bool) -> None:
    """distil's output never replaces its own prompts file, and replaces another file only with --force."""
    from alignlab.errors import AlignlabError

    from alignlab.data import resolve_data

    src = Path(resolve_data(prompts))
    if src.is_file() and out.exists() and out.resolve() == src.resolve():
        raise AlignlabError(f"--out {out} is the prompts file distil reads", fix="write to another file (default: data/distil.jsonl)")
    if out.exists() and not force:
        raise AlignlabError(f"{out} exists", fix="pass --force to replace it, or --out another.jsonl")


def _teacher(url, model_name, key_env, timeout: float, workers: int, run, model: str, device: str, seed: int):
    """An endpoint teacher (--teacher-url), else the local model or run as its own teacher."""
    from alignlab.errors import AlignlabError
    from alignlab.synth import EndpointTeacher, LocalTeacher

    if url:
        if not model_name:
            raise AlignlabError("--teacher-url needs --teacher-model (the model name at the endpoint)")
        return EndpointTeacher(url, model_name, api_key_env=key_env, timeout=timeout, max_workers=workers)
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
        screen: bool = typer.Option(True, "--screen/--no-screen", help="answer only prompts whose base opening is correct against the reference (a sixth of the answering on the demo's prompts); --no-screen answers every prompt"),
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
                            amplify=amplify, screen=screen)
        typer.echo(summary_line(counts, out))
        if not counts["kept"]:
            from alignlab.errors import AlignlabError

            raise AlignlabError(f"no answer was kept, so {out} was not written",
                                fix="see the reasons above: more prompts (drop --limit), or --no-screen")
        typer.echo(f"next: alignlab train sft --from {run} --data {out} --lr 1e-4 --epochs 2")

"""`alignlab sample`: K on-policy answers per prompt from a run's adapter (or the base) into the feedback store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlab.config import MAX_NEW_TOKENS, RATING_TEMPERATURE


def _stored_line(stored: int, n: int, prompts: int, unfinished: int, temperature: float, round: int, db_path) -> str:
    """What was stored, and what was left out and why (a cut answer with no finished sentence; one already stored)."""
    same = prompts * n - stored - unfinished
    line = f"stored {stored} answers ({n} per prompt, {prompts} prompts) in round {round} of {db_path}"
    if unfinished:
        line += (f"; {unfinished} cut at --max-new-tokens before a sentence ended were left out (raise --max-new-tokens,"
                 " or --keep-unfinished)")
    if same:
        line += f"; {same} already stored for their prompt (or sampled twice) were left out"
        if same >= prompts * n / 2:  # greedy decoding answers the same whatever the seed
            line += (" — pass another --seed for new answers" if temperature > 0 else
                     " — greedy decoding (--temperature 0) gives the same answers every time")
    return line


def register(app: typer.Typer) -> None:
    @app.command()
    def sample(
        run: Optional[Path] = typer.Option(None, "--run", "-r", help="run directory whose adapter answers"),
        base: bool = typer.Option(False, "--base", help="sample from the base model (the project's model) instead"),
        prompts: Optional[str] = typer.Option(None, "--prompts", help="JSONL of {prompt} rows or bundled:NAME (default: the project's data/prompts.jsonl)"),
        n: int = typer.Option(2, "-n", min=1, help="answers per prompt"),
        round: int = typer.Option(0, "--round", help="round to record the answers in"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N prompts"),
        temperature: float = typer.Option(RATING_TEMPERATURE, "--temperature", "-t", help="sampling temperature (0 = greedy, needs -n 1)"),
        top_p: float = typer.Option(1.0, "--top-p", help="nucleus sampling: keep the likeliest tokens up to this probability, in (0, 1]"),
        max_new_tokens: int = typer.Option(MAX_NEW_TOKENS, "--max-new-tokens", min=1, help="length limit of each answer (one cut there is kept to its last finished sentence)"),
        keep_unfinished: bool = typer.Option(False, "--keep-unfinished", help="keep an answer cut at --max-new-tokens before any sentence ended, as cut (default: left out)"),
        batch_size: int = typer.Option(16, "--batch-size", min=1, help="prompts per generation batch"),
        seed: int = typer.Option(0, "--seed", help="sampling seed"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="base model with --base (default: the project's)"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
        db: Optional[Path] = typer.Option(None, "--db", help="feedback database (default: <project>/feedback.db)"),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
    ) -> None:
        """Sample K answers per prompt and store them (model, run, round and sampler settings recorded)."""
        from alignlab.config import project_config
        from alignlab.errors import AlignlabError
        from alignlab.feedback.store import DB_NAME, default_path, open_store
        from alignlab.models.loading import load_for_inference
        from alignlab.synth.sample import check_sampler, default_prompts, prompt_rows, sample_responses

        if (run is None) == (not base):
            raise AlignlabError("pass exactly one of --run RUN and --base")
        check_sampler(n, temperature, top_p)
        cfg, root = project_config(project)
        path = prompts or str(default_prompts(root, cfg.data_dir, "train"))
        rows = prompt_rows(path, limit=limit)
        heldout_file = default_prompts(root, cfg.data_dir, "heldout")
        heldout = {r["prompt"] for r in prompt_rows(heldout_file)}  # kept held out: export leaves them out
        db_path = db if db is not None else (root / DB_NAME if root is not None else default_path())
        left_out: dict[str, int] = {}
        with open_store(db_path) as store:  # a bad --db fails here, before the model loads
            m, tok, base_name = load_for_inference((model or cfg.model) if base else model, run, device=device)
            # the run's directory name (its id), also for `--run .`
            ids = sample_responses(store, m, tok, rows, n, model_name=base_name,
                                   run=run.resolve().name if run else None, round=round,
                                   temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, seed=seed, system_prompt=cfg.system_prompt,
                                   source=Path(path).name, heldout=heldout, drop_unfinished=not keep_unfinished,
                                   left_out=left_out)
        typer.echo(_stored_line(len(ids), n, len(rows), left_out.get("unfinished", 0), temperature, round, db_path))
        if held := sum(r["prompt"] in heldout for r in rows):
            typer.echo(f"{held} of the prompts are the scorecard's held-out prompts: they can be rated, and "
                       "`alignlab feedback export` leaves them out of training files")
        typer.echo(f"next: alignlab rate --round {round}")

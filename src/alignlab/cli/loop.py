"""`alignlab loop` (rounds of sample -> judge -> train -> score) and `alignlab rounds` (the table and its plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlab.config import field_help as fh

def _project(project: Optional[Path]):
    from alignlab.config import project_config
    from alignlab.errors import AlignlabError

    cfg, root = project_config(project)
    if root is None:
        raise AlignlabError("the loop runs inside a project", fix="run `alignlab init DIR` and cd into it, or pass --project")
    return cfg, root


def register(app: typer.Typer) -> None:
    @app.command()
    def loop(
        rounds: int = typer.Option(..., "--rounds", min=1, help="total rounds; finished rounds are kept, so a rerun continues"),
        rater: Optional[str] = typer.Option(None, "--rater", help="who labels: person (you, in `alignlab rate` or `alignlab ui` while the loop waits; refused under CI with no terminal, where it would wait forever), or an automatic rater: scorecard (persona, correctness and mimicry together, so a stuffed or wrong answer never wins a pick), judge, classifier, contrast (the default model's voice contrast) or reward:<name>"),
        method: Optional[str] = typer.Option(None, "--method", help=fh("loop", "method")),
        per_round: Optional[int] = typer.Option(None, "--per-round", min=1, help=fh("loop", "per_round")),
        n: Optional[int] = typer.Option(None, "-n", min=2, help=fh("loop", "n")),
        start: Optional[Path] = typer.Option(None, "--from", help="round 1 starts from this run's adapter (default: the base model)"),
        eval_rater: Optional[str] = typer.Option(None, "--eval-rater", help="held-out persona score by an automatic rater: judge, classifier or reward:<name> (default: the scorecard; a warning says when it shares --rater's signal)"),
        eval_prompts: Optional[int] = typer.Option(None, "--eval-prompts", min=1, help=fh("loop", "eval_prompts")),
        temperature: Optional[float] = typer.Option(None, "--temperature", "-t", min=0.0, help=fh("loop", "temperature")),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help=fh("loop", "max_new_tokens")),
        keep_unfinished: Optional[bool] = typer.Option(None, "--keep-unfinished/--drop-unfinished", help="keep an answer cut at --max-new-tokens before any sentence ended, as cut, or leave it out (default: loop.keep_unfinished in alignlab.yaml, false)"),
        catchphrase_cost: Optional[float] = typer.Option(None, "--catchphrase-cost", min=0.0, help=fh("loop", "catchphrase_cost")),
        eval_temperature: Optional[float] = typer.Option(None, "--eval-temperature", min=0.0, help=fh("loop", "eval_temperature")),
        need: Optional[int] = typer.Option(None, "--need", min=1, help="person: judgements to wait for (default: one per prompt for dpo, per answer for kto)"),
        poll: Optional[float] = typer.Option(None, "--poll", min=0.01, help=fh("loop", "poll_seconds")),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help="training steps per round (default: the project's epochs)"),
        lr: Optional[float] = typer.Option(None, "--lr", help="learning rate per round"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="any config key, e.g. --set dpo.beta=0.2"),
        judge_url: Optional[str] = typer.Option(None, "--judge-url", help=fh("judge", "url")),
        judge_model: Optional[str] = typer.Option(None, "--judge-model", help=fh("judge", "model")),
        judge_key_env: Optional[str] = typer.Option(None, "--judge-key-env", help=fh("judge", "key_env")),
        seed: Optional[int] = typer.Option(None, "--seed", help=fh("loop", "seed")),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
    ) -> None:
        """Shape the model round by round; each round trains from the previous adapter. Stop any time; rerun to continue."""
        from alignlab.config import apply_flags
        from alignlab.workflows.loop import LoopSettings, plot_rounds, run_loop, table

        cfg, root = _project(project)
        flags = {"train.max_steps": (max_steps, "--max-steps"), "train.learning_rate": (lr, "--lr"),
                 "loop.rater": (rater, "--rater"), "loop.method": (method, "--method"),
                 "loop.per_round": (per_round, "--per-round"), "loop.n": (n, "-n"),
                 "loop.eval_prompts": (eval_prompts, "--eval-prompts"), "loop.temperature": (temperature, "--temperature"),
                 "loop.max_new_tokens": (max_new_tokens, "--max-new-tokens"), "loop.seed": (seed, "--seed"),
                 "loop.keep_unfinished": (keep_unfinished, "--keep-unfinished/--drop-unfinished"),
                 "loop.catchphrase_cost": (catchphrase_cost, "--catchphrase-cost"),
                 "loop.eval_temperature": (eval_temperature, "--eval-temperature"), "loop.poll_seconds": (poll, "--poll"),
                 "judge.url": (judge_url, "--judge-url"), "judge.model": (judge_model, "--judge-model"),
                 "judge.key_env": (judge_key_env, "--judge-key-env")}
        cfg = apply_flags(cfg, {k: v for k, (v, _) in flags.items()}, {k: f for k, (_, f) in flags.items()}, set_)
        settings = LoopSettings.from_config(
            cfg.loop, rounds, rater=rater, method=method, per_round=per_round, n=n, eval_rater=eval_rater,
            eval_prompts=eval_prompts, temperature=temperature, max_new_tokens=max_new_tokens,
            eval_temperature=eval_temperature, seed=seed, need=need, keep_unfinished=keep_unfinished,
            catchphrase_cost=catchphrase_cost,
            start_run=str(start) if start else None,
            poll_seconds=poll, judge=cfg.judge.settings(judge_url, judge_model, judge_key_env),
        )
        try:
            rows = run_loop(root, cfg, settings)
        except KeyboardInterrupt:  # the trainer's "continue with alignlab train --resume" left the rounds to the user
            from alignlab.cli.breakit import rerun_hint

            rerun_hint("alignlab loop", goes_on=True)
            raise
        _print(table(rows))
        typer.echo(f"plot: {plot_rounds(rows, root / 'rounds.png')}")

    @app.command()
    def rounds(
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
    ) -> None:
        """The loop's rounds: labels collected, rows trained on, held-out persona, length, distinct-2, KL; writes rounds.png."""
        from alignlab.feedback.store import DB_NAME, open_store
        from alignlab.workflows.loop import plot_rounds, table

        _, root = _project(project)
        rows = []
        if (root / DB_NAME).is_file():  # no database yet: no rounds yet, said as such
            with open_store(root / DB_NAME, create=False) as store:
                rows = store.rounds_table()
        if not rows:
            typer.echo("no rounds yet: run `alignlab loop --rounds 1`")
            return
        _print(table(rows))
        typer.echo(f"plot: {plot_rounds(rows, root / 'rounds.png')}")


def _print(cells: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for r in cells:
        typer.echo("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())

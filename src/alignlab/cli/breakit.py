"""`alignlab break EXPERIMENT`: stage a failure on purpose and see which instrument catches it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from alignlab import methods
from alignlab.config import DEFAULT_MODEL


def register(app: typer.Typer) -> None:
    @app.command(name="break")
    def break_(
        experiment: str = typer.Argument(..., help="label-flip, kl-ablation or long-run"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="directory for data, runs, summary.json and report.html (default: break/EXPERIMENT)"),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="base model"),
        steps: Optional[int] = typer.Option(None, "--steps", min=2, help="training steps per run (defaults: label-flip 24, kl-ablation 12, long-run 60)"),
        lr: Optional[float] = typer.Option(None, "--lr", help="learning rate (defaults: label-flip 1e-4, kl-ablation 1e-3, long-run 3e-4)"),
        method: str = typer.Option(methods.GRPO, "--method", help="kl-ablation: grpo, rloo or ppo"),
        betas: str = typer.Option("0,0.04,0.4", "--betas", help="kl-ablation: KL coefficients, comma-separated"),
        rewards: Optional[Path] = typer.Option(None, "--rewards", help="kl-ablation: reward YAML (default: the long-run proxy, a persona classifier, with arithmetic correctness as gold)"),
        per_category: Optional[int] = typer.Option(None, "--per-category", min=1, help="held-out scorecard: prompts per category (7 categories; default 2, with --quick 1 and 3 prompts in all)"),
        quick: bool = typer.Option(False, "--quick", help="a few steps, few prompts, short answers (a smoke test, not a finding); --steps and --per-category, when given, are kept"),
        force: bool = typer.Option(False, "--force", help="write into an --out folder that holds other files (its rewards.yaml, data/ and runs/ are replaced)"),
    ) -> None:
        """Stage a failure and measure it: flipped labels, the KL leash removed, a long run on a flawed reward.

        Each experiment prints what happened and which instrument caught it at which step, and writes
        summary.json and report.html. Measured with the defaults on 2 CPU cores: label-flip 12.4 minutes,
        kl-ablation 9.2, long-run 8.0."""
        from alignlab.errors import AlignlabError
        from alignlab.workflows.break_report import findings
        from alignlab.workflows.breakit import EXPERIMENTS, BreakSettings, check, run_experiment

        try:
            beta_list = tuple(float(b) for b in betas.split(",") if b.strip())
        except ValueError:
            raise AlignlabError(f"--betas takes numbers separated by commas, not '{betas}'", fix="e.g. --betas 0,0.04,0.4") from None
        given = {"--method": method != methods.GRPO, "--betas": betas != "0,0.04,0.4", "--rewards": rewards is not None}
        stray = [name for name, set_ in given.items() if set_] if experiment != "kl-ablation" else []
        if stray and experiment in EXPERIMENTS:  # an unknown name is said first, by check
            raise AlignlabError(f"{', '.join(stray)} applies to kl-ablation only, not {experiment}",
                                fix=f"drop {', '.join(stray)}")
        settings = BreakSettings(model=model, steps=steps, quick=quick, per_category=per_category,
                                 learning_rate=lr, method=method, betas=beta_list,
                                 rewards=str(rewards) if rewards else None)
        check(experiment, settings)  # every refusal before --out is claimed: a refused try leaves nothing behind
        from alignlab.models.registry import resolve_model

        resolve_model(model)  # after check: a mistyped experiment was reported as an unknown model
        target = out or Path("break") / experiment
        from alignlab.fsutil import claim_dir

        claim_dir(target, "break", "data/, rewards.yaml, runs/, summary.json and report.html", force=force)
        try:
            summary = run_experiment(experiment, target, settings)
        except KeyboardInterrupt:  # the trainer's "continue with alignlab train --resume" does not fit here
            rerun_hint(f"alignlab break {experiment} -o {shlex.quote(str(target))}")
            raise
        typer.echo("")
        for line in findings(summary):
            typer.echo(line)
        typer.echo(f"report: {target / 'report.html'}  summary: {target / 'summary.json'}")


def rerun_hint(command: str, goes_on: bool = False) -> None:
    """What to say after Ctrl-C in `break` and `pipeline`: run the command again. Their runs keep no checkpoint to
    resume from, and `alignlab train --resume`, which the trainer suggests, would finish one run alone, without the
    experiment's instruments, the stages after it or the summary. ``goes_on``: `loop` and `recipe`, which a rerun
    continues from the interrupted run's last checkpoint (the trainer's line left the later rounds or stages to the
    user). The command is repeated as it was typed, options and all (``command``, its short form, when it did not come
    from the command line)."""
    import sys

    from rich.markup import escape

    from alignlab.progress import console

    typed = sys.argv[1:]
    if typed and typed[0] == command.split()[1]:
        command = "alignlab " + shlex.join(typed)
    if goes_on:
        console.print(f"[yellow]interrupted[/]: run `{escape(command)}` again; it goes on where it stopped (a run "
                      "part-trained from its last checkpoint)")
        return
    console.print("[yellow]interrupted[/]: not to be continued with `alignlab train --resume`; "
                  f"run `{escape(command)}` again (each run starts afresh)")

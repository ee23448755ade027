"""`alignlab recipe`: the default recipe (what `make demo` trains) in the current project, stage by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def recipe(
        rewrites: Optional[str] = typer.Option(None, "--rewrites", help="stages 1 and 3: preference rows whose chosen side is the model's kind of answer in persona (a file under data/, a path, or bundled:NAME; default: rewrites.jsonl)"),
        pairs: Optional[str] = typer.Option(None, "--pairs", help="stage 2: persona pairs for DPO + RPO (a file under data/, a path, or bundled:NAME; default: strong_pairs.jsonl, else pairs.jsonl)"),
        name: Optional[str] = typer.Option(None, "--name", help="the stages' runs are runs/<name>-<stage>-<method> (default: recipe; with --quick, quick)"),
        quick: bool = typer.Option(False, "--quick", help="2 steps per training stage, 8 distil prompts and a last stage on whatever they keep: a smoke test of the pipeline, not a persona"),
        force: bool = typer.Option(False, "--force", help="retrain a stage that finished with other settings or data, removing its run and every later stage's (2-step --quick runs give way without it)"),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
    ) -> None:
        """Train the default recipe (what `make demo` trains) in this project, stage by stage.

        SFT on the rewrites, DPO + RPO on the pairs from it, the base's opening distilled from its answers, SFT on
        those rows: about 12-15 minutes on 2 CPU cores with the default model. A stage already trained with the same
        settings is reused, so running it again continues an interrupted recipe; a finished stage whose settings or
        data changed is retrained only with --force (a finished recipe is 12-15 minutes of work); 2-step --quick runs give way without it."""
        from alignlab.config import DEFAULT_PERSONA, project_config
        from alignlab.errors import AlignlabError
        from alignlab.rundir import check_run_name
        from alignlab.workflows.recipes import (DEFAULT, Stage, check_data, default_pairs, missing_data, recipe_stages,
                                                stage_data, train_recipe)

        cfg, root = project_config(project)
        if root is None:
            raise AlignlabError("alignlab recipe trains inside a project", fix="alignlab init DIR, then cd DIR")
        name = name or ("quick" if quick else "recipe")  # a smoke test never replaces the real recipe's runs
        check_run_name(name)
        if pairs is None and (pairs := default_pairs(root, cfg)) is not None and cfg.persona == DEFAULT_PERSONA:
            typer.echo(f"no {cfg.data_dir}/{DEFAULT[1].data}: stage 2 uses {cfg.data_dir}/{pairs}")  # an older project
        default_rewrites, own_pairs = DEFAULT[0].data, pairs or DEFAULT[1].data
        if (rewrites is None and not own_pairs.startswith("bundled:")
                and missing_data(root, cfg, recipe_stages(pairs=pairs)) == [default_rewrites]):
            rewrites = own_pairs  # a persona of your own: its pairs (synth's) serve stages 1 and 3 too
            used = Path(stage_data(root, cfg, Stage(DEFAULT[0].method, rewrites)))  # as given: a name or a path
            typer.echo(f"no {cfg.data_dir}/{default_rewrites}: stages 1 and 3 use {_shown(used, root)}")
        stages = recipe_stages(rewrites=rewrites, pairs=pairs, quick=quick)
        missing = missing_data(root, cfg, stages)
        if missing:
            raise AlignlabError(
                f"the recipe trains on {', '.join(f'{cfg.data_dir}/{m}' for m in missing)}, which this project lacks",
                fix="`alignlab init` writes them for the example persona; for your own, make preference pairs "
                    "(alignlab synth, or rate in alignlab ui and `alignlab feedback export`) and pass --rewrites/--pairs")
        check_data(root, cfg, stages)  # every stage's rows, before stage 1 trains
        typer.echo(" -> ".join(f"{i}. {s.describe()}" for i, s in enumerate(stages, 1)))
        try:
            final = _shown(train_recipe(root, cfg, stages, echo=typer.echo, prefix=name, replace=force), Path.cwd())
        except KeyboardInterrupt:  # the trainer's "continue with alignlab train --resume" left the later stages out
            from alignlab.cli.breakit import rerun_hint

            rerun_hint("alignlab recipe", goes_on=True)
            raise
        smoke = "   (a smoke test: `alignlab recipe` without --quick trains the persona)" if quick else ""
        typer.echo(f"final adapter: {final}{smoke}")
        typer.echo(f"next: alignlab eval {final}   |   alignlab compare base {final}   |   alignlab export {final} --gguf OUT.gguf")


def _shown(path: Path, base: Path) -> Path:
    """``path`` relative to ``base`` when it lies under it (runs/quick-4-sft from the project), else as it is."""
    try:
        return Path(path).resolve().relative_to(Path(base).resolve())
    except ValueError:
        return Path(path)

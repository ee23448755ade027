"""`alignlab runs`: list run directories with method, data, steps, final metrics and size."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def runs(
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory"),
        runs_dir: Optional[Path] = typer.Option(None, "--runs-dir", help="runs directory (default: the project's runs/)"),
    ) -> None:
        """List runs: method, data, status, steps, final loss/margin/reward, adapter size."""
        from rich.console import Console
        from rich.table import Column, Table

        from alignlab.config import project_config
        from alignlab.rundir import list_runs, shown_status

        cfg, root = project_config(project)
        runs_dir = runs_dir or ((root / cfg.runs_dir) if root else Path(cfg.runs_dir))
        rows = list_runs(runs_dir)
        if not rows:
            typer.echo(f"no runs under {runs_dir}")
            return
        # reward: the online methods' last logged mean reward (GRPO's loss is about 0 by construction)
        table = Table("method", "data", "status", "steps", "loss", "margin", "acc", "reward", "size")
        # the run id is what a user copies into the next command: never cut, the other columns wrap instead
        table.columns.insert(0, Column("run", no_wrap=True, min_width=max(len(Path(r["path"]).name) for r in rows)))
        for r in rows:
            f = r.get("final") if isinstance(r.get("final"), dict) else {}  # a hand-edited run.json: shown, not fatal
            def fmt(*keys):  # the first of the keys the run logged: a reward model logs `margin` and `accuracy`
                k = next((k for k in keys if isinstance(f.get(k), (int, float))), None)
                return f"{f[k]:.3f}" if k is not None else "-"

            table.add_row(
                Path(r["path"]).name,
                str(r.get("method", "?")),
                Path(str(r.get("data", "?"))).name,
                shown_status(r),
                str(r.get("steps", "-")),
                fmt("loss"),
                fmt("rewards/margins", "margin"),
                fmt("rewards/accuracies", "accuracy"),
                fmt("reward"),
                f"{r['size_bytes'] / 1e6:.1f} MB",
            )
        Console(width=None if Console().is_terminal else 200).print(table)  # piped: no cut column names

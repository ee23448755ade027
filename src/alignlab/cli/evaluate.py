"""`alignlab eval RUN`: the scorecard of a run's adapter against its base; writes eval.json and report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        run: Path = typer.Argument(..., help="run directory (runs/<id>)"),
        prompts: Optional[str] = typer.Option(None, "--prompts", help="JSONL of {prompt, (answer)} rows or bundled:NAME (default: the project's data/heldout.jsonl)"),
        rater: str = typer.Option("reward:persona_heuristic", "--rater", help="persona score by: classifier, judge or reward:<name>"),
        limit: Optional[int] = typer.Option(None, "--limit", help="only the first N prompts"),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="length limit of each answer"),
        temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy answers"),
        judge_url: Optional[str] = typer.Option(None, "--judge-url", help="--rater judge: OpenAI-compatible base URL"),
        judge_model: Optional[str] = typer.Option(None, "--judge-model", help="--rater judge: model name"),
        judge_key_env: str = typer.Option("OPENAI_API_KEY", "--judge-key-env", help="--rater judge: env var with the API key"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
    ) -> None:
        """Persona score, length, distinct-1/2, KL from the base and arithmetic accuracy, base vs adapter."""
        from rich.console import Console
        from rich.table import Table

        from alignlab.config import find_project, project_config
        from alignlab.eval.raters import get_rater
        from alignlab.eval.report import write_report
        from alignlab.eval.scorecard import evaluate_run, table_rows
        from alignlab.synth.sample import default_prompts, prompt_rows
        from alignlab.train.rundir import check_run_dir

        run = check_run_dir(run)
        cfg, root = project_config(project or find_project(run))
        rows = prompt_rows(prompts or str(default_prompts(root, cfg.data_dir, "heldout")), limit=limit)
        scorer = get_rater(rater, root, persona=cfg.persona, judge_url=judge_url, judge_model=judge_model,
                           judge_key_env=judge_key_env)
        card = evaluate_run(run, rows, scorer, device=device, max_new_tokens=max_new_tokens, temperature=temperature,
                            system_prompt=cfg.system_prompt)
        data, page = write_report(run, card)
        table = Table(title=f"{run.name}: {card['n_prompts']} held-out prompts")
        for col in ("metric", "base", "adapter", "change"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for r in table_rows(card):
            table.add_row(*r)
        Console(width=100).print(table, markup=False)
        typer.echo(f"wrote {data} and {page}")

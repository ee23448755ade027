"""`alignlab data check FILE`: validate a dataset before training on it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Validate datasets.", no_args_is_help=True)
    app.add_typer(data_app, name="data")

    @data_app.command("check")
    def check(
        file: str = typer.Argument(..., help="JSONL file, or bundled:NAME"),
        kind: Optional[str] = typer.Option(None, "--kind", help="preference, unpaired, sft or prompts (default: detected)"),
        method: Optional[str] = typer.Option(None, "--method", help="check for this training method's format"),
        max_length: Optional[int] = typer.Option(None, "--max-length", help="check responses are not cut to nothing (default: config)"),
        model: Optional[str] = typer.Option(None, "--model", help="tokenizer to count tokens with (default: config)"),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory"),
    ) -> None:
        """Report every bad row as file:line: reason; exit 1 if there are any."""
        from alignlab.config import project_config
        from alignlab.data import resolve_data
        from alignlab.data.formats import validate
        from alignlab.models.loading import load_tokenizer
        from alignlab.train.engine import data_kind

        cfg, _ = project_config(project)
        if method:
            kind = data_kind(method)
        tok = load_tokenizer(model or cfg.model, trust_remote_code=cfg.trust_remote_code)
        report = validate(resolve_data(file), kind, tok, max_length or cfg.train.max_length, cfg.train.max_prompt_length,
                          system_prompt=cfg.system_prompt)  # only prompts (online methods) count it
        for e in report.errors:
            typer.echo(e)
        from alignlab.data.formats import persona_texts, template_report

        texts = persona_texts(report.rows, report.kind)
        lines, template_warnings = template_report(texts) if texts else ([], [])
        for line in lines:
            typer.echo(line)
        for w in [*report.warnings, *template_warnings]:
            typer.echo(f"warning: {w}")
        typer.echo(f"{report.path}: {report.kind}, {len(report.rows)} valid row(s), {len(report.errors)} problem(s)")
        if report.errors:
            raise typer.Exit(1)

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

        from alignlab.data.formats import whole_file_problem
        from alignlab.errors import AlignlabError

        cfg, _ = project_config(project)
        if method:
            if kind is not None and kind != data_kind(method):
                raise AlignlabError(f"--kind {kind} and --method {method} disagree: {method} trains on "
                                    f"{data_kind(method)} rows", fix="pass one of them")
            kind = data_kind(method)
        if max_length is not None and max_length < 8:  # as the config bounds it (train refuses it too)
            raise AlignlabError(f"--max-length must be at least 8, got {max_length}")
        tok = load_tokenizer(model or cfg.model, trust_remote_code=cfg.trust_remote_code)
        path = resolve_data(file)
        try:
            report = validate(path, kind, tok, max_length if max_length is not None else cfg.train.max_length,
                              cfg.train.max_prompt_length, system_prompt=cfg.system_prompt)  # only prompts count it
        except AlignlabError as err:  # no row read: say what the file is (UTF-16, Parquet, a JSON array) if known
            problem = whole_file_problem(path) if Path(path).is_file() else None
            if problem is None:
                raise
            raise AlignlabError(f"{path}: no row could be read: {problem}") from err
        if report.errors and not report.rows and (problem := whole_file_problem(path)):
            raise AlignlabError(f"{path}: no row could be read: {problem}")
        for note in report.notes:  # how the rows are read (a thumbs file's thumbs-down left out of SFT)
            typer.echo(note)
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

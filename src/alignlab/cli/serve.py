"""`alignlab serve` (OpenAI-compatible API for a base + persona adapters, plus the rating UI) and `alignlab ui`."""

from __future__ import annotations

from pathlib import Path

import typer

DB_HELP = "feedback database (default: <project>/feedback.db, or ./feedback.db outside a project)"


def _announce(host: str, port: int, parts: list[tuple[str, str]]) -> None:
    from alignlab.serve.server import exposure_warning, url_for

    warning = exposure_warning(host)
    if warning:
        typer.echo(warning, err=True)
    url = url_for(host, port)
    for label, path in parts:
        typer.echo(f"{label}: {url}{path}")
    typer.echo("Ctrl-C stops")


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        runs: list[str] = typer.Argument(None, metavar="RUN", show_default=False, help="run directories whose adapters to serve, each as RUN_DIR or NAME=RUN_DIR (name defaults to the directory name)"),
        model: str | None = typer.Option(None, "--model", "-m", help="base model (default: the first run's base, or smollm2-135m with no runs)"),
        host: str = typer.Option("127.0.0.1", "--host", help="address to bind; anything but loopback prints a warning"),
        port: int = typer.Option(8000, "--port", help="port to listen on"),
        db: Path | None = typer.Option(None, "--db", help=DB_HELP + "; without --db the rating UI is on only when that file exists"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    ) -> None:
        """Serve the base model and run adapters over an OpenAI-compatible API (/v1), with the rating UI at /."""
        from alignlab.feedback.store import default_path
        from alignlab.serve.api import create_app
        from alignlab.serve.models import ModelPool
        from alignlab.serve.server import serve

        store_path = db if db is not None else default_path()
        if db is None and not store_path.is_file():
            store_path = None
        pool = ModelPool.from_specs(list(runs or []), model=model, device=device)
        typer.echo(f"models: {', '.join(pool.names)} (base: {pool.base_name}, device: {pool.device})")
        if store_path is None:
            typer.echo("rating UI off: no feedback.db here (pass --db PATH to create one)")
        parts = [("OpenAI API", "/v1")] + ([("rating UI", "/")] if store_path else [])
        _announce(host, port, parts)
        serve(create_app(pool, store_path), host=host, port=port)

    @app.command("ui")
    def ui_cmd(
        db: Path | None = typer.Option(None, "--db", help=DB_HELP),
        host: str = typer.Option("127.0.0.1", "--host", help="address to bind; anything but loopback prints a warning"),
        port: int = typer.Option(8001, "--port", help="port to listen on"),
        no_model: bool = typer.Option(True, "--no-model", show_default=False, help="load no model (always the case here; `alignlab serve` serves models)"),
    ) -> None:
        """The rating UI in the browser over the project's feedback.db; no model is loaded."""
        from alignlab.feedback.store import default_path, open_store
        from alignlab.serve.api import create_app
        from alignlab.serve.server import serve

        path = db if db is not None else default_path()
        open_store(path, create=False).close()  # refuse a missing database with the usual one-line error
        _announce(host, port, [(f"rating UI for {path}", "/")])
        serve(create_app(None, path), host=host, port=port)

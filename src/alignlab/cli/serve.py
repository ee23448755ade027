"""`alignlab serve` (OpenAI-compatible API for a base + persona adapters, plus the rating UI) and `alignlab ui`."""

from __future__ import annotations

from pathlib import Path

from typing import Optional

import typer

from alignlab.config import DEFAULT_MODEL, checked_base_opening

DB_HELP = "feedback database (default: <project>/feedback.db, or ./feedback.db outside a project)"
HOST_HELP = "address to bind; anything but loopback needs ALIGNLAB_API_KEY set"
ALLOWED_HELP = ("a Host name clients use to reach this server, besides localhost and the bound address (repeatable;"
                " other names are refused, against DNS rebinding)")
BODY_HELP = "largest request body accepted, in bytes (larger: 413)"


def _start(app, host: str, port: int, parts: list[tuple[str, str]]) -> None:
    """Check the bind (off loopback needs a key) before printing anything, then announce and serve."""
    from alignlab.serve.server import check_exposure, check_port, serve, url_for

    check_exposure(host)
    check_port(host, port)
    url = url_for(host, port)
    for label, path in parts:
        typer.echo(f"{label}: {url}{path}")
    typer.echo("Ctrl-C stops; one log line per request on stderr")
    serve(app, host=host, port=port)


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        runs: list[str] = typer.Argument(None, metavar="RUN", show_default=False, help="run directories whose adapters to serve, each as RUN_DIR or NAME=RUN_DIR (name defaults to the directory name)"),
        model: str | None = typer.Option(None, "--model", "-m", help=f"base model (default: the first run's base; with no runs the project's model, else {DEFAULT_MODEL})"),
        host: str = typer.Option("127.0.0.1", "--host", help=HOST_HELP),
        port: int = typer.Option(8000, "--port", min=1, max=65535, help="port to listen on"),
        db: Path | None = typer.Option(None, "--db", help=DB_HELP + "; without --db the rating UI is on only when that file exists"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
        allowed_host: list[str] = typer.Option([], "--allowed-host", help=ALLOWED_HELP),
        max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1024, help=BODY_HELP),
        max_request_tokens: int = typer.Option(8192, "--max-request-tokens", min=1, help="budget per request on n x max_tokens (over it: 400)"),
        queue: int = typer.Option(8, "--queue", min=1, help="model requests admitted at once, running or waiting (more: 429 with Retry-After)"),
        repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty", min=1.0, help="penalty on tokens already in the answer (never the prompt's), as in chat and eval; 1.0 = off (default: the project's sampling.repetition_penalty)"),
        amplify: Optional[float] = typer.Option(None, "--amplify", min=0.0, help="answers from an adapter are decoded from adapter + AMPLIFY x (adapter - base) logits: more of its voice, a second forward pass per token; 0 = off (default: the project's sampling.amplify)"),
        base_opening: Optional[str] = typer.Option(None, "--base-opening", help="in chat answers from an adapter, the base model writes the opening ('sentence' or a number of words), the adapter the rest; off = the adapter alone (default: the project's sampling.base_opening)"),
    ) -> None:
        """Serve the base model and run adapters over an OpenAI-compatible API (/v1), with the rating UI at /."""
        from alignlab.feedback.store import default_path
        from alignlab.serve.api import create_app
        from alignlab.serve.models import ModelPool
        from alignlab.serve.server import allowed_hosts_for, check_exposure, check_port

        check_exposure(host)  # before minutes of model loading
        check_port(host, port)
        checked_base_opening(base_opening)  # one line, before loading
        from alignlab.config import project_config

        s = project_config()[0].sampling  # a run trained on distilled rows still decodes alone (ModelPool)
        base_opening = (s.base_opening or "off") if base_opening is None else base_opening
        repetition_penalty = s.repetition_penalty if repetition_penalty is None else repetition_penalty
        amplify = s.amplify if amplify is None else amplify
        store_path = db if db is not None else default_path()
        if db is None and not store_path.is_file():
            store_path = None
        pool = ModelPool.from_specs(list(runs or []), model=model, device=device, base_opening=base_opening,
                                    repetition_penalty=repetition_penalty, amplify=amplify)
        typer.echo(f"models: {', '.join(pool.names)} (base: {pool.base_name}, device: {pool.device})")
        opened = [n for n in pool.adapters if n not in pool.alone]  # a run trained on distilled rows writes its own
        if pool.base_opening is not None and opened:
            unit = "sentence" if pool.base_opening == "sentence" else f"{pool.base_opening} words"
            alone = [n for n in pool.adapters if n in pool.alone]
            note = f" (not for {', '.join(alone)}: trained on distilled rows, it decodes alone)" if alone else ""
            typer.echo(f"base opening: the base writes the first {unit} of each chat answer from {', '.join(opened)}, "
                       f"the adapter the rest{note}")
        if pool.amplify and pool.adapters:  # as chat and eval, a run trained on distilled rows decodes unamplified
            amplified = [n for n in pool.adapters if pool.amplify_of(n)]
            alone = ", ".join(n for n in pool.adapters if n in pool.alone)
            why = f"{alone}: trained on distilled rows, it decodes alone"
            typer.echo(f"amplify: answers from {', '.join(amplified)} decode from adapter + {pool.amplify:g} x "
                       f"(adapter - base)" + (f" (not for {why})" if alone else "") if amplified else
                       f"amplify: off for {why}")
        if store_path is None:
            typer.echo("rating UI off: no feedback.db here (pass --db PATH to create one)")
        parts = [("OpenAI API", "/v1")] + ([("rating UI", "/")] if store_path else [])
        web = create_app(pool, store_path, allowed_hosts=allowed_hosts_for(host, allowed_host), max_body=max_body_bytes,
                         max_request_tokens=max_request_tokens, queue_size=queue)
        _start(web, host, port, parts)

    @app.command("ui")
    def ui_cmd(
        db: Path | None = typer.Option(None, "--db", help=DB_HELP),
        host: str = typer.Option("127.0.0.1", "--host", help=HOST_HELP),
        port: int = typer.Option(8001, "--port", min=1, max=65535, help="port to listen on"),
        no_model: bool = typer.Option(True, "--no-model", show_default=False, help="load no model (always the case here; `alignlab serve` serves models)"),
        allowed_host: list[str] = typer.Option([], "--allowed-host", help=ALLOWED_HELP),
        max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", min=1024, help=BODY_HELP),
        round: int | None = typer.Option(None, "--round", min=0, help="show only this round's answers (the page's ?round=N)"),
    ) -> None:
        """The rating UI in the browser over the project's feedback.db; no model is loaded."""
        from alignlab.feedback.store import default_path, open_store
        from alignlab.serve.api import create_app
        from alignlab.serve.server import allowed_hosts_for, check_exposure

        check_exposure(host)
        path = db if db is not None else default_path()
        open_store(path, create=False).close()  # refuse a missing database with the usual one-line error
        web = create_app(None, path, allowed_hosts=allowed_hosts_for(host, allowed_host), max_body=max_body_bytes)
        _start(web, host, port, [(f"rating UI for {path}", "/" if round is None else f"/?round={round}")])

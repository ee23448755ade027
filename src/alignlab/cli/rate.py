"""`alignlab rate`: judge sampled responses in the terminal (plain stdin/stdout)."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import typer


def _default_rater() -> str:
    try:
        return os.environ.get("ALIGNLAB_RATER") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "me"


def register(app: typer.Typer) -> None:
    @app.command("rate")
    def rate_cmd(
        rater: str | None = typer.Option(None, "--rater", help="your name, stored with each judgement (default: $ALIGNLAB_RATER or your login)"),
        mode: str = typer.Option("single", "--mode", help="single: thumbs/score/rewrite one response; pair: pick A or B"),
        round: int | None = typer.Option(None, "--round", help="only responses from this round"),
        db: Path | None = typer.Option(None, "--db", help="feedback database (default: <project>/feedback.db, or ./feedback.db)"),
    ) -> None:
        """Rate responses one by one; resumes where you left off. Keys: u d 1-5 r s z q (single), a b t s z q (pair)."""
        from alignlab.feedback.rate import rate, waiting_lines
        from alignlab.feedback.store import default_path, open_store

        with open_store(db if db is not None else default_path(), create=False) as store:
            rate(store, rater or _default_rater(), mode=mode, round=round, waiting_fn=waiting_lines)

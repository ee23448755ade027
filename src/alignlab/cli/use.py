"""`alignlab generate` and `alignlab chat`: talk to a run's adapter, optionally next to the base model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlab.config import CHAT_MAX_NEW_TOKENS, CHAT_TEMPERATURE, DEFAULT_MODEL, MAX_NEW_TOKENS


def _load(run: Optional[Path], model: Optional[str], device: str):
    from alignlab.models.loading import load_for_inference

    return load_for_inference(model, run, device=device)


def _answers(model, tok, prompts, compare: bool, **gen) -> list[tuple[str, str | None]]:
    """(adapter answer, base answer or None) per prompt; the base is the same weights with the adapter off."""
    from alignlab.generate import generate

    tuned = generate(model, tok, prompts, **gen)
    if not compare:
        return [(t, None) for t in tuned]
    if not hasattr(model, "disable_adapter"):
        from alignlab.errors import AlignlabError

        raise AlignlabError("--compare needs --run RUN (an adapter to compare against its base)")
    with model.disable_adapter():
        base = generate(model, tok, prompts, **gen)
    return list(zip(tuned, base))


def _print(prompt: str, tuned: str, base: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    if base is None:
        typer.echo(tuned)
        return
    table = Table(title=prompt, show_lines=True)
    table.add_column("base", ratio=1)
    table.add_column("adapter", ratio=1)
    table.add_row(base, tuned)
    Console().print(table)


def register(app: typer.Typer) -> None:
    @app.command()
    def generate(
        prompts: list[str] = typer.Argument(..., help="one or more prompts"),
        run: Optional[Path] = typer.Option(None, "--run", "-r", help="run directory whose adapter to use"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help=f"base model (default: the run's, or {DEFAULT_MODEL})"),
        compare: bool = typer.Option(False, "--compare", help="show base and adapter answers side by side"),
        max_new_tokens: int = typer.Option(MAX_NEW_TOKENS, "--max-new-tokens", help="length limit of each answer"),
        temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy"),
        system: Optional[str] = typer.Option(None, "--system", help="system prompt"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    ) -> None:
        """Answer prompts with a run's adapter (or the base model)."""
        model_, tok, _ = _load(run, model, device)
        gen = dict(max_new_tokens=max_new_tokens, temperature=temperature, system_prompt=system)
        for p, (tuned, base) in zip(prompts, _answers(model_, tok, prompts, compare, **gen)):
            if len(prompts) > 1 and base is None:
                typer.echo(f"> {p}")
            _print(p, tuned, base)

    @app.command()
    def chat(
        run: Optional[Path] = typer.Option(None, "--run", "-r", help="run directory whose adapter to use"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help=f"base model (default: the run's, or {DEFAULT_MODEL})"),
        compare: bool = typer.Option(False, "--compare", help="answer each turn with base and adapter"),
        max_new_tokens: int = typer.Option(CHAT_MAX_NEW_TOKENS, "--max-new-tokens"),
        temperature: float = typer.Option(CHAT_TEMPERATURE, "--temperature", "-t"),
        system: Optional[str] = typer.Option(None, "--system", help="system prompt"),
        device: str = typer.Option("auto", "--device"),
    ) -> None:
        """A chat REPL. Commands: /reset clears the history, /quit (or Ctrl-D) leaves."""
        model_, tok, base_name = _load(run, model, device)
        typer.echo(f"chatting with {run or base_name} (/reset, /quit)")
        history: list[dict] = []
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                typer.echo("")
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            if line == "/reset":
                history = []
                continue
            history.append({"role": "user", "content": line})
            gen = dict(max_new_tokens=max_new_tokens, temperature=temperature, system_prompt=system)
            (tuned, base), = _answers(model_, tok, [list(history)], compare, **gen)
            if base is not None:
                typer.echo(f"base> {base}")
            typer.echo(f"bot> {tuned}")
            history.append({"role": "assistant", "content": tuned})

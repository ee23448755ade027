"""`alignlab generate` and `alignlab chat`: talk to a run's adapter, optionally next to the base model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlab.config import CHAT_MAX_NEW_TOKENS, CHAT_TEMPERATURE, DEFAULT_MODEL


def _load(run: Optional[Path], model: Optional[str], device: str):
    from alignlab.models.loading import load_for_inference

    loaded = load_for_inference(model, run, device=device)
    if not getattr(loaded[1], "chat_template", None):
        typer.echo(f"note: {loaded[2]} has no chat template (a base model?): prompts go in as plain text to continue",
                   err=True)
    return loaded


def _answers(model, tok, prompts, compare: bool, base_opening: str | None = None, amplify: float = 0.0,
             **gen) -> list[tuple[str, str | None]]:
    """(adapter answer, base answer or None) per prompt; the base is the same weights with the adapter off.
    ``base_opening``: the base writes each answer's opening (generate()), the adapter the rest; None means the
    default, the first sentence, where there is an adapter to go on from it. ``amplify``: generate()'s."""
    from alignlab.generate import generate, opening_of

    adapter = hasattr(model, "disable_adapter")
    opening = _opening(base_opening) if base_opening is not None else ("sentence" if adapter else None)
    if (compare or opening or amplify) and not adapter:
        raise _needs_lora("--compare" if compare else "--amplify" if amplify else "--base-opening", full=True)
    base = None
    if compare or opening:
        with model.disable_adapter():
            base = generate(model, tok, prompts, **gen)
    prefixes = [opening_of(b, opening) for b in base] if opening else None
    tuned = generate(model, tok, prompts, prefixes=prefixes, amplify=amplify, **gen)
    return [(t, b if compare else None) for t, b in zip(tuned, base or [None] * len(tuned))]


def _opening(value: str | None):
    """--base-opening checked before any model loads: one line naming what is accepted."""
    from alignlab.config import checked_base_opening

    return checked_base_opening(value)


def _refuse_without_adapter(run, compare: bool, gen: dict) -> None:
    """--compare, --amplify and --base-opening need a LoRA run: refused before any model loads."""
    from alignlab.config import parse_base_opening
    from alignlab.rundir import full_fine_tune

    if run is not None and not full_fine_tune(run):
        return
    what = ("--compare" if compare else "--amplify" if gen.get("amplify")
            else "--base-opening" if parse_base_opening(gen.get("base_opening")) is not None else None)
    if what:
        raise _needs_lora(what, full=run is not None)


def _needs_lora(what: str, full: bool):
    """The one-line error for a flag that needs the base and an adapter to write parts of one answer."""
    from alignlab.errors import AlignlabError

    return AlignlabError(f"{what} needs a LoRA run (--run RUN, an adapter on its base): the base and the adapter "
                         "write parts of one answer", fix=f"drop {what}" + (" (a full fine-tune answers alone)" if full else ""))


def _decoding(run, **given) -> dict:
    """generate()'s settings: each flag given, else the project's (``sampling``, ``system_prompt``) with what the run
    records for itself over them (a run trained on distilled rows decodes alone). The base opening and amplify
    need an adapter: without --run they are off unless asked for."""
    from alignlab.config import project_config
    from alignlab.rundir import sampling_for

    cfg, _ = project_config()
    s = sampling_for(cfg.sampling, run)  # a full fine-tune decodes alone
    project = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p,
               "repetition_penalty": s.repetition_penalty, "system_prompt": cfg.system_prompt,
               "base_opening": (s.base_opening or "off") if run is not None else None,
               "amplify": s.amplify if run is not None else 0.0}
    return {**project, **{k: v for k, v in given.items() if v is not None}}


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
        model: Optional[str] = typer.Option(None, "--model", "-m", help=f"base model (default: the run's, else the project's model, else {DEFAULT_MODEL})"),
        compare: bool = typer.Option(False, "--compare", help="show base and adapter answers side by side"),
        base_opening: Optional[str] = typer.Option(None, "--base-opening", help="the base model writes each answer's opening ('sentence' or a number of words), the adapter the rest; off = the adapter alone (default: the project's sampling.base_opening, sentence unless set; off for a run trained on distilled rows)"),
        repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty", min=1.0, help="penalty on tokens already generated; 1.0 = off (default: the project's sampling.repetition_penalty)"),
        amplify: Optional[float] = typer.Option(None, "--amplify", min=0.0, help="decode from adapter + AMPLIFY x (adapter - base) logits: more of the adapter's voice, a second forward pass per token; 0 = off (needs --run; default: the project's sampling.amplify)"),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="tokens each answer may add (default: the project's sampling.max_new_tokens); with a base opening, the adapter adds them after the base's first sentence"),
        temperature: Optional[float] = typer.Option(None, "--temperature", "-t", min=0.0, help="0 = greedy (default: the project's sampling.temperature)"),
        system: Optional[str] = typer.Option(None, "--system", help="system prompt (default: the project's system_prompt)"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    ) -> None:
        """Answer prompts with a run's adapter (or the base model), decoded as the project's sampling settings say
        (as `alignlab eval` decodes); flags override them."""
        _opening(base_opening)
        gen = _decoding(run, base_opening=base_opening, repetition_penalty=repetition_penalty, amplify=amplify,
                        max_new_tokens=max_new_tokens, temperature=temperature, system_prompt=system)
        _refuse_without_adapter(run, compare, gen)
        model_, tok, _ = _load(run, model, device)
        for p, (tuned, base) in zip(prompts, _answers(model_, tok, prompts, compare, **gen)):
            if len(prompts) > 1 and base is None:
                typer.echo(f"> {p}")
            _print(p, tuned, base)

    @app.command()
    def chat(
        run: Optional[Path] = typer.Option(None, "--run", "-r", help="run directory whose adapter to use"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help=f"base model (default: the run's, else the project's model, else {DEFAULT_MODEL})"),
        compare: bool = typer.Option(False, "--compare", help="answer each turn with base and adapter"),
        base_opening: Optional[str] = typer.Option(None, "--base-opening", help="the base model writes each answer's opening ('sentence' or a number of words), the adapter the rest; off = the adapter alone (default: the project's sampling.base_opening, sentence unless set; off for a run trained on distilled rows)"),
        repetition_penalty: Optional[float] = typer.Option(None, "--repetition-penalty", min=1.0, help="penalty on tokens already generated; 1.0 = off (default: the project's sampling.repetition_penalty)"),
        amplify: Optional[float] = typer.Option(None, "--amplify", min=0.0, help="decode from adapter + AMPLIFY x (adapter - base) logits: more of the adapter's voice, a second forward pass per token; 0 = off (needs --run; default: the project's sampling.amplify)"),
        max_new_tokens: int = typer.Option(CHAT_MAX_NEW_TOKENS, "--max-new-tokens", min=1),
        temperature: float = typer.Option(CHAT_TEMPERATURE, "--temperature", "-t", min=0.0),
        system: Optional[str] = typer.Option(None, "--system", help="system prompt (default: the project's system_prompt)"),
        device: str = typer.Option("auto", "--device"),
    ) -> None:
        """A chat REPL. Commands: /reset clears the history, /quit (or Ctrl-D) leaves. The project's system prompt,
        repetition penalty, base opening and amplify apply unless flags say otherwise; length and temperature are
        chat's own."""
        _opening(base_opening)
        gen = _decoding(run, base_opening=base_opening, repetition_penalty=repetition_penalty, amplify=amplify,
                        max_new_tokens=max_new_tokens, temperature=temperature, system_prompt=system)
        _refuse_without_adapter(run, compare, gen)
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
            (tuned, base), = _answers(model_, tok, [list(history)], compare, **gen)
            if base is not None:
                typer.echo(f"base> {base}")
            typer.echo(f"bot> {tuned}")
            history.append({"role": "assistant", "content": tuned})

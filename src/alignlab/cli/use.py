"""`alignlab generate` and `alignlab chat`: talk to a run's adapter, optionally next to the base model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from alignlab.config import CHAT_MAX_NEW_TOKENS, CHAT_TEMPERATURE, DEFAULT_MODEL


def _load(run: Optional[Path], model: Optional[str], device: str, system: str | None = None, where: str = ""):
    """The model, its tokenizer and the base's name; a chat template that refuses the ``system`` prompt (Gemma 2's)
    is one line naming ``where`` it was set, before any weights load, rather than a TemplateError on every answer."""
    from alignlab.models.loading import load_for_inference

    loaded = load_for_inference(model, run, device=device, check=lambda tok: _check_system(tok, system, where))
    if not getattr(loaded[1], "chat_template", None):
        typer.echo(f"note: {loaded[2]} has no chat template (a base model?): prompts go in as plain text to continue",
                   err=True)
    return loaded


def _check_system(tok, system: str | None, where: str) -> None:
    from jinja2.exceptions import TemplateError

    from alignlab.errors import AlignlabError
    from alignlab.generate import chat_prompt

    if not system or not getattr(tok, "chat_template", None):
        return
    try:
        chat_prompt([{"role": "user", "content": "hi"}], tok, system)
    except TemplateError as err:
        flag = where == "--system"
        raise AlignlabError(f"the model's chat template refuses a system prompt: {err}", where=where,
                            fix=("drop --system" if flag else "pass --system '' to answer without it, or remove it") +
                            " (or put its text in each prompt) for this model") from None


def _system_where(run, system: str | None) -> str:
    """Where the system prompt chat and generate answer under was set: the flag, the run's config.yaml (what it was
    trained under) or the project's alignlab.yaml, with its line."""
    from alignlab.config import CONFIG_NAME, find_project

    if system is not None:
        return "--system"
    path = _run_path(run)
    if path is not None and (path / "config.yaml").is_file():
        return _line_of(path / "config.yaml", "system_prompt")
    root = find_project(path) if path is not None else None
    root = root or find_project()
    return _line_of(root / CONFIG_NAME, "system_prompt") if root is not None else "system_prompt"


def _line_of(path: Path, key: str) -> str:
    """``path:line`` of a YAML file's top-level ``key``; the path alone when it is not found."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return str(path)
    return next((f"{path}:{i}" for i, line in enumerate(lines, 1) if line.startswith(f"{key}:")), str(path))


def _run_path(run) -> Path | None:
    """The run's directory (``run`` may be its name inside its project); as given when it is none: loading says why."""
    from alignlab.rundir import run_named

    return None if run is None else run_named(run) or Path(run)


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
    # as eval answers: the opening's tokens count in max_new_tokens
    if not compare:  # the base writes no more than the opening (generate()'s OpeningDone)
        return [(t, None) for t in generate(model, tok, prompts, base_opening=opening, amplify=amplify,
                                            opening_counts=True, **gen)]
    with model.disable_adapter():
        base = generate(model, tok, prompts, **gen)
    prefixes = [opening_of(b, opening, tok) for b in base] if opening else None
    tuned = generate(model, tok, prompts, prefixes=prefixes, amplify=amplify, opening_counts=True, **gen)
    return list(zip(tuned, base))


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
    """generate()'s settings: each flag given, else the run's project's ``sampling`` (as eval reads it: the project
    that holds the run, whatever directory the command runs in) with what the run records for itself over them (a
    run trained on distilled rows decodes alone), and the system prompt the run was trained under (its config.yaml,
    as serve and its export answer; else the project's). The base opening and amplify need an adapter: without
    --run they are off unless asked for."""
    from alignlab.config import find_project, project_config
    from alignlab.rundir import sampling_for, trained_under

    path = _run_path(run)
    cfg, _ = project_config(find_project(path) if path is not None else None)
    s = sampling_for(cfg.sampling, run)  # a full fine-tune decodes alone
    system = trained_under([path], cfg.system_prompt)
    project = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p,
               "repetition_penalty": s.repetition_penalty, "system_prompt": system,
               "base_opening": (s.base_opening or "off") if run is not None else None,
               "amplify": s.amplify if run is not None else 0.0}
    return {**project, **{k: v for k, v in given.items() if v is not None}}


def _print(prompt: str, tuned: str, base: str | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if base is None:
        typer.echo(tuned)
        return
    # Text: a prompt or an answer is shown as written, never read as rich markup ("list[int]", "[/b]")
    table = Table(title=Text(prompt), show_lines=True)
    table.add_column("base", ratio=1)
    table.add_column("adapter", ratio=1)
    table.add_row(Text(base), Text(tuned))
    Console().print(table)


def _readable(text: str) -> str:
    """``text`` with bytes that were not UTF-8 as U+FFFD, with a note. Python keeps such bytes (a Latin-1 terminal's
    "é", an argument) as lone surrogates, which the tokenizer refused with a TypeError."""
    fixed = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if fixed != text:
        typer.echo("note: the input is not all UTF-8 (is the terminal set to another encoding?): what could not be "
                   "read became \ufffd", err=True)
    return fixed


def _tokens(tok, prompt, system: str | None) -> int:
    from alignlab.generate import chat_prompt

    return len(tok(chat_prompt(prompt, tok, system), add_special_tokens=False)["input_ids"])


def _too_long(tok, prompt, gen: dict, window: int | None) -> str | None:
    """Why ``prompt`` leaves the answer no room in the model's context window, or None when it fits."""
    if window is None:
        return None
    n = _tokens(tok, prompt, gen.get("system_prompt"))
    if n + gen["max_new_tokens"] <= window:
        return None
    return (f"the prompt is {n} tokens, and with {gen['max_new_tokens']} for the answer (--max-new-tokens) it runs "
            f"past the model's context window of {window} tokens")


def _refuse_no_room(tok, gen: dict, window: int | None, where: str) -> None:
    """chat and generate: a system prompt (``where`` it was set: the flag, the run's config.yaml, the project's) or
    --max-new-tokens that leaves no message room in the context window, refused once before any message. Every
    message was refused instead, told to shorten itself, though the system prompt took the window."""
    from alignlab.errors import AlignlabError

    if window is None:
        return
    m, system = gen["max_new_tokens"], gen.get("system_prompt")
    bare = _tokens(tok, "", None)
    if bare + m > window:
        raise AlignlabError(f"with {m} tokens for the answer (--max-new-tokens) not even an empty message fits the "
                            f"model's context window of {window} tokens",
                            fix=f"lower --max-new-tokens below {window - bare}")
    if system and (n := _tokens(tok, "", system)) + m > window:
        raise AlignlabError(f"the system prompt is {n - bare} tokens, and with {m} for the answer (--max-new-tokens) "
                            f"it leaves no room for a message in the model's context window of {window} tokens",
                            where=where, fix="pass --system '' (or a shorter one), or lower --max-new-tokens")


def _fit(history: list[dict], tok, gen: dict, window: int | None) -> list[dict]:
    """The newest turns of the conversation that fit the context window with room for the answer: the oldest
    exchanges are left out, with a note. Past the window GPT-2 failed on an index (the session lost) and a RoPE
    model answered from positions it never trained on."""
    kept = history
    while len(kept) > 1 and _too_long(tok, kept, gen, window):
        kept = kept[2:]  # a user turn and its answer
    if len(kept) < len(history):
        typer.echo(f"note: the conversation outgrew the model's context window of {window} tokens: its oldest "
                   f"{(len(history) - len(kept)) // 2} exchange(s) are left out", err=True)
    return kept


def _line_editing() -> None:
    """Arrow keys, history and line editing in the REPL (POSIX readline): without it the keys' escape codes went
    into the message."""
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401 - input() uses it once imported
        except ImportError:  # Windows
            pass


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
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", min=1, help="tokens each answer may have, a base opening's included, as eval counts them (default: the project's sampling.max_new_tokens)"),
        temperature: Optional[float] = typer.Option(None, "--temperature", "-t", min=0.0, help="0 = greedy (default: the project's sampling.temperature)"),
        system: Optional[str] = typer.Option(None, "--system", help="system prompt (default: the one the run was trained under, else the project's system_prompt; '' = none)"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
    ) -> None:
        """Answer prompts with a run's adapter (or the base model), decoded as the project's sampling settings say
        (as `alignlab eval` decodes); flags override them."""
        _opening(base_opening)
        gen = _decoding(run, base_opening=base_opening, repetition_penalty=repetition_penalty, amplify=amplify,
                        max_new_tokens=max_new_tokens, temperature=temperature, system_prompt=system)
        _refuse_without_adapter(run, compare, gen)
        prompts = [_readable(p) for p in prompts]
        where = _system_where(run, system)
        model_, tok, _ = _load(run, model, device, gen["system_prompt"], where)
        _refuse_too_long(prompts, model_, tok, gen, where)
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
        system: Optional[str] = typer.Option(None, "--system", help="system prompt (default: the one the run was trained under, else the project's system_prompt; '' = none)"),
        device: str = typer.Option("auto", "--device"),
    ) -> None:
        """A chat REPL. Commands: /reset clears the history, /quit (or Ctrl-D) leaves. The system prompt the run was
        trained under (else the project's), its project's repetition penalty, base opening and amplify apply unless
        flags say otherwise; length and temperature are chat's own. A conversation longer than the model's context
        window leaves out its oldest exchanges."""
        _opening(base_opening)
        gen = _decoding(run, base_opening=base_opening, repetition_penalty=repetition_penalty, amplify=amplify,
                        max_new_tokens=max_new_tokens, temperature=temperature, system_prompt=system)
        _refuse_without_adapter(run, compare, gen)
        where = _system_where(run, system)
        model_, tok, base_name = _load(run, model, device, gen["system_prompt"], where)
        from alignlab.generate import context_window

        _refuse_no_room(tok, gen, context_window(model_), where)
        typer.echo(f"chatting with {run or base_name} (/reset, /quit)")
        _repl(model_, tok, compare, gen)


def _repl(model, tok, compare: bool, gen: dict) -> None:
    from alignlab.generate import context_window

    window = context_window(model)
    _line_editing()
    if hasattr(sys.stdin, "reconfigure"):  # a byte that is not UTF-8 is kept (then shown as U+FFFD), not a crash
        sys.stdin.reconfigure(errors="surrogateescape")
    history: list[dict] = []
    while True:
        try:
            line = _readable(input("you> ").strip())
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
        history = _turn(model, tok, history, line, compare, gen, window)


def _turn(model, tok, history: list[dict], line: str, compare: bool, gen: dict, window: int | None) -> list[dict]:
    """One exchange: the conversation with the message and its answer; a message that cannot be answered is one
    line, and the conversation goes on without it (an error used to end the session and lose it)."""
    import os

    from alignlab.errors import AlignlabError

    message = {"role": "user", "content": line}
    if why := _too_long(tok, [message], gen, window):
        typer.echo(f"error: {why} — shorten the message or lower --max-new-tokens", err=True)
        return history
    turns = _fit([*history, message], tok, gen, window)
    try:
        (tuned, base), = _answers(model, tok, [turns], compare, **gen)
    except AlignlabError as err:
        typer.echo(f"error: {err}", err=True)
        return turns[:-1]
    except Exception as err:  # noqa: BLE001 - one line, as the command's own last resort says it
        if os.environ.get("ALIGNLAB_DEBUG") == "1":
            raise
        from alignlab.cli import _last_resort

        typer.echo(f"error: {_last_resort(err)}", err=True)
        return turns[:-1]
    if base is not None:
        typer.echo(f"base> {base}")
    typer.echo(f"bot> {tuned}")
    return [*turns, {"role": "assistant", "content": tuned}]


def _refuse_too_long(prompts: list[str], model, tok, gen: dict, where: str) -> None:
    """generate: a prompt that leaves its answer no room in the context window, refused before any answer (the system
    prompt named, set ``where``, when it alone leaves none)."""
    from alignlab.errors import AlignlabError
    from alignlab.generate import context_window

    window = context_window(model)
    _refuse_no_room(tok, gen, window, where)
    for i, prompt in enumerate(prompts, 1):
        if why := _too_long(tok, prompt, gen, window):
            raise AlignlabError(why, where=f"prompt {i}" if len(prompts) > 1 else None,
                                fix="shorten it or lower --max-new-tokens")

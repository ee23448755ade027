"""The `alignlab` command. Each verb group lives in its own module with a ``register(app)`` function.

Modules stay thin: parse arguments, call the library, print. Heavy imports (torch, transformers)
happen inside the command functions so `alignlab --help` is instant.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import typer
import typer.core

from alignlab.errors import PEER_STOPPED, AlignlabError

# ClickException as typer raises it: from its own copy of click (recent typer), or from click itself (older ones)
_USAGE_ERRORS = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _Group(typer.core.TyperGroup):
    """The root group. When stderr is not a terminal (a log, CI), a usage error (unknown option, missing argument,
    bad value) comes out as click writes it: the usage line, the hint and the error with its "Did you mean", instead
    of typer's panel of box drawing."""

    def make_context(self, *args, **kwargs):
        with _plain_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):  # a subcommand's arguments are parsed in here
        with _plain_usage_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def _plain_usage_errors():
    try:
        yield
    except _USAGE_ERRORS as err:
        # NoArgsIsHelpError: typer printed the help already, and its error has nothing to add
        if sys.stderr.isatty() or type(err).__name__ == "NoArgsIsHelpError":
            raise
        err.show()
        sys.exit(err.exit_code)


app = typer.Typer(
    name="alignlab",
    help="Shape a small open LLM's behaviour through preference and reinforcement feedback.",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # every command's, as click hands them down
)

# Verb-group modules, in the order their commands appear in --help.
MODULES = ["project", "data", "train", "use", "runs", "feedback", "rate", "reward", "serve", "sample", "synth", "recipe", "evaluate", "compare", "loop", "pipeline", "breakit", "export", "plan"]

for _name in MODULES:
    importlib.import_module(f"alignlab.cli.{_name}").register(app)


def _reflow(group: typer.Typer) -> None:
    """Join the lines of each paragraph of every command's help: typer keeps a docstring's line breaks after its
    first paragraph, so `--help` would break lines mid-sentence."""
    import inspect

    for info in group.registered_commands:
        text = info.help or inspect.getdoc(info.callback) or ""
        info.help = "\n\n".join(" ".join(p.split()) for p in text.split("\n\n"))
    for sub in group.registered_groups:
        _reflow(sub.typer_instance)


_reflow(app)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _peer_gone(err: Exception) -> bool:
    text = _one_line(err)
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and ("closed by peer" in text or "reset by peer" in text)


def _last_resort(err: Exception) -> str:
    """The line for an error nothing else explained. In a multi-process run, a process whose peer died sees only
    gloo's "Connection closed by peer": it says that instead, so the failed process's own line is the one to read."""
    if _peer_gone(err):
        return f"process {os.environ.get('RANK', '?')} stopped because another process of the run did (see its line)"
    return f"{type(err).__name__}: {_one_line(err)} (set ALIGNLAB_DEBUG=1 for the traceback)"


def _disk_problem(err: OSError) -> str | None:
    """A full disk, a quota or a read-only place, said with where and what to do (the bare OSError named neither)."""
    import errno

    where = f" {err.filename}" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where and ' writing' + where} — free some space (or write elsewhere), " \
               "then run it again; a training run goes on with --resume"
    if err.errno in (errno.EROFS, errno.EACCES):
        return f"not allowed to write{where} ({err.strerror}) — run it where you may write, or fix the permissions"
    return None


def _after_interrupt(err: BaseException) -> bool:
    """Whether a KeyboardInterrupt lies behind this exception (typer's exit 130 is raised from one)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, KeyboardInterrupt):
            return True
        nxt = err.__cause__ if err.__cause__ is not None else None if err.__suppress_context__ else err.__context__
        err, seen = nxt, seen + 1
    return False


def _interrupted(said: bool = False) -> int:
    """After Ctrl-C or SIGTERM: a bare "interrupted" unless the command said its own line (what it kept, how to go
    on), and the exit code: 143 after SIGTERM, as a process SIGTERM ends reads, 130 after Ctrl-C."""
    progress = sys.modules.get("alignlab.progress")  # not imported: nothing was said, no SIGTERM was caught
    if not said and not (progress is not None and progress.console.said_interrupted):
        print("interrupted", file=sys.stderr)
    return 143 if progress is not None and progress.terminated() else 130


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit code 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    # PEFT reads transformers' deprecated name on every adapter load; the user can do nothing about it
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if (progress := sys.modules.get("alignlab.progress")) is not None:  # an earlier command in this process
        progress.new_command()
    try:
        app()
    except AlignlabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(_interrupted())
    except SystemExit as stop:  # typer turns Ctrl-C into a bare exit 130 (one raised from None: the command said why)
        if stop.code == 130:
            sys.exit(_interrupted(said=not _after_interrupt(stop)))
        raise
    except OSError as err:
        if (line := _disk_problem(err)) is None and os.environ.get("ALIGNLAB_DEBUG") != "1":
            line = f"{type(err).__name__}: {_one_line(err)} (set ALIGNLAB_DEBUG=1 for the traceback)"
        elif line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2 if _disk_problem(err) else 1)
    except Exception as err:  # noqa: BLE001 - last resort: no traceback for users unless asked
        if os.environ.get("ALIGNLAB_DEBUG") == "1":
            raise
        print(f"error: {_last_resort(err)}", file=sys.stderr)
        sys.exit(PEER_STOPPED if _peer_gone(err) else 1)


def entry() -> None:
    """The `alignlab` console script: ``main()``, then out without the interpreter's teardown. Clearing the modules
    torch, transformers and PEFT import (torch._dynamo's among them) took 1.0-1.4 s after every command had finished
    (measured on 2 cores); a command's files are all written and closed by then. What a normal exit does first
    still happens: other threads are waited for (not after Ctrl-C), exit handlers run (logging, temporary
    directories, child processes), stdout and stderr are flushed. ``main()`` stays a plain function for callers
    in-process."""
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    _leave(code)


def _leave(code) -> None:
    import atexit
    import threading

    if sys.getprofile() is not None or sys.gettrace() is not None:  # a profiler, debugger or coverage run: the
        sys.exit(code)  # normal exit, so it writes what it gathered after the command
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    try:
        # after Ctrl-C or SIGTERM nothing is waited for: a thread still in a request to a slow server would hold the
        # exit for its whole timeout
        for thread in threading.enumerate() if code not in (130, 143) else ():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    except KeyboardInterrupt:  # Ctrl-C while waiting: out now, with the line a first one gives (not a traceback)
        print("interrupted", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers a normal exit would run, before os._exit skips them
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`alignlab runs | head`), or a closed stream
            pass
    os._exit(code or 0)


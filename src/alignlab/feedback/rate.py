"""Rating in a plain terminal: one keystroke-and-Enter per judgement, over input() and print().

Nothing here touches a tty directly, so a test (or a pipe) can drive it. Each judgement is committed
before the next item is shown; the next session starts with what this rater has not judged yet.
Items skipped with ``s`` come back in a later session, not in this one. In pair mode the two responses
are shown in a fixed but mixed order (by id parity), so the older response is not always "A".
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from typing import Any

from alignlab.errors import AlignlabError
from alignlab.feedback.store import Store, busy, check_person

SINGLE_KEYS = "u=up d=down 1-5=score r=rewrite s=skip z=undo q=quit"
PAIR_KEYS = "a=A better b=B better t=tie s=skip z=undo q=quit"
MODES = ("single", "pair")
MULTILINE = '"""'  # alone on a line, it starts and ends a rewrite typed over several lines
REWRITE_PROMPT = (f"rewrite (stored as typed or pasted; {MULTILINE} alone to type several lines, then {MULTILINE}"
                  " again; empty cancels)> ")


_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _visible(text: str) -> str:
    """Control characters (an ESC sequence, a carriage return), line separators and bidirectional overrides shown as
    escapes: printed raw they can rewrite the terminal's line or reorder it, hiding the answer being rated. Line
    breaks, tabs, other Unicode (emoji joiners, no-break spaces) stay."""
    import unicodedata

    def shown(c: str) -> str:
        hidden = c not in "\n\t" and (unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI)
        return repr(c)[1:-1] if hidden else c

    return "".join(map(shown, text))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in (_visible(text).split("\n") or [""]))


def rate(
    store: Store,
    rater: str,
    mode: str = "single",
    input_fn: Callable[[str], str] = input,
    output_fn: Callable[[str], Any] = print,
    round: int | None = None,
    waiting_fn: Callable[[], list[str]] | None = None,
) -> dict[str, Any]:
    """Show unjudged items one at a time and record the rater's answers; returns a summary.

    Ends on ``q``, at end of input (EOF), or when nothing is left; Ctrl-C prints the summary and goes on up, and so
    does a database another process keeps locked (as one line: what was saved is in the summary).
    ``waiting_fn`` returns the lines already typed ahead (a paste), which join a rewrite instead of running as keys.
    """
    if mode not in MODES:
        raise AlignlabError(f"unknown rating mode '{mode}'", fix="use --mode single or --mode pair")
    check_person(rater)
    session = _Session(store, rater, mode == "single", input_fn, output_fn, round, waiting_fn)
    try:
        while session.stop not in ("eof", "quit"):
            todo = [it for it in session.pending() if session.key(it) not in session.skipped]
            if session.front is not None:  # just undone: show that item again first
                todo.sort(key=lambda it: session.key(it) != session.front)
                session.front = None
            if not todo:
                session.stop = "done"
                break
            session.ask_about(todo[0], len(todo))
    except KeyboardInterrupt:
        session.stop = "interrupted"
        session.summary(mode)
        raise
    except sqlite3.OperationalError as err:
        if not busy(err):
            raise
        session.stop = "busy"
        session.summary(mode)
        raise store.busy_error("the last key was not saved") from err
    if session.stop == "done" and not session.recorded and not session.undone and not session.skipped:
        output_fn(session.nothing_to_rate())
    return session.summary(mode)


def waiting_lines(wait_s: float = 0.05) -> list[str]:
    """The lines already waiting on a terminal's input (the rest of a paste): a person types a line at a time, a
    paste arrives at once. Nothing when stdin is not a terminal (a script's lines are keys)."""
    import select
    import sys

    if sys.stdin is None or not sys.stdin.isatty():
        return []
    lines: list[str] = []
    while select.select([sys.stdin], [], [], wait_s)[0]:
        try:
            lines.append(input())
        except (EOFError, RuntimeError):
            break
    return lines


def swapped(a_id: int, b_id: int) -> bool:
    """Whether a pair is shown B first: a hash of the two ids, so the slot says nothing of which model wrote which
    (id parity put one model in slot A for every prompt when two runs were sampled one after the other)."""
    import hashlib

    lo, hi = sorted((int(a_id), int(b_id)))
    return bool(hashlib.sha256(f"{lo}-{hi}".encode()).digest()[0] & 1)


class _Session:
    """One rater at the terminal: what is pending, what was recorded, skipped and undone, and why it ended."""

    def __init__(self, store: Store, rater: str, single: bool, input_fn, output_fn, round: int | None, waiting_fn=None):
        self.store, self.rater, self.single, self.round = store, rater, single, round
        self.waiting_fn = waiting_fn or (lambda: [])
        self.made: list[int] = []  # this session's judgements, newest last: what `z` undoes
        self.input_fn, self.output_fn = input_fn, output_fn
        self.kinds = ("thumb", "score", "rewrite") if single else ("pick",)
        self.keys = SINGLE_KEYS if single else PAIR_KEYS
        self.recorded: Counter[str] = Counter()
        self.skipped: set = set()
        self.undone, self.front, self.stop = 0, None, "running"
        self.raw = ""

    def pending(self) -> list[dict]:
        return self.store.pending_single(self.rater, self.round) if self.single else self.store.pending_pairs(self.rater, self.round)

    def key(self, item: dict) -> Any:
        return item["response_id"] if self.single else (item["a_id"], item["b_id"])

    def ask(self, prompt: str) -> str | None:
        try:
            return self.input_fn(prompt)
        except (EOFError, RuntimeError):  # RuntimeError: input() with stdin closed ("lost sys.stdin")
            return None

    def nothing_to_rate(self) -> str:
        """Why there is nothing to rate, and what to run."""
        where = f" in round {self.round}" if self.round is not None else ""
        if self.store.count_responses(self.round) == 0:
            return (f"no answers to rate{where}: sample some first (`alignlab sample --base`, or `--run runs/ID`"
                    + (f" --round {self.round}" if self.round is not None else "") + ")")
        if not self.single and not self.store.pending_pairs("\x00anyone", self.round):  # no pair at all, judged or not
            return (f"no pair of different answers to one prompt{where}: sample more answers per prompt "
                    "(`alignlab sample -n 2 ...`), or rate them one by one (--mode single)")
        return f"{self.rater} has judged every answer{where}"

    def show(self, item: dict, left: int) -> list[tuple]:
        """Print the item (a pair in a fixed pseudo-random order); returns [(label, response id, text)]."""
        out = self.output_fn
        if self.single:
            shown = [("RESPONSE", item["response_id"], item["response"])]
            out(f"--- {left} left | prompt {item['prompt_id']} | response {item['response_id']} | round {item['round']}")
        else:
            a, b = (item["a_id"], item["a"]), (item["b_id"], item["b"])
            if swapped(item["a_id"], item["b_id"]):
                a, b = b, a
            shown = [("A", *a), ("B", *b)]
            # no response ids: the later-sampled model has the higher id, which would tell the sources apart
            out(f"--- {left} left | prompt {item['prompt_id']} | round {item['round']}")
        out("PROMPT\n" + _indent(item["prompt"]))
        for label, rid, text in shown:
            out((f"{label} (#{rid})" if self.single else label) + "\n" + _indent(text))
        out(self.keys)
        return shown

    def ask_about(self, item: dict, left: int) -> None:
        """Show one item and read keys until one moves on (a judgement, skip, undo, quit or end of input)."""
        shown = self.show(item, left)
        while True:
            line = self.ask("> ")
            if line is None:
                self.stop = "eof"
                return
            k = line.strip().lower()
            if k == "q":
                self.stop = "quit"
                return
            if k == "s":
                self.skipped.add(self.key(item))
                return
            if k == "z":
                if self.undo():
                    return
                continue
            self.raw = line.strip()
            kind = self.judge(k, item, shown)
            if kind == "eof":
                self.stop = "eof"
                return
            if kind is None:
                continue
            if kind != "already":
                self.recorded[kind] += 1
            return

    def undo(self) -> bool:
        """Undo this session's latest judgement; with none yet, the rater's latest in the session's round (so `z`
        first thing after a restart still reaches the last one), never one in another round."""
        last = None
        while self.made and last is None:
            last = self.store.undo_judgement(self.made.pop(), self.rater, self.kinds)
        if last is None:
            last = self.store.undo_last(self.rater, self.kinds, round=self.round)
        if last is None:
            self.output_fn("nothing to undo")
            return False
        self.undone += 1
        self.front = last["response_id"] if self.single else tuple(sorted((last["response_id"], last["other_response_id"])))
        self.skipped.discard(self.front)
        what = last["kind"] if last["kind"] == "rewrite" else f"{last['kind']} {last['value']}"
        self.output_fn(f"undid judgement #{last['id']} ({what})")
        return True

    def judge(self, k: str, item: dict, shown: list[tuple]) -> str | None:
        """Record the judgement key ``k`` stands for; its kind, None to ask again, 'eof', or 'already' (this rater
        judged the item meanwhile, in another window or on the rating page)."""
        if self.single and k in ("u", "d"):
            return self.record(item, "thumb", shown, value=1 if k == "u" else -1)
        if self.single and k in ("1", "2", "3", "4", "5"):
            return self.record(item, "score", shown, value=int(k))
        if self.single and k == "r":
            text = self.rewrite()
            if text is None:
                return "eof"
            if not text.strip():
                self.output_fn("rewrite cancelled")
                return None
            return self.record(item, "rewrite", shown, rewrite_text=text)
        if not self.single and k in ("a", "b", "t"):
            return self.record(item, "pick", shown, value={"a": "a", "b": "b", "t": "tie"}[k])
        self.output_fn(f"unknown key '{self.raw}': {self.keys}")
        return None

    def rewrite(self) -> str | None:
        """The rewrite exactly as typed or pasted: no escapes, since a pasted line `print("a\\nb")  # C:\\new` looks
        like a typed one. Lines pasted together stay one rewrite; several lines by hand go between two lines of
        MULTILINE alone. None at end of input (nothing is stored)."""
        first = self.ask(REWRITE_PROMPT)
        if first is None:
            return None
        pasted = self.waiting_fn()
        if pasted or first.strip() != MULTILINE:
            return "\n".join([first, *pasted]).rstrip()
        lines: list[str] = []
        while (line := self.ask("... ")) is not None:
            if line.strip() == MULTILINE:
                return "\n".join(lines).rstrip()
            lines.append(line)
        return None

    def record(self, item: dict, kind: str, shown: list[tuple], value=None, rewrite_text: str | None = None) -> str:
        """Store one judgement unless this rater judged the item since it was shown (checked and written in one
        transaction, as the rating page does): two sessions of one rater would count it twice."""
        store = self.store
        with store.transaction():
            if store.judged(self.rater, shown[0][1], self.kinds, None if self.single else shown[1][1]):
                self.output_fn(f"{self.rater} already judged this (in another session); moving on")
                return "already"
            self.made.append(store.add_judgement(kind, shown[0][1], value, rater=self.rater, rewrite_text=rewrite_text,
                                                 other_response_id=None if self.single else shown[1][1]))
        return kind

    def summary(self, mode: str) -> dict[str, Any]:
        left = len(self.pending())
        summary = {
            "rater": self.rater,
            "mode": mode,
            "recorded": sum(self.recorded.values()),
            "by_kind": dict(sorted(self.recorded.items())),
            "undone": self.undone,
            "skipped": len(self.skipped),
            "left": left,
            "ended_by": self.stop,
        }
        kinds_text = ", ".join(f"{k} {n}" for k, n in summary["by_kind"].items())
        self.output_fn(
            f"{self.rater}: recorded {summary['recorded']} judgement(s)" + (f" ({kinds_text})" if kinds_text else "")
            + f", undid {self.undone}, skipped {len(self.skipped)}; {left} left to rate"
        )
        return summary

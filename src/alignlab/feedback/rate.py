"""Rating in a plain terminal: one keystroke-and-Enter per judgement, over input() and print().

Nothing here touches a tty directly, so a test (or a pipe) can drive it. Each judgement is committed
before the next item is shown; the next session starts with what this rater has not judged yet.
Items skipped with ``s`` come back in a later session, not in this one. In pair mode the two responses
are shown in a fixed but mixed order (by id parity), so the older response is not always "A".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from alignlab.errors import AlignlabError
from alignlab.feedback.store import Store

SINGLE_KEYS = "u=up d=down 1-5=score r=rewrite s=skip z=undo q=quit"
PAIR_KEYS = "a=A better b=B better t=tie s=skip z=undo q=quit"
MODES = ("single", "pair")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in (text.splitlines() or [""]))


def rate(
    store: Store,
    rater: str,
    mode: str = "single",
    input_fn: Callable[[str], str] = input,
    output_fn: Callable[[str], Any] = print,
    round: int | None = None,
) -> dict[str, Any]:
    """Show unjudged items one at a time and record the rater's answers; returns a summary.

    Ends on ``q``, at end of input (EOF), or when nothing is left.
    """
    if mode not in MODES:
        raise AlignlabError(f"unknown rating mode '{mode}'", fix="use --mode single or --mode pair")
    single = mode == "single"
    kinds = ("thumb", "score", "rewrite") if single else ("pick",)

    def pending() -> list[dict]:
        return store.pending_single(rater, round) if single else store.pending_pairs(rater, round)

    def key(item: dict) -> Any:
        return item["response_id"] if single else (item["a_id"], item["b_id"])

    def ask(prompt: str) -> str | None:
        try:
            return input_fn(prompt)
        except EOFError:
            return None

    recorded: Counter[str] = Counter()
    skipped: set = set()
    undone, front, stop = 0, None, "done"
    while True:
        todo = [it for it in pending() if key(it) not in skipped]
        if front is not None:  # just undone: show that item again first
            todo.sort(key=lambda it: key(it) != front)
            front = None
        if not todo:
            stop = "done"
            break
        item = todo[0]
        if single:
            shown = [("RESPONSE", item["response_id"], item["response"])]
            output_fn(f"--- {len(todo)} left | prompt {item['prompt_id']} | response {item['response_id']} | round {item['round']}")
        else:
            a, b = (item["a_id"], item["a"]), (item["b_id"], item["b"])
            if (item["a_id"] + item["b_id"]) % 2:
                a, b = b, a
            shown = [("A", *a), ("B", *b)]
            output_fn(f"--- {len(todo)} left | prompt {item['prompt_id']} | A={a[0]} B={b[0]} | round {item['round']}")
        output_fn("PROMPT\n" + _indent(item["prompt"]))
        for label, rid, text in shown:
            output_fn(f"{label} (#{rid})\n" + _indent(text))
        keys = SINGLE_KEYS if single else PAIR_KEYS
        output_fn(keys)

        while True:  # until a key that moves on
            line = ask("> ")
            if line is None:
                stop = "eof"
                break
            k = line.strip().lower()
            if k == "q":
                stop = "quit"
                break
            if k == "s":
                skipped.add(key(item))
                break
            if k == "z":
                last = store.undo_last(rater, kinds)
                if last is None:
                    output_fn("nothing to undo")
                    continue
                undone += 1
                front = last["response_id"] if single else tuple(sorted((last["response_id"], last["other_response_id"])))
                skipped.discard(front)
                what = last["kind"] if last["kind"] == "rewrite" else f"{last['kind']} {last['value']}"
                output_fn(f"undid judgement #{last['id']} ({what})")
                break
            if single and k in ("u", "d"):
                kind = "thumb"
                store.add_judgement("thumb", item["response_id"], 1 if k == "u" else -1, rater=rater)
            elif single and k in ("1", "2", "3", "4", "5"):
                kind = "score"
                store.add_judgement("score", item["response_id"], int(k), rater=rater)
            elif single and k == "r":
                text = ask("rewrite (one line, \\n for a line break; empty cancels)> ")
                if text is None:
                    stop = "eof"
                    break
                if not text.strip():
                    output_fn("rewrite cancelled")
                    continue
                text = text.replace("\\n", "\n")
                kind = "rewrite"
                store.add_judgement("rewrite", item["response_id"], rewrite_text=text, rater=rater)
            elif not single and k in ("a", "b", "t"):
                value = {"a": "a", "b": "b", "t": "tie"}[k]
                kind = "pick"
                store.add_judgement("pick", shown[0][1], value, other_response_id=shown[1][1], rater=rater)
            else:
                output_fn(f"unknown key '{line.strip()}': {keys}")
                continue
            recorded[kind] += 1
            break
        if stop in ("eof", "quit"):
            break

    left = len(pending())
    summary = {
        "rater": rater,
        "mode": mode,
        "recorded": sum(recorded.values()),
        "by_kind": dict(sorted(recorded.items())),
        "undone": undone,
        "skipped": len(skipped),
        "left": left,
        "ended_by": stop,
    }
    kinds_text = ", ".join(f"{k} {n}" for k, n in summary["by_kind"].items())
    output_fn(
        f"{rater}: recorded {summary['recorded']} judgement(s)" + (f" ({kinds_text})" if kinds_text else "")
        + f", undid {undone}, skipped {len(skipped)}; {left} left to rate"
    )
    return summary

"""Terminal rating: the loop driven as a function with scripted input, and `alignlab rate` as a real subprocess."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from alignlab.errors import AlignlabError
from alignlab.feedback.rate import rate
from alignlab.feedback.store import open_store


def _scripted(lines):
    """An input() stand-in that replays lines, then raises EOFError like a closed stdin."""
    pending = list(lines)

    def read(prompt=""):
        if not pending:
            raise EOFError
        return pending.pop(0)

    return read


def _run(store, keys, **kw):
    out: list[str] = []
    summary = rate(store, kw.pop("rater", "ann"), input_fn=_scripted(keys), output_fn=out.append, **kw)
    return summary, "\n".join(out)


def _judgements(db):
    with sqlite3.connect(db) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT kind, response_id, other_response_id, value, rewrite_text, rater, undone_at IS NOT NULL"
            " FROM judgements ORDER BY id")]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "feedback.db"
    with open_store(path) as s:
        p = s.add_prompt("Is water wet?")
        q = s.add_prompt("What is 2+2?")
        s.add_responses([
            {"prompt_id": p, "text": "Yes, shockingly."},             # 1
            {"prompt_id": p, "text": "Water makes things wet."},      # 2
            {"prompt_id": q, "text": "4, obviously."},                # 3
            {"prompt_id": q, "text": "Five."},                        # 4
        ])
    return path


def test_single_mode_records_each_key(db):
    with open_store(db) as store:
        summary, out = _run(store, ["u", "x", "4", "r", "Technically, water wets things.", "d", "q"])
    assert _judgements(db) == [
        ("thumb", 1, None, 1, None, "ann", 0),
        ("score", 2, None, 4, None, "ann", 0),
        ("rewrite", 3, None, None, "Technically, water wets things.", "ann", 0),
        ("thumb", 4, None, -1, None, "ann", 0),
    ]
    assert "unknown key 'x': u=up d=down" in out
    assert "PROMPT\n  Is water wet?\nRESPONSE (#1)\n  Yes, shockingly." in out
    assert summary["recorded"] == 4 and summary["by_kind"] == {"rewrite": 1, "score": 1, "thumb": 2}
    assert summary["left"] == 0 and summary["ended_by"] == "done"  # nothing left: "q" is never read


def test_resumes_where_the_rater_left_off(db):
    with open_store(db) as store:
        first, _ = _run(store, ["u", "2"])  # then EOF
        assert first["ended_by"] == "eof" and first["left"] == 2
        second, out = _run(store, ["d"])
        other, out_bob = _run(store, ["5"], rater="bob")  # another rater starts from the top
    assert "RESPONSE (#1)" not in out and "RESPONSE (#2)" not in out
    assert out.index("RESPONSE (#3)") < out.index("RESPONSE (#4)")
    assert "RESPONSE (#1)" in out_bob
    assert [(k, r, v, who) for k, r, _, v, _, who, _ in _judgements(db)] == [
        ("thumb", 1, 1, "ann"), ("score", 2, 2, "ann"), ("thumb", 3, -1, "ann"), ("score", 1, 5, "bob")
    ]
    assert second["left"] == 1 and "ann: recorded 1 judgement(s) (thumb 1), undid 0, skipped 0; 1 left to rate" in out


def test_undo_shows_the_item_again(db):
    with open_store(db) as store:
        summary, out = _run(store, ["u", "z", "d", "q"])
    assert _judgements(db) == [("thumb", 1, None, 1, None, "ann", 1), ("thumb", 1, None, -1, None, "ann", 0)]
    assert "undid judgement #1 (thumb 1)" in out
    assert out.count("RESPONSE (#1)") == 2
    assert summary["undone"] == 1


def test_undo_with_nothing_to_undo_and_skip(db):
    with open_store(db) as store:
        summary, out = _run(store, ["z", "s", "u", "q"])
        assert "nothing to undo" in out
        assert _judgements(db) == [("thumb", 2, None, 1, None, "ann", 0)]
        assert summary["skipped"] == 1 and summary["left"] == 3
        _, again = _run(store, ["q"])  # the skipped item comes back next session
    assert "RESPONSE (#1)" in again


def test_rewrite_cancel_and_eof_in_rewrite(db):
    with open_store(db) as store:  # the last rewrite hits EOF before its closing line: nothing is stored
        _, out = _run(store, ["r", "  ", "r", '"""', "line one", "", "line two", '"""', "r", '"""', "unfinished"])
    assert "rewrite cancelled" in out
    assert _judgements(db) == [("rewrite", 1, None, None, "line one\n\nline two", "ann", 0)]


def test_pair_mode_records_picks_against_what_was_shown(db):
    with open_store(db) as store:
        summary, out = _run(store, ["a", "b", "q"], mode="pair")
        assert store.pending_pairs("ann") == []
    shown = re.findall(r"\nA\n  (.*)\nB\n  (.*)\n", out)
    assert len(shown) == 2
    assert not re.search(r"A=\d|\(#\d", out)  # no response ids in pair mode: they tell the sources apart
    rows = _judgements(db)
    assert [(r[0], r[3]) for r in rows] == [("pick", "a"), ("pick", "b")]
    texts = dict(sqlite3.connect(db).execute("SELECT id, text FROM responses").fetchall())
    assert [(texts[r[1]], texts[r[2]]) for r in rows] == shown  # A is response_id, B is other_response_id
    assert summary["by_kind"] == {"pick": 2}


def test_pair_mode_tie_undo_and_nothing_left(db):
    with open_store(db) as store:
        _, out = _run(store, ["t", "z", "t", "t"], mode="pair")
        assert "undid judgement #1 (pick tie)" in out
        summary, out = _run(store, [], mode="pair")
    assert [(r[0], r[3], r[6]) for r in _judgements(db)] == [("pick", "tie", 1), ("pick", "tie", 0), ("pick", "tie", 0)]
    assert summary["recorded"] == 0 and summary["left"] == 0 and summary["ended_by"] == "done"


def test_unknown_mode(db):
    with open_store(db) as store, pytest.raises(AlignlabError, match="unknown rating mode 'triple'"):
        _run(store, [], mode="triple")


# --- the real command ------------------------------------------------------------------------------


def _cli(*args, stdin="", cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "alignlab", *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_rate_command_over_piped_stdin_and_resume(db):
    first = _cli("rate", "--db", str(db), "--rater", "zoe", stdin="u\nwat\n5\n")
    assert first.returncode == 0, first.stderr
    assert "unknown key 'wat'" in first.stdout
    assert "zoe: recorded 2 judgement(s) (score 1, thumb 1), undid 0, skipped 0; 2 left to rate" in first.stdout
    assert _judgements(db) == [("thumb", 1, None, 1, None, "zoe", 0), ("score", 2, None, 5, None, "zoe", 0)]

    second = _cli("rate", "--db", str(db), "--rater", "zoe", stdin="r\nFour. Obviously.\nq\n")
    assert second.returncode == 0, second.stderr
    assert "RESPONSE (#1)" not in second.stdout and "RESPONSE (#3)" in second.stdout
    assert _judgements(db)[-1] == ("rewrite", 3, None, None, "Four. Obviously.", "zoe", 0)

    pair = _cli("rate", "--db", str(db), "--rater", "zoe", "--mode", "pair", stdin="b\n")
    assert pair.returncode == 0, pair.stderr
    assert [r[0] for r in _judgements(db)] == ["thumb", "score", "rewrite", "pick"]


def test_rate_command_errors_are_one_line(tmp_path, db):
    missing = _cli("rate", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error: no feedback database at") and len(missing.stderr.strip().splitlines()) == 1
    bad = _cli("rate", "--db", str(db), "--mode", "triple")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: unknown rating mode 'triple' — use --mode single or --mode pair"
    ]


def test_which_answer_is_shown_first_does_not_follow_the_ids():
    """Two runs sampled one after the other give every prompt's pair ids (i, i + P): with the parity of their sum
    deciding, one model sat in slot A for every prompt. A hash of the ids mixes them."""
    from alignlab.feedback.rate import swapped

    for p in (3, 4):
        order = [swapped(i, i + p) for i in range(1, 41)]
        assert 10 <= sum(order) <= 30, (p, sum(order))
    assert swapped(5, 9) == swapped(9, 5)  # the same pair, the same order, whichever id is A in the store


def test_undo_stays_in_the_session_and_its_round(tmp_path):
    """`alignlab rate --round 2`, then `z` first thing: it undid ann's newest judgement anywhere (a round-1 one,
    never shown again under --round 2). Now: this session's own first, else ann's newest in round 2."""
    path = tmp_path / "feedback.db"
    with open_store(path) as s:
        p = s.add_prompt("Is water wet?")
        one, two, _ = s.add_responses([{"prompt_id": p, "text": "Yes.", "round": 1},
                                       {"prompt_id": p, "text": "Shockingly, yes.", "round": 2},
                                       {"prompt_id": p, "text": "Wet, yes.", "round": 2}])
        s.add_judgement("thumb", one, 1, rater="ann")
        summary, out = _run(s, ["z", "u", "z", "q"], round=2)
    assert "nothing to undo" in out and "undid judgement #2 (thumb 1)" in out
    assert _judgements(path) == [("thumb", one, None, 1, None, "ann", 0), ("thumb", two, None, 1, None, "ann", 1)]


def test_control_characters_in_an_answer_are_shown_not_obeyed(tmp_path):
    """An answer "Sydney, obviously.\x1b[2K\r  Canberra." wiped its own first line on a real terminal: the rater saw
    only "Canberra" and rated the stored wrong answer up."""
    with open_store(tmp_path / "feedback.db") as store:
        p = store.add_prompt("Capital of Australia?")
        store.add_responses([{"prompt_id": p, "text": "Sydney, obviously.\x1b[2K\r  Canberra. \u202eright\u202c 👨‍👩‍👧\u00a0ok"}])
        _, out = _run(store, ["q"])
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "Sydney, obviously.\\x1b[2K\\r  Canberra. \\u202eright\\u202c 👨‍👩‍👧\u00a0ok" in out  # emoji and no-break space as they are


def test_a_second_session_of_the_same_rater_cannot_judge_an_item_twice(db):
    """Two terminals of one rater (or the terminal and the rating page under one name) both showed response 1; the
    second key stored a second standing thumb, and the KTO export then dropped the answer as a label conflict."""
    with open_store(db) as first, open_store(db) as second:
        # the first session shows response 1 and waits; the second judges it meanwhile
        shown = [("RESPONSE", 1, "Yes, shockingly.")]
        from alignlab.feedback.rate import _Session

        waiting = _Session(first, "ann", True, _scripted([]), print, None)
        _run(second, ["u", "q"])
        assert waiting.judge("d", {"response_id": 1}, shown) == "already"
        assert waiting.judge("3", {"response_id": 1}, shown) == "already"
    assert _judgements(db) == [("thumb", 1, None, 1, None, "ann", 0)]
    with open_store(db) as store:  # a pick of the same pair in a second session likewise
        _run(store, ["a", "q"], mode="pair")
        late = _Session(store, "ann", False, _scripted([]), print, None)
        assert late.judge("b", {}, [("A", 2, "x"), ("B", 1, "y")]) == "already"
    assert [j[0] for j in _judgements(db)] == ["thumb", "pick"]


def test_lines_waiting_after_a_rewrite_join_it(db):
    """A rewrite pasted as several lines: only the first was stored, and the others ran as keys on the next answer
    (a pasted line 'u' judged an answer the rater never read)."""
    pasted = [["It was built as a compromise.", "", "u"]]
    with open_store(db) as store:
        summary, out = _run(store, ["r", "Canberra, obviously.", "q"], waiting_fn=lambda: pasted.pop() if pasted else [])
    assert _judgements(db) == [("rewrite", 1, None, None, "Canberra, obviously.\nIt was built as a compromise.\n\nu",
                                "ann", 0)]
    assert summary["recorded"] == 1 and "unknown key" not in out


def test_nothing_to_rate_says_what_to_run(tmp_path, db):
    with open_store(tmp_path / "empty.db") as store:
        _, out = _run(store, [])
    assert "no answers to rate: sample some first (`alignlab sample --base`" in out
    with open_store(db) as store:
        _, out = _run(store, [], round=7)
        assert "no answers to rate in round 7" in out and "--round 7" in out
        p = store.add_prompt("Lonely?")
        store.add_responses([{"prompt_id": p, "text": "Very.", "round": 3}])
        _, out = _run(store, [], mode="pair", round=3)
    assert "no pair of different answers to one prompt in round 3:" in out and "-n 2" in out
    with open_store(db) as store:  # pairs there are, all judged: that is what it says
        _run(store, ["a", "a", "q"], mode="pair")
        _, out = _run(store, [], mode="pair")
    assert "ann has judged every answer" in out


def test_ctrl_c_prints_the_summary_and_goes_on_up(db):
    def read(prompt=""):
        if read.calls:
            raise KeyboardInterrupt
        read.calls += 1
        return "u"

    read.calls = 0
    out: list[str] = []
    with open_store(db) as store, pytest.raises(KeyboardInterrupt):
        rate(store, "ann", input_fn=read, output_fn=out.append)
    assert "ann: recorded 1 judgement(s) (thumb 1), undid 0, skipped 0; 3 left to rate" in out[-1]


def test_input_without_stdin_ends_like_eof(db):
    def lost(prompt=""):
        raise RuntimeError("input(): lost sys.stdin")

    with open_store(db) as store:
        summary = rate(store, "ann", input_fn=lost, output_fn=lambda s: None)
    assert summary["ended_by"] == "eof"


def _pty_rate(db, script):
    """`alignlab rate` on a real pseudo-terminal: ``script`` is [(text to wait for, bytes to send)]; returns the
    output and the exit code."""
    import os
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "alignlab", "rate", "--db", str(db), "--rater", "pam"])
    out, deadline = b"", time.monotonic() + 60
    try:
        for wait_for, send in script:
            while wait_for.encode() not in out and time.monotonic() < deadline:
                if select.select([fd], [], [], 0.5)[0]:
                    try:
                        out += os.read(fd, 4096)
                    except OSError:
                        break
            assert wait_for.encode() in out, out.decode(errors="replace")[-2000:]
            out = out.replace(wait_for.encode(), b"<seen>", 1)
            # a person presses a key after the prompt shows, not within microseconds of it: a Ctrl-C that lands
            # between input()'s prompt and its read() only trips Python's flag, and the read then waits for a key
            # (a race in CPython's input(), hit once in the parallel suite: the child hung until killed)
            time.sleep(0.3)
            os.write(fd, send)
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
    finally:  # a child still waiting for a key after a failed step is killed: waiting for it stalled the whole run
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        if done[0] == 0:
            os.kill(pid, 9)
            done = os.waitpid(pid, 0)
        os.close(fd)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(done[1])


def test_a_paste_into_the_rewrite_prompt_on_a_terminal_is_one_rewrite(db):
    out, code = _pty_rate(db, [("> ", b"r\n"), ("empty cancels)> ", b"Canberra, obviously.\nIt was built as a compromise.\n"),
                               ("> ", b"q\n")])
    assert code == 0, out
    assert _judgements(db) == [("rewrite", 1, None, None, "Canberra, obviously.\nIt was built as a compromise.", "pam", 0)]
    assert "unknown key" not in out


def test_ctrl_c_on_a_terminal_says_so(db):
    out, code = _pty_rate(db, [("> ", b"u\n"), ("RESPONSE (#2)", b""), ("> ", b"\x03")])
    assert code == 130, out
    assert "pam: recorded 1 judgement(s) (thumb 1)" in out and "interrupted" in out


def test_a_rewrite_is_stored_as_typed_and_several_lines_go_between_markers(db):
    """`\\n` typed on one line became a line break, so a single pasted line `print("a\\nb")  # C:\\new\\table` (which
    no terminal tells from typing) was stored with line breaks in the code and the path. No escapes now: a line is
    stored as it came, pasted lines together likewise, and several lines by hand go between two lines of \"\"\"."""
    code = 'print("a\\nb")  # C:\\new\\table'
    pasted = [[], [code], []]
    with open_store(db) as store:
        _run(store, ["r", code, "r", "Like this:", "r", '"""', "Yes.", code, '  """ ', "q"],
             waiting_fn=lambda: pasted.pop(0) if pasted else [])
    assert [j[4] for j in _judgements(db)] == [code, f"Like this:\n{code}", f"Yes.\n{code}"]


def test_a_database_locked_mid_session_prints_the_summary_and_one_line(db, monkeypatch):
    """Another process holding the write lock past the wait killed `alignlab rate` with "error: OperationalError:
    database is locked", without the summary of what had been saved."""
    from alignlab.feedback import store as store_module

    monkeypatch.setattr(store_module, "BUSY_MS", 200)  # the wait for a lock, 30 s by default
    holder = sqlite3.connect(db, isolation_level=None)
    keys = ["u", "d"]

    def read(prompt=""):
        if len(keys) == 1:
            holder.execute("BEGIN IMMEDIATE")  # another process starts writing while the rater reads answer 2
        return keys.pop(0)

    out: list[str] = []
    try:
        with open_store(db) as store, pytest.raises(AlignlabError) as err:
            rate(store, "ann", input_fn=read, output_fn=out.append)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(err.value) == (f"{db} is busy: another alignlab process is writing to it; the last key was not saved"
                              " — try again when it is done")
    assert "ann: recorded 1 judgement(s) (thumb 1), undid 0, skipped 0; 3 left to rate" in out[-1]
    assert _judgements(db) == [("thumb", 1, None, 1, None, "ann", 0)]


@pytest.mark.parametrize("name", ["judge:gpt-4o", "reward:vowels", " Scorecard", "gold:ref"])
def test_a_person_cannot_rate_under_an_automatic_raters_name(db, name):
    """`printf 'u\nq\n' | alignlab rate --rater judge:gpt-4o` stored a person's thumb as the judge's, though a
    judgement under a judge's name is read as the judge's."""
    with open_store(db) as store, pytest.raises(AlignlabError) as err:
        _run(store, ["u", "q"], rater=name)
    assert str(err.value).startswith(f"the rater name '{name.strip()}' belongs to an automatic rater")
    assert str(err.value).endswith("— rate under your own name (--rater NAME)")
    assert _judgements(db) == []

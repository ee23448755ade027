"""Kill a writer with SIGKILL at random moments: every judgement it acknowledged must survive, and the file stays sound."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from alignlab.feedback.store import MIGRATIONS

# Acknowledges a judgement (prints its id) only after add_judgement returns, like an interface would.
WRITER = r"""
import sys
from alignlab.feedback.store import open_store

store = open_store(sys.argv[1])
pid = store.add_prompt("crash prompt")
rid = store.find_response(pid, "crash response") or store.add_response(pid, "crash response")
limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
i = 0
while limit is None or i < limit:
    if i % 3 == 0:
        jid = store.add_judgement("thumb", rid, 1 if i % 2 else -1, rater="crash")
    elif i % 3 == 1:
        jid = store.add_judgement("score", rid, 1 + i % 5, rater="crash")
    else:  # a bigger row, so the WAL grows and checkpoints happen between kills
        jid = store.add_judgement("rewrite", rid, rewrite_text="x" * 3000 + str(i), rater="crash")
    print(jid, flush=True)
    i += 1
"""

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def _writer(db, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_never_loses_an_acknowledged_judgement(tmp_path):
    db = tmp_path / "feedback.db"  # created by the first writer, so early kills can land mid-migration
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    acked: set[int] = set()
    kills = 15
    for run in range(kills):
        proc = _writer(db)
        if run < 3:
            time.sleep(rng.uniform(0.0, 0.3))  # anywhere: start-up, open, migration, first writes
        else:
            first = proc.stdout.readline()  # wait until it writes, then kill mid-stream
            assert first.endswith("\n"), proc.stderr.read()
            acked.add(int(first))
            time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # read through the same text buffers readline() used: communicate() reads the raw pipe and would lose the
        # bytes readline() had already buffered, tearing a line ("12\n3" buffered, "\n4\n" read raw)
        out, err = proc.stdout.read(), proc.stderr.read()
        assert proc.returncode == -signal.SIGKILL, f"writer exited on its own (seed {seed}): {err}"
        assert "Traceback" not in err, f"seed {seed}: {err}"
        acked |= {int(line) for line in out.splitlines(keepends=True) if line.endswith("\n")}

    assert len(acked) > 50, f"too few writes to mean anything (seed {seed})"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    stored = {r[0] for r in conn.execute("SELECT id FROM judgements")}
    assert acked <= stored, f"lost acknowledged judgements {sorted(acked - stored)[:10]} (seed {seed})"
    assert len(stored - acked) <= kills  # at most the one committed but not yet printed, per kill
    assert [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY name")] == [m.__name__ for m in MIGRATIONS]
    assert conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 1
    conn.close()


def test_two_writers_at_once_wait_for_each_other(tmp_path):
    db = tmp_path / "feedback.db"
    _writer(db, 1).communicate(timeout=30)  # migrate and seed first
    procs = [_writer(db, 150) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    ids = [int(x) for out, _ in outs for x in out.split()]
    assert len(ids) == len(set(ids)) == 300
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 301

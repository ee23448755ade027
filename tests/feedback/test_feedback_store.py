"""The feedback store: migrations (blank, each older schema, newer refused), validation, undo, pending, stats."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from alignlab.errors import AlignlabError
from alignlab.feedback.store import MIGRATIONS, Store, open_store


def _applied(path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name, applied_at FROM migrations ORDER BY name").fetchall()


def _tables(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}


def _seed(store: Store) -> tuple[int, int, int]:
    pid = store.add_prompt("Explain recursion.", source="test", split="train")
    r1 = store.add_response(pid, "See: recursion.", model="tiny", run="runs/r0", round=0, sampler={"temperature": 0.9})
    r2 = store.add_response(pid, "A function that calls itself.", model="tiny", round=0)
    return pid, r1, r2


def test_blank_db_is_migrated_once(tmp_path):
    path = tmp_path / "feedback.db"
    with open_store(path) as store:
        assert store.schema_version() == len(MIGRATIONS)
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    first = _applied(path)
    assert [n for n, _ in first] == [m.__name__ for m in MIGRATIONS]
    assert {"prompts", "responses", "judgements", "migrations", "judgements_rater"} <= _tables(path)
    with open_store(path):
        pass
    assert _applied(path) == first  # not re-applied, timestamps untouched


def _open_at(args: tuple[str, float]) -> str | None:
    path, start = args
    while time.time() < start:  # all processes reach open_store together
        pass
    try:
        with open_store(path) as store:
            store.add_prompt(f"from {os.getpid()}", source="test", split="train")
    except AlignlabError as err:
        return str(err)
    return None


def test_processes_creating_the_same_file_together_all_succeed(tmp_path):
    """Four processes that create one new feedback file at the same instant (a loop and a rater started together):
    the switch to WAL may answer "locked" without waiting; every process must still open it (before the fix,
    35 of 60 such rounds had a failure)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(4) as pool:
        for i in range(15):
            path = str(tmp_path / f"f{i}.db")
            errors = [e for e in pool.map(_open_at, [(path, time.time() + 0.05)] * 4) if e]
            assert errors == []
            with sqlite3.connect(path) as conn:
                assert conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 4
            assert [n for n, _ in _applied(path)] == [m.__name__ for m in MIGRATIONS]


@pytest.mark.parametrize("k", range(1, len(MIGRATIONS)))
def test_older_schema_is_brought_up_to_date(tmp_path, k):
    path = tmp_path / "feedback.db"
    with Store(path, migrations=MIGRATIONS[:k]) as old:
        assert old.schema_version() == k
        pid, r1, r2 = _seed(old)
        jid = old.add_judgement("pick", r1, "b", other_response_id=r2, rater="ann")
    before = _applied(path)
    assert len(before) == k
    with open_store(path) as store:
        assert store.schema_version() == len(MIGRATIONS)
        rows = store.judgements()
        assert [(r["id"], r["kind"], r["value"], r["prompt"]) for r in rows] == [(jid, "pick", "b", "Explain recursion.")]
        assert store.response(r1)["sampler"] == '{"temperature": 0.9}'
        store.add_judgement("thumb", r2, 1, rater="ann")
    after = _applied(path)
    assert after[:k] == before
    assert [n for n, _ in after] == [m.__name__ for m in MIGRATIONS]
    assert "judgements_rater" in _tables(path)


def m999_future(conn):
    conn.execute("CREATE TABLE future (x)")


def test_newer_schema_is_refused_untouched(tmp_path):
    path = tmp_path / "feedback.db"
    with Store(path, migrations=[*MIGRATIONS, m999_future]) as newer:
        _seed(newer)
    before, listing = path.read_bytes(), sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(AlignlabError) as err:
        open_store(path)
    msg = str(err.value)
    assert msg == f"feedback.db was written by a newer alignlab (schema 999 > {len(MIGRATIONS)}) — upgrade alignlab"
    assert "\n" not in msg
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_not_a_database(tmp_path):
    path = tmp_path / "feedback.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AlignlabError, match="not a readable feedback database"):
        open_store(path)
    assert path.read_bytes() == b"this is not sqlite" * 100


def test_another_programs_database_is_refused_untouched(tmp_path):
    """`alignlab feedback stats --db notes.db` switched someone's SQLite file to WAL and added five tables to it."""
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(AlignlabError) as err:
        open_store(path, create=False)
    assert str(err.value) == (f"{path} is another program's SQLite database (tables: notes), not a feedback database; "
                              "left untouched — pass another --db path")
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_a_held_out_prompt_stays_held_out(tmp_path):
    """`alignlab sample` marks its prompts 'train': sampling a held-out prompt moved it back, and export trained on
    the scorecard's prompt."""
    with open_store(tmp_path / "feedback.db") as s:
        pid = s.add_prompt("Capital of Peru?", split="heldout")
        assert s.add_prompts([{"text": "Capital of Peru?", "split": "train"}, {"text": "Fresh?", "split": "train"}])[0] == pid
        s.add_prompt("Fresh?", split="heldout")  # a train prompt can still be marked held out (compare does)
        splits = dict(s.conn.execute("SELECT text, split FROM prompts").fetchall())
    assert splits == {"Capital of Peru?": "heldout", "Fresh?": "heldout"}


def test_pairs_to_rate_do_not_lead_with_the_first_sampled_model(tmp_path):
    """Pending pairs came in id order: each prompt's pairs opened with the first-sampled model's answer, which came
    back in the next pair too, so a rater could tell the models apart."""
    with open_store(tmp_path / "feedback.db") as s:
        firsts = []
        for k in range(20):
            pid = s.add_prompt(f"Question {k}?")
            base = s.add_responses([{"prompt_id": pid, "text": f"base {k} {i}", "run": None} for i in range(2)])
            s.add_responses([{"prompt_id": pid, "text": f"run {k} {i}", "run": "r1"} for i in range(2)])
            pairs = [p for p in s.pending_pairs("ann") if p["prompt_id"] == pid]
            assert len(pairs) == 6
            firsts.append(pairs[0]["a_id"] in base and pairs[0]["b_id"] in base)
        assert [p["prompt_id"] for p in s.pending_pairs("ann")] == sorted(p["prompt_id"] for p in s.pending_pairs("ann"))
    assert sum(firsts) < 15  # by id, every prompt opened with the base-vs-base pair (20 of 20)


def test_missing_db_only_created_when_asked(tmp_path):
    with pytest.raises(AlignlabError, match="no feedback database at"):
        open_store(tmp_path / "nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()
    open_store(tmp_path / "sub" / "new.db").close()
    assert (tmp_path / "sub" / "new.db").is_file()


def test_writes_are_committed_before_return(tmp_path):
    path = tmp_path / "feedback.db"
    store = open_store(path)
    _, r1, _ = _seed(store)
    jid = store.add_judgement("score", r1, 4, rater="ann")
    other = sqlite3.connect(path)  # a second connection sees it while the store is still open
    assert other.execute("SELECT kind, value, rater FROM judgements WHERE id = ?", (jid,)).fetchone() == ("score", 4, "ann")
    other.close()
    store.close()


def test_prompts_are_unique_and_reused(tmp_path):
    with open_store(tmp_path / "f.db") as store:
        ids = store.add_prompts(["a", {"text": "b", "split": "eval"}, "a"])
        assert ids[0] == ids[2] != ids[1]
        assert store.add_prompt("b") == ids[1]
        assert store.conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 2
        with pytest.raises(AlignlabError, match="no prompt with id 42"):
            store.add_response(42, "x")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="thumb", response_id=999, value=1), "no response with id 999"),
        (dict(kind="like", value=1), "unknown judgement kind 'like'"),
        (dict(kind="thumb", value=0), "a thumb is \\+1 or -1"),
        (dict(kind="thumb", value=True), "a thumb is \\+1 or -1"),
        (dict(kind="score", value=6), "a score is an integer 1-5"),
        (dict(kind="score", value=3.5), "a score is an integer 1-5"),
        (dict(kind="pick", value="c", other=True), "a pick is 'a', 'b' or 'tie'"),
        (dict(kind="pick", value="a"), "a pick needs other_response_id"),
        (dict(kind="pick", value="a", other_response_id=999), "no response with id 999"),
        (dict(kind="pick", value="a", same=True), "two different responses to the same prompt"),
        (dict(kind="pick", value="a", other_prompt=True), "two different responses to the same prompt"),
        (dict(kind="rewrite"), "a rewrite needs non-empty rewrite_text"),
        (dict(kind="rewrite", rewrite_text="  "), "a rewrite needs non-empty rewrite_text"),
        (dict(kind="thumb", value=1, rater=""), "needs a rater"),
        (dict(kind="score", value=3, rewrite_text="x"), "takes no rewrite_text"),
    ],
)
def test_invalid_judgements_are_refused(tmp_path, kwargs, message):
    with open_store(tmp_path / "f.db") as store:
        pid, r1, r2 = _seed(store)
        r_other = store.add_response(store.add_prompt("other prompt"), "other")
        kwargs = dict(kwargs)
        kwargs.setdefault("response_id", r1)
        kwargs.setdefault("rater", "ann")
        if kwargs.pop("other", False):
            kwargs["other_response_id"] = r2
        if kwargs.pop("same", False):
            kwargs["other_response_id"] = r1
        if kwargs.pop("other_prompt", False):
            kwargs["other_response_id"] = r_other
        with pytest.raises(AlignlabError, match=message) as err:
            store.add_judgement(**kwargs)
        assert "\n" not in str(err.value)
        assert store.conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 0


def test_values_keep_their_types_and_round_defaults_to_the_response(tmp_path):
    with open_store(tmp_path / "f.db") as store:
        pid = store.add_prompt("p")
        r1, r2 = store.add_responses([{"prompt_id": pid, "text": "x", "round": 2}, {"prompt_id": pid, "text": "y", "round": 2}])
        store.add_judgement("thumb", r1, -1, rater="ann")
        store.add_judgement("pick", r1, "tie", other_response_id=r2, rater="ann", round=3)
        store.add_judgement("rewrite", r2, rewrite_text="better", rater="judge:gpt")
        rows = store.conn.execute("SELECT kind, value, typeof(value), round, rewrite_text FROM judgements ORDER BY id").fetchall()
        assert [tuple(r) for r in rows] == [
            ("thumb", -1, "integer", 2, None),
            ("pick", "tie", "text", 3, None),
            ("rewrite", None, "null", 2, "better"),
        ]


def test_add_judgements_is_all_or_nothing(tmp_path):
    with open_store(tmp_path / "f.db") as store:
        _, r1, r2 = _seed(store)
        with pytest.raises(AlignlabError, match="no response with id 77"):
            store.add_judgements([
                {"kind": "thumb", "response_id": r1, "value": 1, "rater": "ann"},
                {"kind": "thumb", "response_id": 77, "value": 1, "rater": "ann"},
            ])
        assert store.conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 0
        assert len(store.add_judgements([{"kind": "score", "response_id": r2, "value": 5, "rater": "ann"}])) == 1


def test_undo_and_pending(tmp_path):
    with open_store(tmp_path / "f.db") as store:
        pid, r1, r2 = _seed(store)
        r3 = store.add_response(pid, "A function that calls itself.")  # same text as r2: never paired with it
        assert [p["response_id"] for p in store.pending_single("ann")] == [r1, r2, r3]
        assert [(p["a_id"], p["b_id"]) for p in store.pending_pairs("ann")] == [(r1, r2), (r1, r3)]

        j1 = store.add_judgement("thumb", r1, 1, rater="ann")
        j2 = store.add_judgement("pick", r3, "a", other_response_id=r1, rater="ann")
        store.add_judgement("score", r2, 2, rater="bob")
        assert [p["response_id"] for p in store.pending_single("ann")] == [r2, r3]
        assert [p["response_id"] for p in store.pending_single("bob")] == [r1, r3]
        assert [(p["a_id"], p["b_id"]) for p in store.pending_pairs("ann")] == [(r1, r2)]  # (r1, r3) picked as (r3, r1)
        assert len(store.pending_pairs("bob")) == 2

        assert store.undo_last("ann", kinds=("thumb",))["id"] == j1
        assert [p["response_id"] for p in store.pending_single("ann")] == [r1, r2, r3]
        assert store.undo_last("ann")["id"] == j2
        assert len(store.pending_pairs("ann")) == 2
        assert store.undo_last("ann") is None
        undone = store.conn.execute("SELECT id FROM judgements WHERE undone_at IS NOT NULL ORDER BY id").fetchall()
        assert [r[0] for r in undone] == [j1, j2]
        assert [j["rater"] for j in store.judgements()] == ["bob"]
        assert len(store.judgements(include_undone=True)) == 3


def test_stats_and_rounds(tmp_path):
    with open_store(tmp_path / "f.db") as store:
        pid = store.add_prompt("p")
        q = store.add_prompt("q")
        a, b = store.add_responses([{"prompt_id": pid, "text": "a"}, {"prompt_id": pid, "text": "b"}])
        c = store.add_response(q, "c", round=1)
        store.add_judgement("score", a, 5, rater="ann")
        store.add_judgement("score", b, 2, rater="bob")
        store.add_judgement("thumb", a, 1, rater="ann")
        store.add_judgement("thumb", b, -1, rater="ann")
        store.add_judgement("thumb", b, -1, rater="ann")
        store.undo_last("ann")
        store.add_judgement("thumb", c, 1, rater="judge:qwen")
        assert store.rounds() == [0, 1]
        r0, r1 = store.stats()
        assert r0 == {
            "round": 0, "prompts": 1, "responses": 2, "judgements": 4,
            "by_kind": {"score": 2, "thumb": 2}, "by_rater": {"ann": 3, "bob": 1},
            "thumbs_up": 1, "thumbs_down": 1, "mean_score": 3.5, "undone": 1,
        }
        assert r1["judgements"] == 1 and r1["by_rater"] == {"judge:qwen": 1} and r1["mean_score"] is None
        assert store.stats(round=1) == [r1]


def test_pending_pairs_finds_each_pair_through_the_pair_index(tmp_path):
    """Three rounds of 269 prompts x 4 answers: pending_pairs took 0.4 s, then 5.5 s, then 21 s, since each candidate
    pair scanned all of the rater's judgements (judgements_rater). Each pair is now one lookup of (rater, kind,
    response_id, other_response_id), in either order."""
    with open_store(tmp_path / "feedback.db") as s:
        _, r1, r2 = _seed(s)
        s.add_judgement("pick", r1, "a", other_response_id=r2, rater="ann")
        sql: list[str] = []
        s.conn.set_trace_callback(sql.append)  # the query as it ran, parameters filled in
        s.pending_pairs("ann", round=0, revealed=False)
        s.conn.set_trace_callback(None)
        (query,) = [q for q in sql if "FROM responses r1" in q]
        plan = [r[3] for r in s.conn.execute("EXPLAIN QUERY PLAN " + query)]
    lookups = [step for step in plan if " j " in f" {step} "]
    assert len(lookups) == 2, plan
    assert all("USING INDEX judgements_pair (rater=? AND kind=? AND response_id=? AND other_response_id=?)" in step
               for step in lookups), plan


def test_a_reader_opens_while_another_process_writes_and_a_writer_says_busy(tmp_path, monkeypatch):
    """Every open took the write lock: with another process writing for longer than the wait, `feedback export`
    failed with "X is not a readable feedback database (database is locked)"."""
    from alignlab.feedback import store as store_module

    monkeypatch.setattr(store_module, "BUSY_MS", 200)  # the wait for a lock, 30 s by default
    path, older = tmp_path / "feedback.db", tmp_path / "older.db"
    with open_store(path) as s:
        _, r1, r2 = _seed(s)
    Store(older, migrations=MIGRATIONS[:2]).close()  # needs a migration: a write
    holders = [sqlite3.connect(p, isolation_level=None) for p in (path, older)]
    for holder in holders:
        holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
    try:
        with open_store(path, create=False) as s:
            assert [p["response_id"] for p in s.pending_single("ann")] == [r1, r2]
            with pytest.raises(sqlite3.OperationalError, match="locked"):  # the rating page answers 503 on it
                s.add_judgement("thumb", r1, 1, rater="ann")
        with pytest.raises(AlignlabError) as err:
            open_store(older)
        assert str(err.value) == f"{older} is busy: another alignlab process is writing to it — try again when it is done"
    finally:
        for holder in holders:
            holder.execute("ROLLBACK")
            holder.close()
    with open_store(older) as s:  # once the other process is done
        assert s.schema_version() == len(MIGRATIONS)


def _damage(path, how: str) -> None:
    with sqlite3.connect(path) as conn:
        if how == "dropped table":
            conn.execute("DROP TABLE judgements")
        elif how == "unknown migration":
            conn.execute("INSERT INTO migrations (name, applied_at) VALUES ('init', 'x')")
        else:  # a corrupted page: the judgements table's root page overwritten
            root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'judgements'").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    if how == "corrupted page":
        with open(path, "r+b") as f:
            f.seek((root - 1) * size)
            f.write(b"\xff" * size)


ADVICE = "— restore it from a backup; `sqlite3 {quoted} .dump > feedback.sql` shows what is still readable"


@pytest.mark.parametrize("how, message", [
    ("dropped table", "{path} is damaged (no table judgements) " + ADVICE),
    ("corrupted page", "{path} is damaged (database disk image is malformed) " + ADVICE),
    ("unknown migration", "feedback.db records a migration unknown to this alignlab (schema {n}): 'init'; written by a "
                          "newer alignlab, or damaged — upgrade alignlab, or restore a backup"),
])
def test_a_damaged_database_is_one_line_naming_the_file(tmp_path, how, message):
    """A dropped table, a corrupted page or a migrations row 'init' gave "OperationalError: no such table",
    "DatabaseError: database disk image is malformed" and "ValueError: invalid literal for int()". The advice was
    `sqlite3 PATH .recover | sqlite3 recovered.db`, with PATH unquoted: with SQLite 3.40.1 it printed "SQL logic
    error" and left an empty database; the advice given now is run here, from a directory whose name needs quoting."""
    import shlex
    import shutil
    import subprocess

    path = tmp_path / "it's mine" / "feedback.db"
    with open_store(path) as s:
        _, r1, _ = _seed(s)
        s.add_judgement("thumb", r1, 1, rater="ann")
    _damage(path, how)
    before = path.read_bytes()
    with pytest.raises(AlignlabError) as err:
        with open_store(path, create=False) as s:
            s.judgements()
    expected = message.format(path=path, quoted=shlex.quote(str(path)), n=len(MIGRATIONS))
    assert str(err.value) == expected and "\n" not in str(err.value)
    assert path.read_bytes() == before
    if how != "unknown migration" and shutil.which("sqlite3"):  # what the advice says it does, it does
        command = str(err.value).split("`")[1]
        subprocess.run(command, shell=True, cwd=tmp_path, check=True, capture_output=True, timeout=30)
        assert "INSERT INTO prompts VALUES(1,'Explain recursion.'" in (tmp_path / "feedback.sql").read_text()
        assert path.read_bytes() == before


def test_only_damage_is_called_damage(tmp_path):
    """Every SQLite error but busy and a broken constraint read "PATH is damaged (...)": a closed store ("Cannot operate
    on a closed database."), a bad parameter ("Error binding parameter 1"), a read-only file. A table dropped by
    another connection while the store is open is damage, and says so without the path to the rating page."""
    from alignlab.feedback.store import StoreFileError

    path = tmp_path / "feedback.db"
    s = open_store(path)
    _seed(s)
    with pytest.raises(sqlite3.ProgrammingError, match="^Error binding parameter 1"):
        s.response([1])
    s.conn.execute("PRAGMA query_only = ON")  # SQLite refuses writes as it does on a read-only file
    with pytest.raises(StoreFileError) as err:
        s.add_prompt("Another?")
    assert str(err.value) == (f"cannot write {path}: it is read-only (attempt to write a readonly database) — make "
                              "the file and its directory writable, or pass another --db")
    s.conn.execute("PRAGMA query_only = OFF")
    with sqlite3.connect(path) as other:
        other.execute("DROP TABLE rounds")
    with pytest.raises(StoreFileError) as err:
        s.rounds_table()
    assert str(err.value).startswith(f"{path} is damaged (no such table: rounds) — restore it from a backup")
    assert err.value.public == ("the feedback database (feedback.db) is damaged (no such table: rounds); restore it "
                                "from a backup") and err.value.code == "database_damaged"
    s.close()
    with pytest.raises(sqlite3.ProgrammingError, match="^Cannot operate on a closed database"):
        s.stats()

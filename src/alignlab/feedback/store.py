"""The feedback store: one SQLite file (``<project>/feedback.db``) that this module alone opens.

Prompts, the responses sampled for them, and the judgements people (or judges, reward functions,
classifiers) made about those responses. The file migrates itself once, when opened (numbered
migrations, recorded in a ``migrations`` table); a file written by a newer alignlab is refused
untouched.

Durability: WAL journal, ``synchronous=FULL``, and every write is its own committed transaction
before the method returns, so an interface that acknowledges after the call never loses an
acknowledged judgement, even if the process is killed the next instant.

Judgement values (``value`` column):
  thumb   +1 / -1
  pick    'a' | 'b' | 'tie': response_id (shown as A) versus other_response_id (shown as B)
  score   1..5
  rewrite None; the better text is in ``rewrite_text`` and response_id is the original
Undo marks a judgement ``undone_at`` instead of deleting it, so the history stays readable.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alignlab import fsutil
from alignlab.errors import AlignlabError

DB_NAME = "feedback.db"
BUSY_MS = 30_000  # how long a write waits for another process's lock before it fails

KINDS = ("thumb", "pick", "score", "rewrite")
PICKS = ("a", "b", "tie")
# the automatic raters' names (``judge:<model>``, ``reward:<name>``...): a judgement stored under one is read as that
# rater's, so a person cannot rate under them (the rating page answers 403 for the same names)
AUTOMATIC_RATERS = ("judge", "reward", "classifier", "contrast", "scorecard", "gold")


# --- migrations: append only; never edit one that has shipped -------------------------------------


def m001_initial(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE prompts (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL UNIQUE,
            source TEXT,
            split TEXT,
            created_at TEXT NOT NULL)"""
    )
    conn.execute(
        """CREATE TABLE responses (
            id INTEGER PRIMARY KEY,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            text TEXT NOT NULL,
            model TEXT,
            run TEXT,
            round INTEGER NOT NULL DEFAULT 0,
            sampler TEXT,
            created_at TEXT NOT NULL)"""
    )
    # `value` has no declared type, so SQLite keeps 1 as an integer and 'a' as text.
    conn.execute(
        """CREATE TABLE judgements (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('thumb', 'pick', 'score', 'rewrite')),
            response_id INTEGER NOT NULL REFERENCES responses(id),
            other_response_id INTEGER REFERENCES responses(id),
            value,
            rewrite_text TEXT,
            rater TEXT NOT NULL,
            round INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            undone_at TEXT,
            CHECK ((kind = 'thumb' AND value IN (1, -1))
                OR (kind = 'pick' AND value IN ('a', 'b', 'tie') AND other_response_id IS NOT NULL)
                OR (kind = 'score' AND value IN (1, 2, 3, 4, 5))
                OR (kind = 'rewrite' AND rewrite_text IS NOT NULL)))"""
    )


def m002_indexes(conn: sqlite3.Connection) -> None:
    """Indexes for the rating loop (pending items per rater) and per-round stats."""
    conn.execute("CREATE INDEX responses_prompt ON responses(prompt_id)")
    conn.execute("CREATE INDEX responses_round ON responses(round)")
    conn.execute("CREATE INDEX judgements_rater ON judgements(rater, undone_at)")
    conn.execute("CREATE INDEX judgements_response ON judgements(response_id)")
    conn.execute("CREATE INDEX judgements_round ON judgements(round)")


def m003_rounds(conn: sqlite3.Connection) -> None:
    """One row per round of `alignlab loop` (written through Store.update_round): what was collected and trained,
    and the new adapter's scorecard on held-out prompts. ``details`` holds the whole scorecard as JSON."""
    conn.execute(
        """CREATE TABLE rounds (
            round INTEGER PRIMARY KEY,
            status TEXT NOT NULL,
            method TEXT,
            rater TEXT,
            eval_rater TEXT,
            prompts INTEGER,
            responses INTEGER,
            judgements INTEGER,
            pairs INTEGER,
            data TEXT,
            init_run TEXT,
            run_dir TEXT,
            persona_score REAL,
            base_persona_score REAL,
            length REAL,
            distinct_1 REAL,
            distinct_2 REAL,
            kl REAL,
            accuracy REAL,
            details TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT)"""
    )


ROUND_COLUMNS = ("round", "status", "method", "rater", "eval_rater", "prompts", "responses", "judgements", "pairs", "data",
                 "init_run", "run_dir", "persona_score", "base_persona_score", "length", "distinct_1", "distinct_2", "kl",
                 "accuracy", "details", "started_at", "finished_at")


def m004_pair_index(conn: sqlite3.Connection) -> None:
    """Whether a rater picked between two answers, found by the pair itself: through judgements_rater every candidate
    pair scanned all of the rater's judgements, and pending_pairs took 20 s after three rounds."""
    conn.execute("CREATE INDEX judgements_pair ON judgements(rater, kind, response_id, other_response_id)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial, m002_indexes, m003_rounds, m004_pair_index]
TABLES = {"m001_initial": ("prompts", "responses", "judgements"), "m003_rounds": ("rounds",)}  # what each one makes


def _number(name: str) -> int | None:
    """'m002_indexes' -> 2; None for a name no alignlab wrote."""
    match = re.fullmatch(r"m(\d+)_\w+", str(name))
    return int(match[1]) if match else None


def busy(err: BaseException) -> bool:
    """Whether a SQLite error means another connection holds the lock (not damage: trying again later works)."""
    return isinstance(err, sqlite3.OperationalError) and ("locked" in str(err) or "busy" in str(err))


# what SQLite says of a file whose pages or schema are gone (SQLITE_CORRUPT, SQLITE_NOTADB, a dropped table or column);
# a closed connection, a bad parameter (ProgrammingError) or another OperationalError is no damage and is not called so
DAMAGE = ("malformed", "not a database", "no such table", "no such column")


def damage(err: BaseException) -> bool:
    """Whether a SQLite error means the file itself is damaged."""
    return (isinstance(err, sqlite3.DatabaseError) and not isinstance(err, (sqlite3.ProgrammingError,
                                                                             sqlite3.IntegrityError))
            and any(word in str(err) for word in DAMAGE))


class StoreFileError(AlignlabError):
    """The database file failed (damaged, read-only, a full disk, an I/O error): the line names the path, for the
    terminal; ``public`` says the same with the file's name only, for the rating page, which never shows local paths."""

    def __init__(self, what: str, fix: str, public: str, code: str):
        super().__init__(what, fix=fix)
        self.public, self.code = public, code


def automatic_rater(name: str) -> bool:
    """Whether ``name`` is an automatic rater's (``judge:gpt-4o``, ``reward:vowels``, ``scorecard``...)."""
    return name.strip().split(":", 1)[0].strip().casefold() in AUTOMATIC_RATERS


def check_person(rater: str, flag: str = "--rater") -> str:
    """A person's rater name: a judgement under an automatic rater's name would be read as that rater's."""
    if automatic_rater(rater):
        raise AlignlabError(f"the rater name '{rater.strip()[:40]}' belongs to an automatic rater "
                            f"({', '.join(AUTOMATIC_RATERS)}), whose judgements it would be read as",
                            fix=f"rate under your own name ({flag} NAME)")
    return rater


# --- the store -----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _pair_order(a_id: int, b_id: int) -> bytes:
    import hashlib

    return hashlib.sha256(f"order-{a_id}-{b_id}".encode()).digest()


def default_path(start: str | Path = ".") -> Path:
    """``<project>/feedback.db`` inside an alignlab project, else ``./feedback.db``."""
    from alignlab.config import find_project

    root = find_project(start)
    return (root if root is not None else Path(start)) / DB_NAME


def open_store(path: str | Path, create: bool = True) -> Store:
    """Open (and migrate) the feedback database at ``path``; ``create=False`` refuses a missing file."""
    path = Path(path)
    if not create and not path.is_file():
        raise AlignlabError(
            f"no feedback database at {path}",
            fix="sample answers to rate first (`alignlab sample --base`, or `--run runs/ID`), or import feedback "
                "(`alignlab feedback import FILE`)",
        )
    return Store(path)


class Store:
    """A connection to the feedback database. Thread-safe (one lock around the one connection)."""

    def __init__(self, path: str | Path, migrations: list[Callable[[sqlite3.Connection], None]] | None = None):
        self.path = Path(path)
        self._migrations = MIGRATIONS if migrations is None else migrations
        self._lock = threading.RLock()
        self._depth = 0
        if self.path.is_dir():
            raise AlignlabError(f"{self.path} is a directory, not a feedback database",
                                fix=f"pass a file path, e.g. --db {self.path / DB_NAME}")
        if (blocker := fsutil.file_in_the_way(self.path.parent)) is not None:
            raise AlignlabError(f"{blocker} is a file, so {self.path} cannot be made", fix="pass another --db path")
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                                    timeout=BUSY_MS / 1000)
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_MS)}")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._refuse_foreign()  # before anything that could write to the file
            self._refuse_newer()
            self._wal()
            self.conn.execute("PRAGMA synchronous = FULL")
            self._migrate()
            self._check_tables()
        except sqlite3.DatabaseError as err:
            self.conn.close()
            if busy(err):
                raise self.busy_error() from err
            raise AlignlabError(f"{self.path} is not a readable feedback database ({err})") from err
        except BaseException:
            self.conn.close()
            raise

    # -- plumbing --

    def busy_error(self, what: str = "") -> AlignlabError:
        """Another process held the write lock for BUSY_MS: that is no damage, so say so (and what it cost)."""
        return AlignlabError(f"{self.path} is busy: another alignlab process is writing to it"
                             + (f"; {what}" if what else ""), fix="try again when it is done")

    def damaged_error(self, err: sqlite3.DatabaseError) -> StoreFileError:
        """A store query failed on the file itself (a dropped table, a corrupted page): one line, and what helps.

        No recovery command is promised: `sqlite3 FILE .recover | sqlite3 new.db` printed "SQL logic error" and made
        an empty database with SQLite 3.40.1, and a .dump of a damaged file ends in ROLLBACK; it only shows what is
        still readable."""
        name = self.path.name
        return StoreFileError(f"{self.path} is damaged ({err})", code="database_damaged",
                              fix=f"restore it from a backup; `sqlite3 {shlex.quote(str(self.path))} .dump > "
                                  "feedback.sql` shows what is still readable",
                              public=f"the feedback database ({name}) is damaged ({err}); restore it from a backup")

    def file_error(self, err: sqlite3.DatabaseError) -> StoreFileError | None:
        """One line for a SQLite error on the file itself (damage, read-only, a full disk, an I/O error); None for
        any other (a closed store, a bad parameter: a bug, which goes on up as it is)."""
        text, name = str(err), self.path.name
        if damage(err):
            return self.damaged_error(err)
        if not isinstance(err, sqlite3.OperationalError):
            return None
        if "database or disk is full" in text:
            return StoreFileError(f"cannot write {self.path} ({text})", fix="free some disk space and try again",
                                  public=f"cannot write the feedback database ({name}): the disk is full",
                                  code="database_full")
        if "readonly database" in text:
            return StoreFileError(f"cannot write {self.path}: it is read-only ({text})",
                                  fix="make the file and its directory writable, or pass another --db",
                                  public=f"cannot write the feedback database ({name}): it is read-only",
                                  code="database_read_only")
        if "disk I/O error" in text:
            return StoreFileError(f"cannot read or write {self.path} ({text})",
                                  fix="check the disk it is on, then try again",
                                  public=f"cannot read or write the feedback database ({name}): disk I/O error",
                                  code="database_io_error")
        return None

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """One committed transaction around everything inside; nested calls join the outer one.

        BEGIN IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading a read lock.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.conn.execute(sql, tuple(params))]

    def _applied(self) -> list[str]:
        has = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'migrations'").fetchone()
        return [r[0] for r in self.conn.execute("SELECT name FROM migrations")] if has else []

    def _wal(self, wait_s: float = 30.0) -> None:
        """Switch the file to WAL (persistent, so once per file).

        The switch needs an exclusive lock and SQLite may answer "locked" at once, without waiting, while
        another process is creating or migrating the same file; retry until ``wait_s`` is spent.
        """
        deadline = time.monotonic() + wait_s
        delay = 0.02
        while True:
            try:
                if self.conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self.conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _refuse_foreign(self) -> None:
        """A SQLite file with tables but no ``migrations`` table is some other program's: switching it to WAL and
        adding our tables would change a file the user did not mean to hand over."""
        tables = [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        if tables and "migrations" not in tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise AlignlabError(f"{self.path} is another program's SQLite database (tables: {shown}), not a feedback "
                                "database; left untouched", fix="pass another --db path")

    def _refuse_newer(self) -> None:
        known = {m.__name__ for m in self._migrations}
        unknown = [n for n in self._applied() if n not in known]
        mine = max((_number(n) or 0 for n in known), default=0)
        if unknown and None in map(_number, unknown):
            name = next(n for n in unknown if _number(n) is None)
            raise AlignlabError(f"{self.path.name} records a migration unknown to this alignlab (schema {mine}): "
                                f"{str(name)[:40]!r}; written by a newer alignlab, or damaged",
                                fix="upgrade alignlab, or restore a backup")
        if unknown:
            newest = max(_number(n) for n in unknown)
            raise AlignlabError(
                f"{self.path.name} was written by a newer alignlab (schema {newest} > {mine})",
                fix="upgrade alignlab",
            )

    def _check_tables(self) -> None:
        """The tables the applied migrations made are there (a dropped table failed later, mid-command)."""
        have = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for m in self._migrations for t in TABLES.get(m.__name__, ()) if t not in have]
        if missing:
            raise self.damaged_error(sqlite3.DatabaseError(f"no table {', '.join(missing)}"))

    def _migrate(self) -> None:
        if {m.__name__ for m in self._migrations} <= set(self._applied()):
            return  # read first: a reader (export, stats, the rating page) takes no write lock another process holds
        with self.transaction() as conn:  # re-read inside the lock: another process may have migrated meanwhile
            conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = set(self._applied())
            for migration in self._migrations:
                if migration.__name__ not in done:
                    migration(conn)
                    conn.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (migration.__name__, _now()))

    def schema_version(self) -> int:
        """The number of the newest migration applied to this file."""
        with self._lock:
            return max((_number(n) or 0 for n in self._applied()), default=0)

    # -- prompts and responses --

    def add_prompt(self, text: str, source: str | None = None, split: str | None = None) -> int:
        """The id of the prompt with this text, adding it if new."""
        return self.add_prompts([{"text": text, "source": source, "split": split}])[0]

    def add_prompts(self, prompts: Iterable[str | dict[str, Any]]) -> list[int]:
        """Add many prompts (strings or {text, source, split}) in one transaction; existing texts keep their id."""
        items = [p if isinstance(p, dict) else {"text": p} for p in prompts]
        for p in items:
            if not isinstance(p.get("text"), str) or not p["text"].strip():
                raise AlignlabError("a prompt needs non-empty text")
        ids = []
        with self.transaction() as conn:
            for p in items:
                conn.execute(
                    # a split given for a stored prompt is recorded (compare marks the scorecard's held-out prompts);
                    # a held-out prompt stays held out (sampling it again must not let export train on it)
                    "INSERT INTO prompts (text, source, split, created_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(text) DO UPDATE SET split = CASE WHEN split = 'heldout' THEN split"
                    " ELSE COALESCE(excluded.split, split) END",
                    (p["text"], p.get("source"), p.get("split"), _now()),
                )
                ids.append(conn.execute("SELECT id FROM prompts WHERE text = ?", (p["text"],)).fetchone()[0])
        return ids

    def add_response(
        self,
        prompt_id: int,
        text: str,
        model: str | None = None,
        run: str | None = None,
        round: int = 0,
        sampler: dict[str, Any] | None = None,
    ) -> int:
        """Add one response to a prompt; ``run`` is the run id or adapter it came from, ``sampler`` its settings."""
        return self.add_responses(
            [{"prompt_id": prompt_id, "text": text, "model": model, "run": run, "round": round, "sampler": sampler}]
        )[0]

    def add_responses(self, responses: Iterable[dict[str, Any]]) -> list[int]:
        """Add many responses ({prompt_id, text, model, run, round, sampler}) in one transaction."""
        items = list(responses)
        ids = []
        with self.transaction() as conn:
            for r in items:
                pid = r.get("prompt_id")
                if conn.execute("SELECT 1 FROM prompts WHERE id = ?", (pid,)).fetchone() is None:
                    raise AlignlabError(f"no prompt with id {pid}")
                if not isinstance(r.get("text"), str):
                    raise AlignlabError(f"response text for prompt {pid} must be a string")
                sampler = r.get("sampler")
                cur = conn.execute(
                    "INSERT INTO responses (prompt_id, text, model, run, round, sampler, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        pid,
                        r["text"],
                        r.get("model"),
                        r.get("run"),
                        int(r.get("round") or 0),
                        json.dumps(sampler, sort_keys=True) if sampler is not None else None,
                        _now(),
                    ),
                )
                ids.append(cur.lastrowid)
        return ids

    def find_response(self, prompt_id: int, text: str, **source) -> int | None:
        """The first response to this prompt with exactly this text, if any; with ``model=`` and/or ``run=``, only one
        from that source (the same words from another run are another run's answer)."""
        where = "".join(f" AND {k} IS ?" for k in source if k in ("model", "run"))
        row = self._rows(f"SELECT id FROM responses WHERE prompt_id = ? AND text = ?{where} ORDER BY id LIMIT 1",
                         (prompt_id, text, *(v for k, v in source.items() if k in ("model", "run"))))
        return row[0]["id"] if row else None

    def response(self, response_id: int) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT r.*, p.text AS prompt FROM responses r JOIN prompts p ON p.id = r.prompt_id WHERE r.id = ?",
            (response_id,),
        )
        return rows[0] if rows else None

    # -- judgements --

    def add_judgement(
        self,
        kind: str,
        response_id: int,
        value: int | str | None = None,
        *,
        rater: str,
        other_response_id: int | None = None,
        rewrite_text: str | None = None,
        round: int | None = None,
    ) -> int:
        """Record one judgement and commit it; returns its id. ``round`` defaults to the response's round."""
        with self.transaction() as conn:
            return self._insert_judgement(conn, kind, response_id, value, rater, other_response_id, rewrite_text, round)

    def _insert_judgement(self, conn, kind, response_id, value, rater, other_response_id, rewrite_text, round) -> int:
        row = conn.execute("SELECT prompt_id, round FROM responses WHERE id = ?", (response_id,)).fetchone()
        if row is None:
            raise AlignlabError(f"no response with id {response_id}")
        if not isinstance(rater, str) or not rater.strip():
            raise AlignlabError("a judgement needs a rater (a name, 'judge:<model>', 'reward:<name>', ...)")
        if kind not in KINDS:
            raise AlignlabError(f"unknown judgement kind '{kind}'", fix=f"use one of {', '.join(KINDS)}")
        if kind != "pick" and other_response_id is not None:
            raise AlignlabError(f"a {kind} judgement takes no other_response_id")
        if kind != "rewrite" and rewrite_text is not None:
            raise AlignlabError(f"a {kind} judgement takes no rewrite_text")
        if kind == "thumb" and (isinstance(value, bool) or value not in (1, -1)):
            raise AlignlabError(f"a thumb is +1 or -1, not {value!r}")
        if kind == "score" and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5):
            raise AlignlabError(f"a score is an integer 1-5, not {value!r}")
        if kind == "rewrite":
            if value is not None:
                raise AlignlabError("a rewrite takes no value, only rewrite_text")
            if not isinstance(rewrite_text, str) or not rewrite_text.strip():
                raise AlignlabError("a rewrite needs non-empty rewrite_text")
        if kind == "pick":
            if value not in PICKS:
                raise AlignlabError(f"a pick is 'a', 'b' or 'tie', not {value!r}")
            if other_response_id is None:
                raise AlignlabError("a pick needs other_response_id (the id of the answer it was compared with)")
            other = conn.execute("SELECT prompt_id, round FROM responses WHERE id = ?", (other_response_id,)).fetchone()
            if other is None:
                raise AlignlabError(f"no response with id {other_response_id}")
            if other_response_id == response_id or other[0] != row[0]:
                raise AlignlabError(
                    f"a pick compares two different responses to the same prompt (got {response_id} and {other_response_id})"
                )
            row = (row[0], max(row[1], other[1]))  # a pick across rounds counts in the later one, whichever is shown as A
        cur = conn.execute(
            "INSERT INTO judgements (kind, response_id, other_response_id, value, rewrite_text, rater, round, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, response_id, other_response_id, value, rewrite_text, rater, row[1] if round is None else int(round), _now()),
        )
        return cur.lastrowid

    def add_judgements(self, judgements: Iterable[dict[str, Any]]) -> list[int]:
        """Many judgements (dicts of add_judgement's arguments) in one transaction: all stored or none."""
        with self.transaction():
            return [self.add_judgement(**j) for j in judgements]

    def standing(self, rater: str, kind: str, response_id: int, other_response_id: int | None = None,
                 rewrite_text: str | None = None) -> int | None:
        """The id of this rater's standing judgement of this kind on this response (or pair, either order), if any;
        for a rewrite, one with the same text (another rewrite of the same answer is another judgement)."""
        if kind == "rewrite":
            row = self.conn.execute(
                "SELECT id FROM judgements WHERE rater = ? AND kind = 'rewrite' AND response_id = ? AND "
                "undone_at IS NULL AND rewrite_text = ?", (rater, response_id, rewrite_text)).fetchone()
        elif kind == "pick":
            row = self.conn.execute(
                "SELECT id FROM judgements WHERE rater = ? AND kind = 'pick' AND undone_at IS NULL AND "
                "((response_id = ? AND other_response_id = ?) OR (response_id = ? AND other_response_id = ?))",
                (rater, response_id, other_response_id, other_response_id, response_id)).fetchone()
        else:
            row = self.conn.execute(
                "SELECT id FROM judgements WHERE rater = ? AND kind = ? AND response_id = ? AND undone_at IS NULL",
                (rater, kind, response_id)).fetchone()
        return None if row is None else row[0]

    def judged(self, rater: str, response_id: int, kinds: Iterable[str], other_response_id: int | None = None) -> bool:
        """Whether this rater has a standing judgement of these kinds on this response (on this pair, either order,
        with ``other_response_id``): the item is no longer pending for them."""
        kinds = tuple(kinds)
        pair = ("AND ((response_id = ? AND other_response_id = ?) OR (response_id = ? AND other_response_id = ?))"
                if other_response_id is not None else "AND response_id = ?")
        ids = (response_id, other_response_id, other_response_id, response_id) if other_response_id is not None else (
            response_id,)
        with self._lock:
            return self.conn.execute(
                f"SELECT 1 FROM judgements WHERE rater = ? AND undone_at IS NULL AND kind IN ({', '.join('?' * len(kinds))})"
                f" {pair}", (rater, *kinds, *ids)).fetchone() is not None

    def count_responses(self, round: int | None = None) -> int:
        """Responses stored (in this round)."""
        with self._lock:
            if round is None:
                return self.conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            return self.conn.execute("SELECT COUNT(*) FROM responses WHERE round = ?", (int(round),)).fetchone()[0]

    def revealed(self, rater: str, response_id: int, other_response_id: int) -> bool:
        """This rater picked between these two answers before, undid it, and they come from different sources (run
        or model): the rating page showed which wrote which after that pick, so a new pick would not be blind."""
        row = self.conn.execute(
            "SELECT 1 FROM judgements j JOIN responses r1 ON r1.id = j.response_id"
            " JOIN responses r2 ON r2.id = j.other_response_id WHERE j.rater = ? AND j.kind = 'pick'"
            " AND j.undone_at IS NOT NULL AND (r1.run IS NOT r2.run OR r1.model IS NOT r2.model) AND"
            " ((j.response_id = ? AND j.other_response_id = ?) OR (j.response_id = ? AND j.other_response_id = ?))",
            (rater, response_id, other_response_id, other_response_id, response_id)).fetchone()
        return row is not None

    def undo_last(self, rater: str, kinds: Iterable[str] = KINDS, round: int | None = None) -> dict[str, Any] | None:
        """Mark this rater's most recent standing judgement (of these kinds, in this round if given) undone; return
        it, or None."""
        kinds = tuple(kinds)
        marks = ", ".join("?" * len(kinds))
        in_round = "" if round is None else " AND round = ?"
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT * FROM judgements WHERE rater = ? AND undone_at IS NULL AND kind IN ({marks}){in_round}"
                " ORDER BY id DESC LIMIT 1",
                (rater, *kinds, *(() if round is None else (int(round),))),
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE judgements SET undone_at = ? WHERE id = ?", (_now(), row["id"]))
            return dict(row)

    def judgements(self, round: int | None = None, include_undone: bool = False) -> list[dict[str, Any]]:
        """Judgements in id order, each with its prompt and the texts of the responses it is about."""
        where = ["1 = 1"]
        params: list[Any] = []
        if not include_undone:
            where.append("j.undone_at IS NULL")
        if round is not None:
            where.append("j.round = ?")
            params.append(round)
        return self._rows(
            "SELECT j.*, r.prompt_id, p.text AS prompt, p.split AS prompt_split, r.text AS response,"
            " o.text AS other_response"
            " FROM judgements j JOIN responses r ON r.id = j.response_id JOIN prompts p ON p.id = r.prompt_id"
            " LEFT JOIN responses o ON o.id = j.other_response_id"
            f" WHERE {' AND '.join(where)} ORDER BY j.id",
            params,
        )

    # -- what is left to rate --

    def pending_single(self, rater: str, round: int | None = None) -> list[dict[str, Any]]:
        """Responses this rater has no standing thumb/score/rewrite on, in prompt then response order."""
        sql = (
            "SELECT r.id AS response_id, r.prompt_id, p.text AS prompt, r.text AS response, r.round"
            " FROM responses r JOIN prompts p ON p.id = r.prompt_id"
            " WHERE NOT EXISTS (SELECT 1 FROM judgements j WHERE j.response_id = r.id AND j.rater = ?"
            "   AND j.undone_at IS NULL AND j.kind IN ('thumb', 'score', 'rewrite'))"
        )
        params: list[Any] = [rater]
        if round is not None:
            sql += " AND r.round = ?"
            params.append(round)
        return self._rows(sql + " ORDER BY r.prompt_id, r.id", params)

    def pending_pairs(self, rater: str, round: int | None = None, revealed: bool = True) -> list[dict[str, Any]]:
        """Pairs of different-text responses to the same prompt that this rater has no standing pick on; with
        ``revealed=False`` not those whose sources this rater has seen (see :meth:`revealed`) either."""
        # one NOT EXISTS per order, each a lookup of all four columns of judgements_pair (an OR of the two orders
        # searched the index by rater and kind only: every pair scanned all of the rater's picks)
        picked = ("NOT EXISTS (SELECT 1 FROM judgements j WHERE j.rater = ? AND j.kind = 'pick' AND j.response_id = {}"
                  " AND j.other_response_id = {} AND (j.undone_at IS NULL"
                  " OR (? AND (r1.run IS NOT r2.run OR r1.model IS NOT r2.model))))")
        sql = (
            "SELECT r1.prompt_id, p.text AS prompt, r1.id AS a_id, r1.text AS a, r2.id AS b_id, r2.text AS b,"
            " MAX(r1.round, r2.round) AS round"
            " FROM responses r1 JOIN responses r2 ON r2.prompt_id = r1.prompt_id AND r2.id > r1.id"
            " JOIN prompts p ON p.id = r1.prompt_id"
            f" WHERE r1.text != r2.text AND {picked.format('r1.id', 'r2.id')} AND {picked.format('r2.id', 'r1.id')}"
        )
        params: list[Any] = [rater, int(not revealed)] * 2
        if round is not None:
            sql += " AND r1.round = ? AND r2.round = ?"
            params += [round, round]
        # within a prompt in an order hashed from the two ids: by id, the first-sampled model's answer led every
        # prompt's pairs and came back in the next one, telling a rater which model wrote it
        return sorted(self._rows(sql, params), key=lambda it: (it["prompt_id"], _pair_order(it["a_id"], it["b_id"])))

    # -- summaries --

    def rounds(self) -> list[int]:
        rows = self._rows("SELECT round FROM responses UNION SELECT round FROM judgements ORDER BY round")
        return [r["round"] for r in rows]

    def stats(self, round: int | None = None) -> list[dict[str, Any]]:
        """Per round: prompts, responses, standing judgements by kind and by rater, thumbs, mean score, undone."""
        out = []
        for rnd in [round] if round is not None else self.rounds():
            resp = self._rows(
                "SELECT COUNT(*) AS n, COUNT(DISTINCT prompt_id) AS prompts FROM responses WHERE round = ?", (rnd,)
            )[0]
            live = "FROM judgements WHERE round = ? AND undone_at IS NULL"
            by_kind = {r["kind"]: r["n"] for r in self._rows(f"SELECT kind, COUNT(*) AS n {live} GROUP BY kind ORDER BY kind", (rnd,))}
            by_rater = {r["rater"]: r["n"] for r in self._rows(f"SELECT rater, COUNT(*) AS n {live} GROUP BY rater ORDER BY rater", (rnd,))}
            thumbs = self._rows(
                f"SELECT SUM(value = 1) AS up, SUM(value = -1) AS down {live} AND kind = 'thumb'", (rnd,)
            )[0]
            mean = self._rows(f"SELECT AVG(value) AS m {live} AND kind = 'score'", (rnd,))[0]["m"]
            undone = self._rows("SELECT COUNT(*) AS n FROM judgements WHERE round = ? AND undone_at IS NOT NULL", (rnd,))
            out.append(
                {
                    "round": rnd,
                    "prompts": resp["prompts"],
                    "responses": resp["n"],
                    "judgements": sum(by_kind.values()),
                    "by_kind": by_kind,
                    "by_rater": by_rater,
                    "thumbs_up": thumbs["up"] or 0,
                    "thumbs_down": thumbs["down"] or 0,
                    "mean_score": mean,
                    "undone": undone[0]["n"],
                }
            )
        return out


    def rounds_table(self) -> list[dict[str, Any]]:
        """The rows `alignlab loop` writes per round (status, method, persona scores...), in round order."""
        return self._rows("SELECT * FROM rounds ORDER BY round")

    def round_row(self, r: int) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM rounds WHERE round = ?", (r,))
        return rows[0] if rows else None

    def update_round(self, r: int, **fields) -> dict[str, Any]:
        """Create round ``r`` ('running', started now) if it is new, then set ``fields``; returns the row."""
        bad = set(fields) - set(ROUND_COLUMNS)
        if bad:
            raise ValueError(f"unknown rounds columns {sorted(bad)}")
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM rounds WHERE round = ?", (r,)).fetchone() is None:
                conn.execute("INSERT INTO rounds (round, status, started_at) VALUES (?, 'running', ?)", (r, _now()))
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(f"UPDATE rounds SET {sets} WHERE round = ?", (*fields.values(), r))
        return self.round_row(r)  # type: ignore[return-value]

    def prompts_answered_in_rounds(self) -> set[str]:
        """Prompt texts with a response in any loop round (round >= 1)."""
        return {r["text"] for r in self._rows(
            "SELECT DISTINCT p.text FROM prompts p JOIN responses r ON r.prompt_id = p.id WHERE r.round >= 1")}

    def round_responses(self, r: int) -> list[dict[str, Any]]:
        """Round ``r``'s responses as {id, prompt_id, prompt, text}, by prompt."""
        return self._rows(
            "SELECT r.id, r.prompt_id, p.text AS prompt, r.text FROM responses r JOIN prompts p ON p.id = r.prompt_id"
            " WHERE r.round = ? ORDER BY r.prompt_id, r.id", (r,))

    def count_judgements(self, r: int) -> int:
        """Standing (not undone) judgements of round ``r``."""
        return self._rows("SELECT COUNT(*) AS n FROM judgements WHERE round = ? AND undone_at IS NULL", (r,))[0]["n"]

    def undo_round(self, r: int, rater: str) -> int:
        """Mark every standing judgement of ``rater`` in round ``r`` undone (kept, as every undo is); how many."""
        with self.transaction() as conn:
            return conn.execute("UPDATE judgements SET undone_at = ? WHERE round = ? AND rater = ? AND undone_at IS NULL",
                                (_now(), int(r), rater)).rowcount

    def undo_judgement(self, judgement_id: int, rater: str, kinds: Iterable[str] = KINDS) -> dict[str, Any] | None:
        """Mark one judgement undone if it is standing, this rater's, and of these kinds; return it, or None."""
        kinds = tuple(kinds)
        with self.transaction() as conn:
            row = conn.execute(
                f"SELECT * FROM judgements WHERE id = ? AND rater = ? AND undone_at IS NULL AND kind IN ({', '.join('?' * len(kinds))})",
                (judgement_id, rater, *kinds),
            ).fetchone()
            if row is not None:
                conn.execute("UPDATE judgements SET undone_at = ? WHERE id = ?", (_now(), judgement_id))
            return dict(row) if row else None


def _guarded(method: Callable) -> Callable:
    """A store method whose SQLite errors on the file itself (a dropped table, a malformed page, a read-only file)
    come out as one line naming the file; any other (busy, a broken constraint, a closed store) goes on up as it is."""

    @functools.wraps(method)
    def guarded(self: Store, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as err:
            if (line := self.file_error(err)) is None:
                raise
            raise line from err

    return guarded


for _name, _method in list(vars(Store).items()):
    if not _name.startswith("_") and callable(_method) and _name not in ("close", "transaction", "busy_error",
                                                                          "damaged_error", "file_error"):
        setattr(Store, _name, _guarded(_method))

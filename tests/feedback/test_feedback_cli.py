"""`alignlab feedback export|import|stats` as real subprocesses: default paths, output, one-line errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from alignlab.feedback.store import MIGRATIONS, Store, open_store
from helpers import one_error, run_cli


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "alignlab", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": "Is the sky blue?", "chosen": "Shockingly, yes.", "rejected": "Yes."},
        {"prompt": "Is the sky blue?", "chosen": "Yes.", "rejected": "Shockingly, yes."},  # someone disagrees
        {"prompt": "2+2?", "chosen": "4, genius.", "rejected": "4"},
        {"prompt": "2+2?", "completion": "4, genius.", "label": True},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_import_export_stats_in_a_project(tmp_path, pairs_file):
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "data").mkdir()
    (project / "alignlab.yaml").write_text("name: snarky\n")
    heldout = project / "data" / "heldout.jsonl"  # the scorecard's prompts: an import of one stays out of training
    heldout.write_text(json.dumps({"prompt": "Capital of Peru?"}) + "\n")
    with_held = tmp_path / "with_held.jsonl"
    with_held.write_text(pairs_file.read_text() + json.dumps({"prompt": "Capital of Peru?", "chosen": "Lima, duh.",
                                                              "rejected": "Lima."}) + "\n")
    imp = _cli("feedback", "import", str(with_held), "--rater", "ann", cwd=project / "sub")
    assert imp.returncode == 0, imp.stderr
    assert "imported 5 rows (4 pairs, 1 labels)" in imp.stdout
    db = project / "feedback.db"  # the project's database, found from a subdirectory
    assert db.is_file() and not (project / "sub" / "feedback.db").exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT split FROM prompts WHERE text = 'Capital of Peru?'").fetchone() == ("heldout",)

    exp = _cli("feedback", "export", "--format", "dpo", cwd=project / "sub")
    assert exp.returncode == 0, exp.stderr
    out = project / "data" / "pairs.jsonl"  # the project has no pairs yet: the file `train dpo` and `recipe` read
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"prompt": "2+2?", "chosen": "4, genius.", "rejected": "4"}
    ]
    assert f"wrote 1 dpo rows to {out}" in exp.stdout and "next: alignlab train dpo" in exp.stdout
    assert "skipped: heldout_prompts 1" in exp.stdout  # the pair on the held-out prompt
    assert "conflict (pair) on prompt 1 'Is the sky blue?': judgements 1, 2" in exp.stdout
    again = _cli("feedback", "export", "--format", "dpo", cwd=project)  # pairs.jsonl is kept; the export goes beside it
    assert again.returncode == 0 and out.read_text().count("\n") == 1
    assert (project / "data" / "feedback_dpo.jsonl").read_text() == out.read_text()
    none = _cli("feedback", "export", "--format", "sft", cwd=project)  # no SFT rows: no empty sft.jsonl for train
    assert _one_line_error(none).startswith(f"error: no sft rows to export yet, so {project / 'data' / 'sft.jsonl'} "
                                            "was not written")
    assert not (project / "data" / "sft.jsonl").exists()

    kto = _cli("feedback", "export", "--format", "kto", "--round", "0", "--out", str(tmp_path / "k.jsonl"), cwd=project)
    assert kto.returncode == 0, kto.stderr
    assert json.loads((tmp_path / "k.jsonl").read_text()) == {"prompt": "2+2?", "completion": "4, genius.", "label": True}

    stats = _cli("feedback", "stats", cwd=project)
    assert stats.returncode == 0, stats.stderr
    assert "round 0: 3 prompts, 6 responses, 5 judgements (pick 4, thumb 1); thumbs +1/-0" in stats.stdout
    assert "by rater: ann 5" in stats.stdout

    kept = heldout.read_bytes()  # `--out` naming a prompt file of the project, or the database, is refused
    for out in ("data/heldout.jsonl", "feedback.db"):
        msg = _one_line_error(_cli("feedback", "export", "--format", "sft", "--out", out, cwd=project))
        assert msg.startswith(f"error: --out {out} is the ") and msg.endswith("pass another --out path")
    assert heldout.read_bytes() == kept
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 5


def test_outside_a_project_uses_the_current_directory(tmp_path, pairs_file):
    work = tmp_path / "plain"
    work.mkdir()
    assert _cli("feedback", "import", str(pairs_file), "--rater", "ann", cwd=work).returncode == 0
    assert (work / "feedback.db").is_file()
    exp = _cli("feedback", "export", "--format", "sft", cwd=work)  # no rewrites, so no SFT rows: no empty file
    assert "no sft rows to export yet" in _one_line_error(exp) and not (work / "feedback_sft.jsonl").exists()


def test_explicit_db(tmp_path, pairs_file):
    db = tmp_path / "elsewhere" / "fb.db"
    assert _cli("feedback", "import", str(pairs_file), "--rater", "ann", "--db", str(db)).returncode == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 4


def test_errors_are_one_line(tmp_path, pairs_file):
    assert _one_line_error(_cli("feedback", "stats", "--db", str(tmp_path / "none.db"))).startswith(
        "error: no feedback database at"
    )
    assert not (tmp_path / "none.db").exists()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(pairs_file.read_text() + '{"prompt": "x", "chosen": 3, "rejected": "y"}\n')
    db = tmp_path / "fb.db"
    msg = _one_line_error(_cli("feedback", "import", str(bad), "--rater", "ann", "--db", str(db)))
    assert msg == f"error: {bad}:5: 'chosen' must be a non-empty string"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 0

    fmt = _one_line_error(_cli("feedback", "export", "--format", "orpo", "--db", str(db)))
    assert fmt.startswith("error: unknown format 'orpo'")

    def m999_future(conn):
        conn.execute("CREATE TABLE future (x)")

    newer = tmp_path / "feedback.db"
    Store(newer, migrations=[*MIGRATIONS, m999_future]).close()
    msg = _one_line_error(_cli("feedback", "stats", "--db", str(newer)))
    assert msg == f"error: feedback.db was written by a newer alignlab (schema 999 > {len(MIGRATIONS)}) — upgrade alignlab"


def test_import_and_export_read_only_the_data_dir_and_the_heldout_texts(tmp_path, pairs_file):
    """`feedback import` and `export --out` stopped on problems none of theirs: `train: {learning_rate: fast}` in
    alignlab.yaml, an empty data/heldout.jsonl ("the file has no rows"), a chat-form held-out prompt ("prompt 1 is a
    conversation"). And judge verdicts made offline could not be imported under judge:<model> at all."""
    project = tmp_path / "proj"
    data = project / "mydata"
    data.mkdir(parents=True)
    (project / "alignlab.yaml").write_text("data_dir: mydata\ntrain: {learning_rate: fast}\n")
    heldout = data / "heldout.jsonl"
    heldout.write_text(json.dumps({"prompt": [{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "Capital of Peru?"}]}) + "\n")
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text(pairs_file.read_text() + json.dumps({"prompt": "Capital of Peru?", "chosen": "Lima, duh.",
                                                             "rejected": "Lima."}) + "\n")
    imp = _cli("feedback", "import", str(verdicts), "--rater", "judge:qwen", "--automatic", cwd=project)
    assert imp.returncode == 0 and "imported 5 rows" in imp.stdout and not imp.stderr, imp.stderr
    with sqlite3.connect(project / "feedback.db") as conn:
        assert conn.execute("SELECT split FROM prompts WHERE text = 'Capital of Peru?'").fetchone() == ("heldout",)
        assert {r for (r,) in conn.execute("SELECT DISTINCT rater FROM judgements")} == {"judge:qwen"}

    heldout.write_text('{"prompt": "Who wrote Emma?"\n')  # unreadable: one warning, and the stored split holds
    exp = _cli("feedback", "export", "--format", "dpo", cwd=project)
    assert exp.returncode == 0, exp.stderr
    assert exp.stderr.startswith(f"warning: {heldout}:1: invalid JSON") and exp.stderr.count("\n") == 1
    assert f"wrote 1 dpo rows to {data / 'pairs.jsonl'}" in exp.stdout and "skipped: heldout_prompts 1" in exp.stdout


def test_an_empty_heldout_file_is_no_heldout_prompts(tmp_path, monkeypatch, capsys):
    """An empty data/heldout.jsonl stopped import and export with "the file has no rows"."""
    from alignlab.cli.feedback import _project_prompts

    (tmp_path / "data").mkdir()
    (tmp_path / "alignlab.yaml").write_text("name: snarky\n")
    (tmp_path / "data" / "heldout.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    texts, files = _project_prompts()
    assert texts == set() and files[1] == tmp_path / "data" / "heldout.jsonl"
    assert capsys.readouterr().err == ""


def test_export_replaces_an_existing_file_only_with_force_and_writes_nothing_without_rows(tmp_path, monkeypatch, capsys):
    """`feedback export --format dpo --out data/pairs.jsonl` in a fresh project replaced the 600 pairs with 0 rows,
    and `--out alignlab.yaml` emptied the config; "wrote 0 dpo rows" and exit 0."""
    (tmp_path / "data").mkdir()
    config = tmp_path / "alignlab.yaml"
    config.write_text("name: snarky\n")
    pairs = tmp_path / "data" / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "2+2?", "chosen": "4, genius.", "rejected": "4"}) + "\n")
    kept = {p: p.read_bytes() for p in (config, pairs)}
    open_store(tmp_path / "feedback.db").close()  # the database of a fresh project: no judgements

    for out in ("data/pairs.jsonl", "alignlab.yaml"):
        code, lines = run_cli(monkeypatch, capsys, "feedback", "export", "-f", "dpo", "--out", out, cwd=tmp_path)
        assert code == 2 and one_error(lines) == f"error: {out} exists — pass --force to replace it, or --out " \
                                                 "another.jsonl", lines
    code, lines = run_cli(monkeypatch, capsys, "feedback", "export", "-f", "dpo", "--out", "data/pairs.jsonl",
                          "--force", cwd=tmp_path)  # replacing it, but with nothing: refused, the file kept
    assert code == 2 and one_error(lines).startswith("error: no dpo rows to export yet, so data/pairs.jsonl was "
                                                     "not written and still holds its earlier rows"), lines
    assert {p: p.read_bytes() for p in kept} == kept and not any(x.startswith("wrote") for x in lines)

    with open_store(tmp_path / "feedback.db") as store:
        pid = store.add_prompt("Capital of Peru?")
        a, b = (store.add_response(pid, t) for t in ("Lima, obviously.", "Lima."))
        store.add_judgement("pick", a, "a", other_response_id=b, rater="ann")
    code, lines = run_cli(monkeypatch, capsys, "feedback", "export", "-f", "dpo", "--out", "data/pairs.jsonl",
                          "--force", cwd=tmp_path, with_stdout=True)
    assert code in (0, None) and lines[0] == "wrote 1 dpo rows to data/pairs.jsonl (from pick 1, rewrite 0, thumb 0, " \
                                             "score 0)", lines
    assert json.loads(pairs.read_text()) == {"prompt": "Capital of Peru?", "chosen": "Lima, obviously.",
                                             "rejected": "Lima."}
    # the file alignlab names itself (feedback_dpo.jsonl, the project having pairs.jsonl) is the database's snapshot:
    # rate, export, train, again, without --force
    for _ in range(2):
        code, lines = run_cli(monkeypatch, capsys, "feedback", "export", "-f", "dpo", cwd=tmp_path, with_stdout=True)
        assert code in (0, None) and lines[0].startswith(f"wrote 1 dpo rows to {tmp_path / 'data' / 'feedback_dpo.jsonl'} "), lines

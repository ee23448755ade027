"""Exporting judgements to TRL's dpo/kto/sft JSONL, and importing JSONL feedback."""

from __future__ import annotations

import json

import pytest

from alignlab.errors import AlignlabError
from alignlab.feedback.export import export, import_jsonl
from alignlab.feedback.store import open_store


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "feedback.db") as s:
        yield s


def _responses(store, prompt, *texts, round=0):
    pid = store.add_prompt(prompt)
    return [store.add_response(pid, t, round=round) for t in texts]


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_picks_make_pairs_and_ties_are_skipped(store, tmp_path):
    a, b, c = _responses(store, "P", "ra", "rb", "rc")
    store.add_judgement("pick", a, "a", other_response_id=b, rater="ann")
    store.add_judgement("pick", a, "b", other_response_id=c, rater="ann")
    store.add_judgement("pick", b, "tie", other_response_id=c, rater="ann")
    out = tmp_path / "dpo.jsonl"
    summary = export(store, "dpo", out)
    assert _rows(out) == [
        {"prompt": "P", "chosen": "ra", "rejected": "rb"},
        {"prompt": "P", "chosen": "rc", "rejected": "ra"},
    ]
    assert summary["rows"] == 2 and summary["by_source"]["pick"] == 2
    assert summary["skipped"]["ties"] == 1 and summary["conflicts"] == []
    assert list(_rows(out)[0]) == ["prompt", "chosen", "rejected"]


def test_rewrite_makes_a_pair_and_an_sft_example(store, tmp_path):
    (a,) = _responses(store, "P", "meh")
    store.add_judgement("rewrite", a, rewrite_text="Oh, *splendid* question.", rater="ann")
    export(store, "dpo", tmp_path / "dpo.jsonl")
    sft = export(store, "sft", tmp_path / "sft.jsonl")
    assert _rows(tmp_path / "dpo.jsonl") == [{"prompt": "P", "chosen": "Oh, *splendid* question.", "rejected": "meh"}]
    assert _rows(tmp_path / "sft.jsonl") == [{"prompt": "P", "completion": "Oh, *splendid* question."}]
    assert sft["rows"] == 1 and sft["by_source"] == {"rewrite": 1}
    assert export(store, "kto", tmp_path / "kto.jsonl")["rows"] == 0  # a rewrite is not a KTO label


def test_thumbs_make_kto_rows_and_up_vs_down_pairs(store, tmp_path):
    a, b, c = _responses(store, "P", "good", "bad", "worse")
    (d,) = _responses(store, "Q", "lonely up")
    store.add_judgement("thumb", a, 1, rater="ann")
    store.add_judgement("thumb", b, -1, rater="ann")
    store.add_judgement("thumb", c, -1, rater="bob")
    store.add_judgement("thumb", d, 1, rater="ann")
    kto = export(store, "kto", tmp_path / "kto.jsonl")
    assert _rows(tmp_path / "kto.jsonl") == [
        {"prompt": "P", "completion": "good", "label": True},
        {"prompt": "P", "completion": "bad", "label": False},
        {"prompt": "P", "completion": "worse", "label": False},
        {"prompt": "Q", "completion": "lonely up", "label": True},
    ]
    assert (kto["desirable"], kto["undesirable"], kto["by_source"]) == (2, 2, {"thumb": 4, "score": 0})
    dpo = export(store, "dpo", tmp_path / "dpo.jsonl")
    assert _rows(tmp_path / "dpo.jsonl") == [
        {"prompt": "P", "chosen": "good", "rejected": "bad"},
        {"prompt": "P", "chosen": "good", "rejected": "worse"},
    ]
    assert dpo["by_source"]["thumb"] == 2


def test_scores_label_at_4_and_2_and_pair_on_a_gap_of_2(store, tmp_path):
    s5, s4, s3, s2 = _responses(store, "P", "five", "four", "three", "two")
    for rid, v in [(s5, 5), (s4, 4), (s3, 3), (s2, 2)]:
        store.add_judgement("score", rid, v, rater="ann")
    (other,) = _responses(store, "Q", "q-one")
    store.add_judgement("score", other, 1, rater="ann")
    kto = export(store, "kto", tmp_path / "kto.jsonl")
    assert [(r["completion"], r["label"]) for r in _rows(tmp_path / "kto.jsonl")] == [
        ("five", True), ("four", True), ("two", False), ("q-one", False)
    ]
    assert kto["skipped"]["neutral_scores"] == 1 and kto["by_source"] == {"thumb": 0, "score": 4}
    export(store, "dpo", tmp_path / "dpo.jsonl")
    assert sorted((r["chosen"], r["rejected"]) for r in _rows(tmp_path / "dpo.jsonl")) == [
        ("five", "three"), ("five", "two"), ("four", "two")
    ]


def test_scores_are_compared_within_a_rater_and_the_latest_stands(store, tmp_path):
    a, b = _responses(store, "P", "x", "y")
    store.add_judgement("score", a, 5, rater="ann")
    store.add_judgement("score", b, 3, rater="bob")  # ann's 5 vs bob's 3: different scales, no pair
    store.add_judgement("score", b, 1, rater="ann")
    store.add_judgement("score", b, 4, rater="ann")  # ann changed her mind: gap 1, no pair
    assert export(store, "dpo", tmp_path / "dpo.jsonl")["rows"] == 0


def test_conflicts_are_reported_and_left_out(store, tmp_path):
    a, b, c = _responses(store, "P", "ra", "rb", "rc")
    j1 = store.add_judgement("pick", a, "a", other_response_id=b, rater="ann")  # a > b
    j2 = store.add_judgement("pick", b, "a", other_response_id=a, rater="bob")  # b > a
    j3 = store.add_judgement("thumb", c, 1, rater="ann")
    j4 = store.add_judgement("thumb", c, -1, rater="bob")
    j5 = store.add_judgement("pick", a, "a", other_response_id=c, rater="ann")  # fine on its own
    dpo = export(store, "dpo", tmp_path / "dpo.jsonl")
    assert _rows(tmp_path / "dpo.jsonl") == [{"prompt": "P", "chosen": "ra", "rejected": "rc"}]
    assert [(c["kind"], c["judgement_ids"], c["texts"]) for c in dpo["conflicts"]] == [("pair", [j1, j2], ["ra", "rb"])]
    kto = export(store, "kto", tmp_path / "kto.jsonl")
    assert kto["rows"] == 0
    assert [(c["kind"], c["judgement_ids"], c["texts"]) for c in kto["conflicts"]] == [("label", [j3, j4], ["rc"])]
    assert j5 not in [i for c in dpo["conflicts"] for i in c["judgement_ids"]]


def test_a_conflict_across_kinds_is_a_conflict(store, tmp_path):
    a, b = _responses(store, "P", "ra", "rb")
    j1 = store.add_judgement("pick", a, "a", other_response_id=b, rater="ann")  # a > b
    j2 = store.add_judgement("score", a, 1, rater="bob")  # but bob scores b well above a
    j3 = store.add_judgement("score", b, 5, rater="bob")
    dpo = export(store, "dpo", tmp_path / "dpo.jsonl")
    assert dpo["rows"] == 0
    assert dpo["conflicts"][0]["judgement_ids"] == [j1, j2, j3]


def test_agreeing_judgements_make_one_row(store, tmp_path):
    a, b = _responses(store, "P", "ra", "rb")
    store.add_judgement("pick", a, "a", other_response_id=b, rater="ann")
    store.add_judgement("pick", b, "b", other_response_id=a, rater="bob")
    store.add_judgement("thumb", a, 1, rater="cy")
    store.add_judgement("thumb", b, -1, rater="cy")
    dpo = export(store, "dpo", tmp_path / "dpo.jsonl")
    assert _rows(tmp_path / "dpo.jsonl") == [{"prompt": "P", "chosen": "ra", "rejected": "rb"}]
    assert dpo["skipped"]["duplicates"] == 2 and dpo["by_source"]["pick"] == 1


def test_undone_judgements_and_other_rounds_are_ignored(store, tmp_path):
    a, b = _responses(store, "P", "ra", "rb")
    c, d = _responses(store, "P", "rc", "rd", round=1)
    store.add_judgement("pick", a, "a", other_response_id=b, rater="ann")
    store.add_judgement("pick", c, "b", other_response_id=d, rater="ann")
    store.add_judgement("pick", c, "a", other_response_id=d, rater="ann")
    store.undo_last("ann")
    assert export(store, "dpo", tmp_path / "all.jsonl")["rows"] == 2
    assert export(store, "dpo", tmp_path / "r1.jsonl", round=1)["rows"] == 1
    assert _rows(tmp_path / "r1.jsonl") == [{"prompt": "P", "chosen": "rd", "rejected": "rc"}]
    assert export(store, "dpo", tmp_path / "r7.jsonl", round=7)["rows"] == 0


def test_output_is_deterministic_and_plain_utf8(store, tmp_path):
    a, b, c = _responses(store, "Pourquoi? ¿Qué? 为什么", "é ✓", "b\n2 lines", "c")
    store.add_judgement("thumb", c, 1, rater="ann")
    store.add_judgement("pick", b, "b", other_response_id=a, rater="ann")
    store.add_judgement("score", a, 5, rater="bob")
    store.add_judgement("score", c, 1, rater="bob")
    store.add_judgement("rewrite", b, rewrite_text="better", rater="ann")
    for fmt in ("dpo", "kto", "sft"):
        export(store, fmt, tmp_path / "one.jsonl")
        export(store, fmt, tmp_path / "two.jsonl")
        first = (tmp_path / "one.jsonl").read_bytes()
        assert first == (tmp_path / "two.jsonl").read_bytes()
        assert "é ✓".encode() in first or fmt == "sft"
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp" in p.name) == []


def test_write_is_atomic(store, tmp_path, monkeypatch):
    a, b = _responses(store, "P", "ra", "rb")
    store.add_judgement("pick", a, "a", other_response_id=b, rater="ann")
    out = tmp_path / "dpo.jsonl"
    out.write_text("previous export\n")

    def boom(src, dst):
        raise OSError("disk full")

    from alignlab import fsutil

    monkeypatch.setattr(fsutil.os, "replace", boom)  # the export writes through fsutil
    with pytest.raises(OSError):
        export(store, "dpo", out)
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dpo")] == []
    monkeypatch.undo()
    export(store, "dpo", out)
    assert _rows(out) == [{"prompt": "P", "chosen": "ra", "rejected": "rb"}]


def test_unknown_format(store, tmp_path):
    with pytest.raises(AlignlabError, match="unknown export format 'orpo'"):
        export(store, "orpo", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_import_then_export_round_trips(store, tmp_path):
    src = tmp_path / "in.jsonl"
    pairs = [
        {"prompt": "P1", "chosen": "snark", "rejected": "bland"},
        {"prompt": "P2", "chosen": "sharp", "rejected": "dull"},
    ]
    labels = [{"prompt": "P1", "completion": "snark", "label": True}, {"prompt": "P3", "completion": "meh", "label": False}]
    src.write_text("\n".join(json.dumps(r) for r in pairs + labels) + "\n\n")
    counts = import_jsonl(store, src, rater="import:ann", round=2)
    assert counts == {"rows": 4, "pairs": 2, "labels": 2}
    assert store.conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 3
    assert store.conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 5  # "snark" reused
    kinds = store.conn.execute("SELECT kind, value, rater, round FROM judgements ORDER BY id").fetchall()
    assert [tuple(k) for k in kinds] == [
        ("pick", "a", "import:ann", 2), ("pick", "a", "import:ann", 2),
        ("thumb", 1, "import:ann", 2), ("thumb", -1, "import:ann", 2),
    ]
    export(store, "dpo", tmp_path / "dpo.jsonl")
    assert _rows(tmp_path / "dpo.jsonl") == pairs
    export(store, "kto", tmp_path / "kto.jsonl", round=2)
    assert _rows(tmp_path / "kto.jsonl") == labels


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"prompt": "p", "text": "x"}', "expected \\{prompt, chosen, rejected\\} or \\{prompt, completion, label\\}"),
        ('{"prompt": "p", "chosen": "x"}', "'rejected' must be a non-empty string"),
        ('{"prompt": "", "chosen": "x", "rejected": "y"}', "'prompt' must be a non-empty string"),
        ('{"prompt": "p", "chosen": "x", "rejected": "x"}', "are the same text"),
        ('{"prompt": "p", "completion": "x", "label": "yes"}', "'label' must be true or false"),
        ('{"prompt": [{"role": "user", "content": "p"}], "completion": "x", "label": true}', "list of messages"),
    ],
)
def test_malformed_import_names_file_and_line_and_stores_nothing(store, tmp_path, bad, message):
    src = tmp_path / "in.jsonl"
    good = json.dumps({"prompt": "p", "chosen": "x", "rejected": "y"})
    src.write_text(f"{good}\n\n{bad}\n{good}\n")
    with pytest.raises(AlignlabError, match=message) as err:
        import_jsonl(store, src, rater="ann")
    assert str(err.value).startswith(f"{src}:3: ")
    assert "\n" not in str(err.value)
    for table in ("prompts", "responses", "judgements"):
        assert store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


def test_import_missing_or_empty_file(store, tmp_path):
    with pytest.raises(AlignlabError, match="file not found"):
        import_jsonl(store, tmp_path / "none.jsonl", rater="ann")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(AlignlabError, match="no rows to import"):
        import_jsonl(store, tmp_path / "empty.jsonl", rater="ann")


def test_exports_pass_the_training_data_validator(store, tmp_path):
    """The contract with `alignlab train`: what export writes, data validation accepts as that method's kind."""
    from alignlab.data.formats import METHOD_KIND, validate

    a, b, c = _responses(store, "P", "ra", "rb", "rc")
    store.add_judgement("pick", a, "a", other_response_id=b, rater="ann")
    store.add_judgement("thumb", a, 1, rater="ann")
    store.add_judgement("thumb", c, -1, rater="ann")
    store.add_judgement("rewrite", b, rewrite_text="rb, but better", rater="ann")
    for fmt in ("dpo", "kto", "sft"):
        export(store, fmt, tmp_path / f"{fmt}.jsonl")
        report = validate(tmp_path / f"{fmt}.jsonl", kind=METHOD_KIND[fmt])
        assert report.ok, report.errors
        assert len(report.rows) == len(_rows(tmp_path / f"{fmt}.jsonl")) > 0


def test_a_raters_latest_score_stands_for_kto_too(store, tmp_path):
    """alice scores an answer 1, then 5: DPO used the 5 alone, KTO saw both and dropped the answer as a conflict."""
    a, b = _responses(store, "Is water wet?", "Yes, shockingly.", "Water makes things wet.")
    store.add_judgement("score", a, 1, rater="alice")
    store.add_judgement("score", a, 5, rater="alice")
    store.add_judgement("score", b, 1, rater="bob")
    summary = export(store, "kto", tmp_path / "k.jsonl")
    assert summary["conflicts"] == []
    assert _rows(tmp_path / "k.jsonl") == [
        {"prompt": "Is water wet?", "completion": "Yes, shockingly.", "label": True},
        {"prompt": "Is water wet?", "completion": "Water makes things wet.", "label": False}]


def test_text_holding_a_unicode_line_separator_survives_export_and_import(store, tmp_path):
    """Export writes U+2028 as it is; import split lines with str.splitlines, which breaks a row on it."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "p", "chosen": "line one\u2028line two", "rejected": "y"}, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    assert import_jsonl(store, src, rater="ann")["pairs"] == 1


def test_rows_the_training_check_would_refuse_are_left_out(store, tmp_path):
    """A rewrite that adds a trailing space, or a pick over an empty answer, was exported, and `alignlab train`
    then stopped on the file ("chosen is identical to rejected", "'rejected' is empty")."""
    from alignlab.data.formats import METHOD_KIND, validate

    a, b, c = _responses(store, "P", "Canberra.", "", "Fine.")
    store.add_judgement("rewrite", a, rewrite_text="Canberra. ", rater="ann")
    store.add_judgement("pick", c, "a", other_response_id=b, rater="ann")
    store.add_judgement("thumb", b, -1, rater="ann")
    store.add_judgement("thumb", c, 1, rater="ann")
    dpo = export(store, "dpo", tmp_path / "dpo.jsonl")
    assert dpo["rows"] == 0 and not (tmp_path / "dpo.jsonl").exists()  # the thumbs pair is the pick's: empty
    assert dpo["skipped"]["identical_texts"] == 1 and dpo["skipped"]["empty_texts"] == 2
    kto = export(store, "kto", tmp_path / "kto.jsonl")
    assert _rows(tmp_path / "kto.jsonl") == [{"prompt": "P", "completion": "Fine.", "label": True}]
    assert kto["skipped"]["empty_texts"] == 1
    assert len(validate(tmp_path / "kto.jsonl", kind=METHOD_KIND["kto"]).rows) == 1


def test_prompts_of_the_projects_heldout_file_stay_out_of_training(store, tmp_path):
    """`feedback import` stored prompts with no split and export looked only at the stored split: three rows on the
    first three prompts of data/heldout.jsonl exported as "wrote 3 dpo rows", and so did a prompt moved into
    heldout.jsonl after it was sampled."""
    held = ["Capital of Peru?", "Is 91 prime?", "Who wrote Emma?"]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"prompt": p, "chosen": "Lima, obviously.", "rejected": "Lima."}) + "\n"
                           for p in held))
    import_jsonl(store, src, rater="alice", heldout={f" {held[0]}", *held[1:]})  # compared stripped
    splits = dict(store.conn.execute("SELECT text, split FROM prompts").fetchall())
    assert splits == dict.fromkeys(held, "heldout")
    (sampled,) = _responses(store, "Why is the sky blue?", "Rayleigh, obviously.")  # stored before it was held out
    store.add_judgement("thumb", sampled, 1, rater="alice")
    late = export(store, "kto", tmp_path / "k.jsonl", heldout={"Why is the sky blue?"})
    assert late["rows"] == 0 and not (tmp_path / "k.jsonl").exists() and late["skipped"]["heldout_prompts"] == 1
    dpo = export(store, "dpo", tmp_path / "d.jsonl")
    assert dpo["rows"] == 0 and dpo["skipped"]["heldout_prompts"] == 3  # the imported picks, by their stored split
    assert export(store, "dpo", tmp_path / "all.jsonl", heldout={"Why is the sky blue?"}, include_heldout=True)["rows"] == 3


def test_skip_counts_describe_the_chosen_format(store, tmp_path):
    """Three held-out thumbs printed "skipped: heldout_prompts 3" for an SFT export that lost nothing; a score of 3
    that the same rater later raised to 5 was counted among "neutral_scores" beside the row it became."""
    for text in ("a", "b", "c"):
        (rid,) = _responses(store, f"held {text}?", text)
        store.add_judgement("thumb", rid, 1, rater="ann")
    store.conn.execute("UPDATE prompts SET split = 'heldout'")
    sft = export(store, "sft", tmp_path / "s.jsonl")
    assert "heldout_prompts" not in sft["skipped"]
    assert export(store, "kto", tmp_path / "k.jsonl")["skipped"]["heldout_prompts"] == 3
    (rid,) = _responses(store, "Is water wet?", "Yes, shockingly.")
    store.add_judgement("score", rid, 3, rater="ann")
    store.add_judgement("score", rid, 5, rater="ann")
    kto = export(store, "kto", tmp_path / "k.jsonl")
    assert _rows(tmp_path / "k.jsonl") == [{"prompt": "Is water wet?", "completion": "Yes, shockingly.", "label": True}]
    assert kto["skipped"]["neutral_scores"] == 0


def test_heldout_prompts_counts_the_rows_the_format_would_have_made(store, tmp_path):
    """A held-out prompt with a score of 3 and a tie: KTO said heldout_prompts 1 and DPO 2, though --include-heldout
    gave neither a row. The count is what --include-heldout adds."""
    a, b = _responses(store, "Capital of Peru?", "Lima.", "Lima, obviously.")
    store.add_judgement("score", a, 3, rater="ann")
    store.add_judgement("pick", a, "tie", other_response_id=b, rater="ann")
    (kept,) = _responses(store, "Is water wet?", "Yes, shockingly.")
    store.add_judgement("thumb", kept, 1, rater="ann")
    held = {"Capital of Peru?"}

    def left_out(fmt):
        summary = export(store, fmt, tmp_path / "out.jsonl", heldout=held)
        every = export(store, fmt, tmp_path / "all.jsonl", heldout=held, include_heldout=True)
        return summary["skipped"].get("heldout_prompts", 0), every["rows"] - summary["rows"]

    assert [left_out(fmt) for fmt in ("kto", "dpo", "sft")] == [(0, 0)] * 3
    store.add_judgement("thumb", b, 1, rater="bob")  # KTO: b up, a down; DPO: b over a, the rewrite over a; SFT: it
    store.add_judgement("thumb", a, -1, rater="bob")
    store.add_judgement("rewrite", a, rewrite_text="Lima, as every atlas says.", rater="bob")
    counts = [left_out(fmt) for fmt in ("kto", "dpo", "sft")]
    assert all(n == added for n, added in counts) and [n for n, _ in counts] == [2, 2, 1]


def test_an_export_never_overwrites_the_database_or_the_prompt_files(store, tmp_path):
    """`feedback export -f dpo --db self.db --out self.db` said "wrote 4 dpo rows to self.db": every judgement gone."""
    a, b = _responses(store, "P", "ra", "rb")
    store.add_judgement("pick", a, "a", other_response_id=b, rater="ann")
    prompts = tmp_path / "data" / "prompts.jsonl"
    prompts.parent.mkdir()
    prompts.write_text('{"prompt": "P"}\n')
    db = store.path
    before = {p: p.read_bytes() for p in (db, prompts)}
    for out, what in [(db, "the feedback database"), (tmp_path / "sub" / ".." / db.name, "the feedback database"),
                      (f"{db}-wal", "the feedback database's wal file"), (prompts, "the project's prompt file")]:
        with pytest.raises(AlignlabError) as err:
            export(store, "dpo", out, protect=[prompts])
        assert str(err.value).startswith(f"--out {out} is {what}") and str(err.value).endswith("pass another --out path")
    assert {p: p.read_bytes() for p in (db, prompts)} == before
    assert export(store, "dpo", tmp_path / "fine.jsonl", protect=[prompts])["rows"] == 1


def test_import_refuses_an_automatic_raters_name_and_a_busy_database(store, tmp_path, monkeypatch):
    """`feedback import --rater judge:gpt-4o` stored a person's file as the judge's judgements; a database another
    process kept locked ended the import with "OperationalError: database is locked"."""
    import sqlite3

    from alignlab.feedback import store as store_module

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "P", "chosen": "x", "rejected": "y"}) + "\n")
    with pytest.raises(AlignlabError) as err:
        import_jsonl(store, src, rater="judge:gpt-4o")
    assert str(err.value).startswith("the rater name 'judge:gpt-4o' belongs to an automatic rater") and str(
        err.value).endswith("pass --automatic if they came from that rater, or --rater with a person's name")
    monkeypatch.setattr(store_module, "BUSY_MS", 200)
    with open_store(store.path) as waiting:  # opened with the short wait
        holder = sqlite3.connect(store.path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(AlignlabError) as err:
                import_jsonl(waiting, src, rater="ann")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert str(err.value) == (f"{store.path} is busy: another alignlab process is writing to it; nothing was imported"
                              " — try again when it is done")
    assert store.conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 0


def test_an_automatic_raters_verdicts_import_with_automatic(store, tmp_path):
    """Judge verdicts made offline could not be imported at all once `--rater judge:<model>` was refused; --automatic
    stores them under the judge's name, and refuses a person's name (that would file a judge's verdicts as theirs)."""
    src = tmp_path / "verdicts.jsonl"
    src.write_text(json.dumps({"prompt": "P", "chosen": "x", "rejected": "y"}) + "\n")
    with pytest.raises(AlignlabError, match="^--automatic stores the rows as an automatic rater's, but 'ann' is not"):
        import_jsonl(store, src, rater="ann", automatic=True)
    assert import_jsonl(store, src, rater="judge:qwen2.5-7b", automatic=True)["pairs"] == 1
    assert [(j["kind"], j["value"], j["rater"]) for j in store.judgements()] == [("pick", "a", "judge:qwen2.5-7b")]

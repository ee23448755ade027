"""Turn stored judgements into training files (TRL's plain-text dataset formats, as JSONL), and back.

  dpo  {"prompt", "chosen", "rejected"}   from A/B picks, rewrites (rewrite > original), thumbs up vs
                                          down on the same prompt, and scores on the same prompt that
                                          differ by 2 or more (compared within one rater: raters' scales differ)
  kto  {"prompt", "completion", "label"}  from thumbs, and scores (>= 4 desirable, <= 2 undesirable)
  sft  {"prompt", "completion"}           from rewrites

Rows are keyed by text, so duplicates (two raters agreeing, a response sampled twice) become one row.
Disagreements are not averaged away: a pair preferred both ways (by any mix of picks, thumbs, scores,
rewrites) or a completion labelled both desirable and undesirable is left out and listed under
``conflicts`` in the returned summary, with the ids of the judgements involved. Ties are skipped.
A rater's latest score on a response stands; undone judgements never count.

Output is deterministic (rows ordered by prompt id, then the first judgement behind them) and written
atomically (a temporary file in the same directory, fsync, then rename: fsutil).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from alignlab import methods
from alignlab.errors import AlignlabError
from alignlab.feedback.store import AUTOMATIC_RATERS, Store, automatic_rater, busy

FORMATS = (methods.DPO, methods.KTO, methods.SFT)  # each named for the method that trains on it
SCORE_GAP = 2  # minimum score difference that makes a pair
SCORE_UP, SCORE_DOWN = 4, 2  # KTO: >= 4 desirable, <= 2 undesirable


def export(store: Store, format: str, out_path: str | Path, round: int | None = None, include_heldout: bool = False,
           heldout: Iterable[str] = (), protect: Iterable[str | Path] = ()) -> dict[str, Any]:
    """Write the ``format`` dataset to ``out_path``; return what was written, skipped and why, and conflicts.

    Judgements on held-out prompts are left out unless asked for: those stored as held out (``compare``'s and
    ``sample``'s on the scorecard's prompts) and those whose text is in ``heldout`` (the project's held-out prompts
    now: an import, or a prompt moved there after sampling). ``heldout_prompts`` counts the rows they would have
    made in this format: held-out thumbs cost an SFT export nothing, a held-out tie no DPO row.
    ``out_path`` may not be the database (or its journal files) nor a file in ``protect``. With no rows nothing is
    written: an empty file would pass for a finished export, and replace a good one."""
    if format not in FORMATS:
        raise AlignlabError(f"unknown export format '{format}'", fix=f"use one of {', '.join(FORMATS)}")
    refuse_out(Path(out_path), store.path, protect)
    held = {text.strip() for text in heldout}
    judgements = store.judgements(round=round)
    kept, skipped = [], []
    for j in judgements:
        out = not include_heldout and (j.get("prompt_split") == "heldout" or j["prompt"].strip() in held)
        (skipped if out else kept).append(j)
    build = {methods.DPO: _dpo, methods.KTO: _kto, methods.SFT: _sft}[format]
    rows, summary = build(kept)
    # the rows the held-out judgements would have made (what --include-heldout adds): a tie, a score of 3 or a thumb
    # in an SFT export cost nothing. Every row is one prompt's, so the two sets of rows never overlap.
    if lost := len(build(skipped)[0]):
        summary["skipped"]["heldout_prompts"] = lost
    if rows:
        _write_jsonl(Path(out_path), rows)
    return {"format": format, "path": str(out_path), "round": round, "rows": len(rows), **summary}


def refuse_out(out: Path, db: Path, protect: Iterable[str | Path]) -> None:
    """`--out feedback.db` replaced every judgement with JSONL; `--out data/prompts.jsonl` the project's prompts."""
    def same(a: Path, b: Path) -> bool:
        try:
            return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
        except OSError:
            return False

    for suffix in ("", "-wal", "-shm", "-journal"):
        if same(out, Path(f"{db}{suffix}")):
            what = f"the feedback database's {suffix[1:]} file" if suffix else "the feedback database"
            raise AlignlabError(f"--out {out} is {what} ({db}): exporting there would destroy the judgements",
                                fix="pass another --out path")
    for path in protect:
        if same(out, Path(path)):
            raise AlignlabError(f"--out {out} is the project's prompt file {path}: exporting there would replace it",
                                fix="pass another --out path")


def _dpo(judgements: list[dict]) -> tuple[list[dict], dict]:
    pairs: dict[tuple, dict] = {}  # (prompt_id, chosen, rejected) -> {prompt, source, ids}
    skipped = {"ties": 0, "identical_texts": 0, "empty_texts": 0, "duplicates": 0}

    def add(j: dict, chosen: str, rejected: str, source: str, ids: list[int]) -> None:
        # as the training data check reads them: an empty side, or sides that differ in white space only, would
        # stop `alignlab train` on the exported file
        if not chosen.strip() or not rejected.strip():
            skipped["empty_texts"] += 1
            return
        if chosen.strip() == rejected.strip():
            skipped["identical_texts"] += 1
            return
        key = (j["prompt_id"], chosen, rejected)
        if key in pairs:
            skipped["duplicates"] += 1
            pairs[key]["ids"].extend(ids)
        else:
            pairs[key] = {"prompt": j["prompt"], "source": source, "ids": list(ids)}

    for j in judgements:
        if j["kind"] == "pick":
            if j["value"] == "tie":
                skipped["ties"] += 1
            elif j["value"] == "a":
                add(j, j["response"], j["other_response"], "pick", [j["id"]])
            else:
                add(j, j["other_response"], j["response"], "pick", [j["id"]])
        elif j["kind"] == "rewrite":
            add(j, j["rewrite_text"], j["response"], "rewrite", [j["id"]])

    # thumbs: every consistently-up completion beats every consistently-down one for the same prompt
    thumbs = _labels([j for j in judgements if j["kind"] == "thumb"])
    by_prompt: dict[int, list] = defaultdict(list)
    for (pid, text), lab in thumbs.items():
        if len(lab["labels"]) == 1:
            by_prompt[pid].append((text, lab))
    for pid, items in by_prompt.items():
        for up_text, up in items:
            for down_text, down in items:
                if up["labels"] == {True} and down["labels"] == {False}:
                    add(up["first"], up_text, down_text, "thumb", up["ids"] + down["ids"])

    # scores: within one rater and prompt, the rater's latest score per response; a gap >= 2 makes a pair
    latest: dict[tuple, dict] = {}
    for j in judgements:
        if j["kind"] == "score":
            latest[(j["rater"], j["prompt_id"], j["response_id"])] = j
    groups: dict[tuple, list] = defaultdict(list)
    for (rater, pid, _), j in sorted(latest.items(), key=lambda kv: kv[1]["id"]):
        groups[(rater, pid)].append(j)
    for group in groups.values():
        for hi in group:
            for lo in group:
                if hi["value"] - lo["value"] >= SCORE_GAP:
                    add(min(hi, lo, key=lambda x: x["id"]), hi["response"], lo["response"], "score", [hi["id"], lo["id"]])

    conflicts = []
    for (pid, chosen, rejected), pair in pairs.items():
        reverse = pairs.get((pid, rejected, chosen))
        if reverse is not None and chosen < rejected:  # report each conflicting pair once
            conflicts.append(
                {"kind": "pair", "prompt_id": pid, "prompt": pair["prompt"], "texts": [chosen, rejected],
                 "judgement_ids": sorted(set(pair["ids"] + reverse["ids"]))}
            )
    clashing = {(c["prompt_id"], *c["texts"]) for c in conflicts} | {
        (c["prompt_id"], *reversed(c["texts"])) for c in conflicts
    }
    kept = sorted(
        ((key, pair) for key, pair in pairs.items() if key not in clashing),
        key=lambda kv: (kv[0][0], min(kv[1]["ids"]), kv[0][1], kv[0][2]),
    )
    by_source = {"pick": 0, "rewrite": 0, "thumb": 0, "score": 0}
    rows = []
    for (pid, chosen, rejected), pair in kept:
        by_source[pair["source"]] += 1
        rows.append({"prompt": pair["prompt"], "chosen": chosen, "rejected": rejected})
    return rows, {"by_source": by_source, "skipped": skipped, "conflicts": _sorted(conflicts)}


def _standing_scores(judgements: list[dict]) -> set[int]:
    """Ids of the scores that stand: a rater's latest on a response (as for pairs); an earlier one is replaced."""
    return set({(j["rater"], j["response_id"]): j["id"] for j in judgements if j["kind"] == "score"}.values())


def _labels(judgements: list[dict]) -> dict[tuple, dict]:
    """(prompt_id, completion text) -> the set of desirable/undesirable labels given to it, and by which judgements."""
    out: dict[tuple, dict] = {}
    standing = _standing_scores(judgements)
    for j in judgements:
        if j["kind"] == "score" and j["id"] not in standing:
            continue
        if j["kind"] == "thumb":
            label = j["value"] == 1
        elif j["kind"] == "score" and j["value"] >= SCORE_UP:
            label = True
        elif j["kind"] == "score" and j["value"] <= SCORE_DOWN:
            label = False
        else:
            continue
        entry = out.setdefault((j["prompt_id"], j["response"]), {"first": j, "labels": set(), "ids": [], "sources": []})
        entry["labels"].add(label)
        entry["ids"].append(j["id"])
        entry["sources"].append(j["kind"])
    return out


def _kto(judgements: list[dict]) -> tuple[list[dict], dict]:
    labels = _labels(judgements)
    standing = _standing_scores(judgements)  # a neutral score a later one replaced was not left out: it was replaced
    neutral = sum(1 for j in judgements if j["id"] in standing and SCORE_DOWN < j["value"] < SCORE_UP)
    repeats = sum(len(e["ids"]) - 1 for (_, t), e in labels.items() if len(e["labels"]) == 1 and t.strip())
    skipped = {"neutral_scores": neutral, "duplicates": repeats}
    conflicts, kept = [], []
    for (pid, text), e in labels.items():
        if not text.strip():  # an empty answer is no KTO row (the training data check refuses it)
            skipped["empty_texts"] = skipped.get("empty_texts", 0) + len(e["ids"])
        elif len(e["labels"]) > 1:
            conflicts.append({"kind": "label", "prompt_id": pid, "prompt": e["first"]["prompt"], "texts": [text],
                              "judgement_ids": sorted(e["ids"])})
        else:
            kept.append(((pid, min(e["ids"]), text), e))
    kept.sort(key=lambda kv: kv[0])
    by_source = {"thumb": 0, "score": 0}
    rows = []
    for (pid, _, text), e in kept:
        by_source[e["sources"][0]] += 1
        rows.append({"prompt": e["first"]["prompt"], "completion": text, "label": next(iter(e["labels"]))})
    desirable = sum(r["label"] for r in rows)
    summary = {"by_source": by_source, "desirable": desirable, "undesirable": len(rows) - desirable}
    return rows, {**summary, "skipped": skipped, "conflicts": _sorted(conflicts)}


def _sft(judgements: list[dict]) -> tuple[list[dict], dict]:
    seen: set[tuple] = set()
    rows, duplicates = [], 0
    for j in judgements:  # already in id order
        if j["kind"] != "rewrite":
            continue
        key = (j["prompt_id"], j["rewrite_text"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        rows.append((j["prompt_id"], j["id"], {"prompt": j["prompt"], "completion": j["rewrite_text"]}))
    rows.sort(key=lambda r: r[:2])
    return [r[2] for r in rows], {"by_source": {"rewrite": len(rows)}, "skipped": {"duplicates": duplicates}, "conflicts": []}


def _sorted(conflicts: list[dict]) -> list[dict]:
    return sorted(conflicts, key=lambda c: (c["prompt_id"], c["judgement_ids"]))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    from alignlab import fsutil

    if (blocker := fsutil.file_in_the_way(path.parent)) is not None:
        raise AlignlabError(f"{blocker} is a file, not a directory", fix="write the export elsewhere (--out)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


# --- import ---------------------------------------------------------------------------------------


def _parse_row(raw: str, where: str) -> dict:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as err:
        raise AlignlabError(f"not valid JSON ({err.msg})", where=where) from err
    if not isinstance(row, dict):
        raise AlignlabError("expected a JSON object", where=where)
    if "chosen" in row or "rejected" in row:
        fields, shape = ("prompt", "chosen", "rejected"), "pair"
    elif "completion" in row and "label" in row:
        fields, shape = ("prompt", "completion"), "label"
        if not isinstance(row["label"], bool):
            raise AlignlabError(f"'label' must be true or false, not {row['label']!r}", where=where)
    else:
        raise AlignlabError(
            "expected {prompt, chosen, rejected} or {prompt, completion, label}", where=where
        )
    for field in fields:
        value = row.get(field)
        if isinstance(value, list):
            raise AlignlabError(f"'{field}' is a list of messages; only plain-text rows can be imported", where=where)
        if not isinstance(value, str) or not value.strip():
            raise AlignlabError(f"'{field}' must be a non-empty string", where=where)
    if shape == "pair" and row["chosen"] == row["rejected"]:
        raise AlignlabError("'chosen' and 'rejected' are the same text", where=where)
    return {"shape": shape, **{k: row[k] for k in (*fields, "label") if k in row}}


def import_jsonl(store: Store, path: str | Path, rater: str, round: int = 0,
                 heldout: Iterable[str] = (), automatic: bool = False) -> dict[str, int]:
    """Import DPO pairs (stored as A/B picks) and KTO rows (stored as thumbs) from a JSONL file.

    Every row is validated first (errors name file:line); then everything goes in one transaction, so a
    bad file stores nothing. Prompts and identical responses already in the store are reused; prompts in
    ``heldout`` (the project's held-out prompts) are stored held out, so export leaves them out of training.
    ``automatic``: the rows are an automatic rater's verdicts (a judge run offline), stored under its name.
    """
    path = Path(path)
    if not rater or not rater.strip():
        raise AlignlabError("importing needs a rater name", fix="pass --rater NAME")
    _check_import_rater(rater, automatic)
    from alignlab.data.formats import read_jsonl

    if not path.is_file():
        raise AlignlabError(f"file not found: {path}")
    # JSONL lines end at \n only: str.splitlines also broke a row inside text holding U+2028 (which export writes)
    parsed, errors = read_jsonl(path)
    if errors:
        raise AlignlabError(errors[0], fix="fix the row (one JSON object per line, UTF-8)")
    rows = [_parse_row(json.dumps(obj), f"{path}:{n}") for n, obj in parsed]
    if not rows:
        raise AlignlabError("no rows to import", where=str(path))

    try:
        return _store_rows(store, rows, rater, round, f"import:{path.name}", {text.strip() for text in heldout})
    except sqlite3.OperationalError as err:
        if busy(err):
            raise store.busy_error("nothing was imported") from err
        raise


def _check_import_rater(rater: str, automatic: bool) -> None:
    """A judgement under an automatic rater's name is read as that rater's verdict: a person's file may not carry one
    by accident, and --automatic may not put a person's name on a judge's verdicts."""
    if automatic and not automatic_rater(rater):
        raise AlignlabError(f"--automatic stores the rows as an automatic rater's, but '{rater.strip()[:40]}' is not "
                            f"one ({', '.join(AUTOMATIC_RATERS)})",
                            fix="pass the rater's name (e.g. --rater judge:<model>), or leave out --automatic")
    if automatic_rater(rater) and not automatic:
        raise AlignlabError(f"the rater name '{rater.strip()[:40]}' belongs to an automatic rater, whose judgements "
                            "the rows would be read as", fix="pass --automatic if they came from that rater, or "
                                                            "--rater with a person's name")


def _store_rows(store: Store, rows: list[dict], rater: str, round: int, run: str, held: set[str]) -> dict[str, int]:
    """All rows in one transaction (a bad or interrupted import stores nothing); how many of each shape."""
    counts = {"rows": len(rows), "pairs": 0, "labels": 0}
    with store.transaction():

        def response(pid: int, text: str) -> int:
            return store.find_response(pid, text) or store.add_response(pid, text, run=run, round=round)

        for row in rows:
            pid = store.add_prompt(row["prompt"], source=run, split="heldout" if row["prompt"].strip() in held else None)
            if row["shape"] == "pair":
                chosen, rejected = response(pid, row["chosen"]), response(pid, row["rejected"])
                store.add_judgement("pick", chosen, "a", other_response_id=rejected, rater=rater, round=round)
                counts["pairs"] += 1
            else:
                rid = response(pid, row["completion"])
                store.add_judgement("thumb", rid, 1 if row["label"] else -1, rater=rater, round=round)
                counts["labels"] += 1
    return counts

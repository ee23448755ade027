"""The loop's guards: held-out prompts stay out of training, a round keeps its method and its data, a round with
nothing to compare or rate says so instead of waiting forever, a stop between a step's write and its record is
not done twice, and a bad training setting fails before anything is sampled."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from alignlab.config import apply_overrides
from alignlab.errors import AlignlabError
from alignlab.feedback.store import Store
from alignlab.rewards import register_reward
from alignlab.rundir import read_run
from alignlab.workflows.loop import LoopSettings, run_loop
from helpers import vowel_share

register_reward("guards_vowels", lambda: vowel_share, "share of vowels (tests)")
register_reward("guards_flat", lambda: (lambda prompts, completions, **kw: [0.5] * len(completions)), "one score (tests)")

FAST = dict(rater="reward:guards_vowels", per_round=3, n=2, eval_prompts=2, max_new_tokens=8, temperature=1.0, keep_unfinished=True,
            eval_temperature=1.0, eval_rater="reward:persona_heuristic", poll_seconds=0.1)
QUIET = dict(echo=lambda _: None)


def _trigger(db: Path, column: str) -> None:
    """Make SQLite refuse to record ``column`` of a round, as a stop right after the step's own write would leave it."""
    conn = sqlite3.connect(str(db))
    conn.execute(f"CREATE TRIGGER stop_{column} BEFORE UPDATE OF {column} ON rounds WHEN NEW.{column} IS NOT NULL "
                 "BEGIN SELECT RAISE(ABORT, 'stopped before the record'); END")
    conn.commit()
    conn.close()


def _drop_trigger(db: Path, column: str) -> None:
    conn = sqlite3.connect(str(db))
    conn.execute(f"DROP TRIGGER stop_{column}")
    conn.commit()
    conn.close()


def _in_thread(fn, timeout: float = 180.0):
    """Run ``fn`` on a daemon thread; (finished, result or exception). A loop that waits forever does not finish."""
    out: dict = {}

    def go():
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            out["error"] = err

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive(), out.get("error", out.get("value"))


def test_a_heldout_prompt_in_the_train_file_is_never_trained_on(project):
    """Two held-out prompts put at the top of prompts.jsonl were round 1's train prompts, and the same round scored
    them as held-out."""
    proj, cfg = project
    data = proj / cfg.data_dir
    held = [json.loads(x) for x in (data / "heldout.jsonl").read_text().splitlines()[:2]]
    (data / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held) + (data / "prompts.jsonl").read_text())
    seen: list[str] = []
    (row,) = run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), echo=seen.append)
    assert row["status"] == "done"
    texts = {r["prompt"] for r in held}
    with Store(proj / "feedback.db") as store:
        sampled = {x["prompt"] for x in store.round_responses(1)}
    assert len(sampled) == 3 and not sampled & texts
    assert not {json.loads(x)["prompt"] for x in Path(row["data"]).read_text().splitlines()} & texts
    assert any("2 prompt(s) of" in line and "heldout.jsonl" in line for line in seen)


def test_a_train_file_of_heldout_prompts_only_is_one_line_at_the_start(project):
    """It ran a round's set-up, then said 'every train prompt was used in an earlier round' with no earlier round."""
    proj, cfg = project
    data = proj / cfg.data_dir
    (data / "prompts.jsonl").write_text((data / "heldout.jsonl").read_text())
    with pytest.raises(AlignlabError, match="every prompt of .*prompts.jsonl is also in .*heldout.jsonl"):
        run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), **QUIET)
    with Store(proj / "feedback.db") as store:
        assert not store.round_responses(1)


def test_a_sampled_round_keeps_its_method_and_resumes_only_its_own_data(project):
    """A DPO round stopped in training, rerun with --method kto, set its picks aside ("no kto rows") and, rerun again,
    resumed the DPO checkpoint as KTO; rerun after new judgements it resumed a checkpoint trained on other rows."""
    proj, cfg = project
    cfg = apply_overrides(cfg, {"train.max_steps": 4, "train.save_steps": 2})
    (row,) = run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), **QUIET)
    run = Path(row["run_dir"])
    info = read_run(run)
    (run / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))  # as Ctrl-C at step 4 leaves it
    with Store(proj / "feedback.db") as store:
        store.update_round(1, status="running")
        picks = store.judgements(round=1)

    with pytest.raises(AlignlabError, match="round 1 was sampled for dpo, not kto") as err:
        run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "method": "kto"}), **QUIET)
    assert "--method dpo" in err.value.fix
    with Store(proj / "feedback.db") as store:
        assert store.judgements(round=1) == picks and store.round_row(1)["method"] == "dpo"
    assert read_run(run)["method"] == "dpo" and sorted(p.name for p in run.parent.iterdir()) == [run.name]

    # a person reverses every pick while the round was stopped: the round's rows are not what the checkpoint saw
    with Store(proj / "feedback.db") as store:
        store.undo_round(1, "reward:guards_vowels")
        for j in picks:
            if j["value"] == "a":
                store.add_judgement("pick", j["response_id"], "b", other_response_id=j["other_response_id"], rater="ann")
    seen: list[str] = []
    (again,) = run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), echo=seen.append)
    assert again["status"] == "done" and again["run_dir"] != str(run)
    assert not any("continuing the interrupted" in line for line in seen)
    events = [json.loads(x).get("event") for x in (Path(again["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert "resumed" not in events


def test_answers_cut_before_any_sentence_ended_are_left_out_and_the_round_says_how_many(project):
    """A loop round stored an answer cut at --max-new-tokens mid-sentence and trained on it as a whole answer; `sample`
    already left those out. Now the round leaves them out too and says how many, and when nothing comparable is
    left its error asks for a higher --max-new-tokens, not another temperature."""
    from alignlab.eval.correct import unfinished

    proj, cfg = project
    seen: list[str] = []
    settings = LoopSettings(rounds=1, **{**FAST, "keep_unfinished": False})
    try:
        run_loop(proj, cfg, settings, echo=seen.append)
    except AlignlabError as err:  # the random tiny model rarely ends a sentence in 8 tokens
        assert ("cut before any sentence ended were left out" in str(err) or "every answer was cut" in str(err))
        assert "a higher --max-new-tokens" in err.fix
    said = [line for line in seen if "before any sentence ended and are left out" in line]
    assert len(said) == 1 and said[0].startswith("round 1: ") and "--max-new-tokens 8" in said[0], seen
    left = int(said[0].split()[2])
    with Store(proj / "feedback.db") as store:
        kept = store.round_responses(1)
    assert left > 0 and len(kept) <= 6 - left
    assert not any(unfinished(x["text"]) for x in kept)


def test_a_round_whose_every_answer_was_cut_says_so_even_for_a_person_thumbing(project, monkeypatch):
    """With a person rating thumbs (KTO) a round whose answers were all left out as unfinished waited for 0 ratings,
    then said "0 judgement(s) gave no kto rows (all ties?)"; now it stops at once and names the token cap."""
    monkeypatch.delenv("CI", raising=False)  # under CI a person rater is refused before sampling
    proj, cfg = project
    settings = LoopSettings(rounds=1, **{**FAST, "rater": "person:ann", "method": "kto", "keep_unfinished": False,
                                          "max_new_tokens": 2})
    finished, got = _in_thread(lambda: run_loop(proj, cfg, settings, **QUIET), timeout=120)
    assert finished and isinstance(got, AlignlabError), got
    assert str(got).startswith("round 1: every answer was cut at --max-new-tokens 2 before any sentence ended (6 left "
                               "out)") and "--keep-unfinished" in got.fix


def test_a_round_without_two_different_answers_is_sampled_again(project):
    """Near temperature 0 every prompt kept one answer: the rater judged nothing, every rerun failed with "rerun with
    a rater that separates the answers", and a higher --temperature did not help (the same answers were judged).
    The rerun is rated by a person: the tiny model's greedy answer is empty, and the vowel rater's worst answer (a
    pick against an empty answer exports no row)."""
    proj, cfg = project
    with pytest.raises(AlignlabError, match="round 1: no prompt got two different answers") as err:
        run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "temperature": 1e-4}), **QUIET)
    assert "--temperature" in err.value.fix
    with Store(proj / "feedback.db") as store:
        first = store.round_responses(1)
        assert store.count_judgements(1) == 0 and store.round_row(1)["judgements"] is None
    assert len({x["prompt"] for x in first}) == 3 and len(first) == 3  # one answer each: alike answers are stored once

    threading.Thread(target=_person, args=(proj, ["a"] * 20), daemon=True).start()
    never = threading.Event()
    finished, got = _in_thread(lambda: run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "rater": "person:ann"}),
                                                input_fn=lambda _: never.wait(), **QUIET))
    assert finished and not isinstance(got, BaseException), got
    (row,) = got
    assert row["status"] == "done" and row["pairs"] >= 1
    with Store(proj / "feedback.db") as store:
        again = store.round_responses(1)
    assert {x["prompt"] for x in again} == {x["prompt"] for x in first}  # the same prompts, sampled again
    assert {x["id"] for x in first} < {x["id"] for x in again} and row["responses"] == len(again)


def _person(proj: Path, keys: list[str]) -> None:
    """`alignlab rate --round 1 --mode pair` as ann, in another "terminal", once round 1 has pairs to rate."""
    from alignlab.feedback.rate import rate

    with Store(proj / "feedback.db") as store:
        deadline = time.monotonic() + 120
        while not store.pending_pairs("ann", round=1) and time.monotonic() < deadline:
            time.sleep(0.1)
        answers = iter(keys)
        rate(store, "ann", mode="pair", round=1, input_fn=lambda _: next(answers, "q"), output_fn=lambda _: None)


def test_a_person_who_calls_every_pair_a_tie_is_told_so(project):
    """Every pick a tie: the loop said "keep rating" with a target of one more judgement than there were pairs, and
    waited forever."""
    proj, cfg = project
    threading.Thread(target=_person, args=(proj, ["t"] * 10), daemon=True).start()
    never = threading.Event()
    finished, got = _in_thread(lambda: run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "rater": "person:ann"}),
                                                input_fn=lambda _: never.wait(), **QUIET))
    assert finished, "the loop still waits for judgements nobody can give"
    assert isinstance(got, AlignlabError) and "by ann gave no dpo rows (all ties?)" in str(got)
    with Store(proj / "feedback.db") as store:
        assert store.round_row(1)["judgements"] is None and store.count_judgements(1) == 0  # set aside, kept as undone


def test_a_person_is_asked_for_no_more_picks_than_there_are_pairs(project, monkeypatch):
    """Only one of the round's prompts has two different answers: the loop waited for one pick per prompt (2), and
    the one pair there is could give only 1. Its stdin is no terminal (closed, as in the background): it offered
    Enter, which no one could press, and the person rates in another process meanwhile."""
    import os
    import sys

    proj, cfg = project
    monkeypatch.delenv("CI", raising=False)  # under CI, refused (the next test)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    with Store(proj / "feedback.db") as store:
        store.update_round(1, method="dpo", rater="ann", prompts=2, responses=3)
        a, b = store.add_prompts(["Why is the sea salty?", "Name a prime number."])
        common = dict(model=cfg.model, run=None, round=1)
        store.add_responses([{"prompt_id": a, "text": "Rivers carry salt into it.", **common},
                             {"prompt_id": a, "text": "Salt, obviously.", **common},
                             {"prompt_id": b, "text": "Seven.", **common}])
    threading.Thread(target=_person, args=(proj, ["a"]), daemon=True).start()
    seen: list[str] = []
    finished, got = _in_thread(lambda: run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "rater": "person:ann"}),
                                                echo=seen.append))
    assert finished, "the loop still waits for a second pick with one pair to pick from"
    assert not isinstance(got, BaseException), got
    (row,) = got
    assert row["status"] == "done" and row["judgements"] == 1 and row["pairs"] == 1
    assert any("Training starts at 1 judgements (or when every answer is rated)." in line for line in seen), seen
    assert not any("Enter" in line for line in seen), seen


def test_under_ci_a_person_rater_with_no_terminal_is_refused_before_anything_runs(project, monkeypatch):
    """`CI=true alignlab loop ... </dev/null` with the default person rater sampled a round, then printed "0/4
    judgements" and waited forever: no one rates in CI."""
    import os
    import sys

    proj, cfg = project
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    finished, got = _in_thread(lambda: run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "rater": "person"}),
                                                **QUIET), timeout=60)
    assert finished, "the loop waits for judgements no one gives"
    assert isinstance(got, AlignlabError), got
    assert "the loop's rater is a person, and this runs under CI (CI=true) with no terminal" in str(got)
    assert "--rater scorecard" in got.fix
    with Store(proj / "feedback.db") as store:
        assert store.round_responses(1) == []  # refused before the round sampled


def _stopped_before_recording(proj: Path, cfg, column: str) -> Path:
    """A round stopped (a real SQLite trigger refusing the write) when it records its ``column``: the feedback.db."""
    db = proj / "feedback.db"
    Store(db).close()
    _trigger(db, column)
    with pytest.raises(sqlite3.DatabaseError, match="stopped before the record"):
        run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), **QUIET)
    _drop_trigger(db, column)
    return db


def test_answers_stored_before_a_stop_are_the_rounds_answers(project):
    """Stopped after the round's answers were stored and before the round recorded them, the rerun sampled fresh
    prompts into the same round: 8 answers to 4 prompts, and a record of 2 prompts and 4 answers."""
    proj, cfg = project
    db = _stopped_before_recording(proj, cfg, "responses")
    with Store(db) as store:
        stored = [x["id"] for x in store.round_responses(1)]
        assert stored and store.round_row(1)["responses"] is None  # stored, not recorded
    (row,) = run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), **QUIET)
    with Store(db) as store:
        assert [x["id"] for x in store.round_responses(1)] == stored  # not sampled again
        assert len({x["prompt_id"] for x in store.round_responses(1)}) == row["prompts"] == 3
    assert row["status"] == "done" and row["responses"] == len(stored)


def test_judgements_and_their_record_are_written_together(project):
    """Stopped after the rater's picks were stored and before the round recorded them, the rerun judged the round
    again: twice the picks standing, half of them recorded."""
    proj, cfg = project
    db = _stopped_before_recording(proj, cfg, "judgements")
    with Store(db) as store:
        assert store.count_judgements(1) == 0  # nothing stored without its record
    (row,) = run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), **QUIET)
    with Store(db) as store:
        assert row["status"] == "done" and store.count_judgements(1) == row["judgements"] >= 1


def test_a_bad_training_setting_fails_before_the_round_samples(project):
    """An unknown optimizer failed only after the round was sampled and rated, each try leaving an empty run folder."""
    proj, cfg = project
    cfg = apply_overrides(cfg, {"train.trainer_overrides": {"optim": "adamw_torchh"}})
    for _ in range(2):
        with pytest.raises(AlignlabError, match="optim"):
            run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), **QUIET)
    with Store(proj / "feedback.db") as store:
        assert store.round_responses(1) == [] and store.count_judgements(1) == 0
    runs = proj / cfg.runs_dir
    assert not runs.exists() or not any(runs.iterdir())


def test_a_round_refused_by_training_leaves_no_run_folder(project):
    """A round whose rows training refuses (all longer than train.max_length) left an empty run folder per try."""
    proj, cfg = project
    cfg = apply_overrides(cfg, {"train.max_length": 80, "train.max_prompt_length": 64})
    long = [{"prompt": "Please explain, in as much careful detail as you can manage, " + w * 30} for w in ("why ", "how ")]
    (proj / cfg.data_dir / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long * 2))
    with pytest.raises(AlignlabError, match="no valid rows"):
        run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "per_round": 2}), **QUIET)
    with Store(proj / "feedback.db") as store:
        assert store.round_row(1)["judgements"] >= 1  # refused by training, after the round was sampled and judged
    runs = proj / cfg.runs_dir
    assert not runs.exists() or not any(runs.iterdir())


def test_contrast_labels_warn_that_the_default_score_holds_the_same_contrast(project):
    """The default persona's held-out score combines the classifier with the voice contrast: labels by --rater
    contrast were scored by nearly their own signal (the same pick on 15 of 15 bundled pairs), with no warning.
    (The run stops at its bad training setting, before the contrast model would rate anything.)"""
    proj, cfg = project
    cfg = apply_overrides(cfg, {"train.trainer_overrides": {"optim": "adamw_torchh"}})
    settings = {k: v for k, v in FAST.items() if k != "eval_rater"}
    for eval_rater, warned in ((None, True), ("reward:persona_heuristic", False)):
        seen: list[str] = []
        with pytest.raises(AlignlabError):
            run_loop(proj, cfg, LoopSettings(rounds=1, **{**settings, "rater": "contrast", "eval_rater": eval_rater}),
                     echo=seen.append)
        assert any("same voice contrast that labels the rounds" in line for line in seen) is warned


def test_a_round_with_nothing_stored_names_the_cause():
    """A round whose answers all repeated ones the store holds said "every answer was cut ... (0 left out)" and asked
    for --keep-unfinished, which was given; one answer cut among many identical ones named the token cap alone."""
    from types import SimpleNamespace

    from alignlab.workflows.loop import _Loop

    s = LoopSettings(rounds=1, max_new_tokens=8, temperature=0.01)
    repeated = _Loop._nothing_to_rate(SimpleNamespace(unfinished=0, s=s), 1, {"responses": 0, "prompts": 0})
    assert "repeated one the feedback store already holds" in str(repeated) and "--temperature" in repeated.fix
    cut = _Loop._nothing_to_rate(SimpleNamespace(unfinished=6, s=s), 1, {"responses": 0, "prompts": 0})
    assert "every answer was cut at --max-new-tokens 8" in str(cut) and "(6 left out)" in str(cut)
    one = _Loop._nothing_to_rate(SimpleNamespace(unfinished=1, s=s), 1, {"responses": 11, "prompts": 6})
    assert one.fix.startswith("rerun `alignlab loop` with a higher --temperature (or another --seed) and a higher "
                              "--max-new-tokens than 8")
    most = _Loop._nothing_to_rate(SimpleNamespace(unfinished=9, s=s), 1, {"responses": 3, "prompts": 3})
    assert most.fix.startswith("rerun `alignlab loop` with a higher --max-new-tokens than 8 and a higher --temperature")

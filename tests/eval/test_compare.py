"""Blind comparison: a scripted person at the terminal, win rates, and the picks stored in a real SQLite file."""

from __future__ import annotations

import re

import pytest

from alignlab.eval import compare as cmp
from alignlab.feedback.store import open_store

ROWS = [{"prompt": f"question {i}?"} for i in range(6)]
SNARKY = [f"snarky answer {i}" for i in range(6)]
PLAIN = [f"plain answer {i}" for i in range(6)]


def scripted_person(log: list[str]):
    """Picks whichever shown answer is the snarky one for persona, the plain one for helpfulness."""
    state = {}

    def output(text: str) -> None:
        log.append(text)
        if "  1:" in text:
            first = text.split("  1:\n", 1)[1].split("\n", 1)[0].strip()
            state["snarky_first"] = first.startswith("snarky")

    answers = iter([])

    def input_fn(question: str) -> str:
        nonlocal answers
        if question.startswith("Which answer shows"):
            return "1" if state["snarky_first"] else "2"
        if question.startswith("Which answer is more helpful"):
            return "2" if state["snarky_first"] else "1"
        return next(answers)

    return input_fn, output


def test_person_picks_are_unblinded_correctly_and_revealed_after(tmp_path):
    log: list[str] = []
    inp, out = scripted_person(log)
    judge = cmp.PersonJudge("ann", "snarky", input_fn=inp, output_fn=out)
    result = cmp.compare(ROWS, SNARKY, PLAIN, judge, seed=3, names=("runs/x", "base"))
    assert result["persona"]["a"] == 6 and result["persona"]["b"] == 0
    assert result["helpful"]["b"] == 6
    assert result["persona"]["win_rate_a"][0] == 1.0 and result["helpful"]["win_rate_a"][0] == 0.0
    shown = {it["shown_first"] for it in result["items"]}
    assert shown == {"a", "b"}  # the blind order really varies
    prompt_blocks = [t for t in log if t.startswith("\nprompt:")]
    assert all("runs/x" not in t and "base" not in t for t in prompt_blocks)  # no source before the pick
    assert sum("1 was" in t for t in log) == 6  # revealed after each pick

    with open_store(tmp_path / "feedback.db") as store:
        n = cmp.store_picks(store, result, "ann", "tiny", ("x", None))
        picks = store.judgements()
    assert n == 6 and len(picks) == 6
    assert {p["value"] for p in picks} == {"tie"}  # snarkier but less helpful: never stored as a win


def test_quit_and_skip(tmp_path):
    keys = iter(["s", "1", "t", "q"])
    judge = cmp.PersonJudge("ann", "snarky", input_fn=lambda q: next(keys), output_fn=lambda t: None)
    result = cmp.compare(ROWS, SNARKY, PLAIN, judge, seed=0)
    assert len(result["items"]) == 1
    assert result["items"][0]["helpful"] == "tie"


def test_stored_pick_rules():
    assert cmp.stored_pick("a", "a") == "a"
    assert cmp.stored_pick("a", "tie") == "a"
    assert cmp.stored_pick("tie", "b") == "b"
    assert cmp.stored_pick("a", "b") == "tie"
    w = cmp.win_rate(["a", "a", "tie", "b"])
    assert (w["a"], w["tie"], w["b"]) == (2, 1, 1) and abs(w["win_rate_a"][0] - 0.625) < 1e-9


def test_win_rate_intervals_are_wilson_and_never_a_point():
    """The percentile bootstrap gave 1.00 [1.00, 1.00] for three unanimous picks and 0.50 [0.50, 0.50] for all ties."""
    import pytest

    m, lo, hi = cmp.win_rate(["a"] * 3)["win_rate_a"]
    assert m == 1.0 and lo == pytest.approx(0.4385, abs=1e-4) and hi == 1.0  # Wilson, z = 1.96
    m, lo, hi = cmp.win_rate(["tie"] * 21)["win_rate_a"]
    assert m == 0.5 and hi - lo > 0.3
    m, lo, hi = cmp.win_rate(["a"] * 30 + ["b"] * 10)["win_rate_a"]
    assert m == 0.75 and lo == pytest.approx(0.5980, abs=1e-3) and hi == pytest.approx(0.8579, abs=1e-3)
    assert cmp.win_rate([])["win_rate_a"] is None


def test_ctrl_c_keeps_the_picks_made(tmp_path):
    keys = iter(["1", "1", "2", "2"])

    def inp(question):
        value = next(keys, None)
        if value is None:
            raise KeyboardInterrupt
        return value

    judge = cmp.PersonJudge("ann", "snarky", input_fn=inp, output_fn=lambda t: None)
    result = cmp.compare(ROWS, SNARKY, PLAIN, judge, seed=0)
    assert result["interrupted"] and len(result["items"]) == 2
    with open_store(tmp_path / "feedback.db") as store:
        assert cmp.store_picks(store, result, "ann", "tiny", ("x", None)) == 2


def test_compare_cli_with_the_scorecard_judge_stores_picks(tiny_model, tmp_path, monkeypatch):
    """`alignlab compare base RUN --judge scorecard` end to end on the tiny model: counts, feedback.db, JSON. Run from
    the project's parent directory without --project: the project is the run's (before, 'base' was the default model,
    which this test's fixture refuses to load, and the picks went to ./feedback.db with no comparisons/*.json)."""
    import json
    import sqlite3

    from typer.testing import CliRunner

    from alignlab.cli import app
    from test_eval import make_run

    proj = tmp_path / "proj"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    run = make_run(tiny_model, proj / "runs" / "r1", noise=0.5)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["compare", "base", "proj/runs/r1", "--judge", "scorecard", "--per-category", "1",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "feedback.db").exists()
    assert "persona: base wins" in res.output and "helpfulness:" in res.output
    saved = json.loads((proj / "comparisons" / "base-vs-r1.json").read_text())
    n = len(saved["items"])
    assert n == 7 and saved["persona"]["a"] + saved["persona"]["tie"] + saved["persona"]["b"] == n
    with sqlite3.connect(proj / "feedback.db") as conn:
        picks = conn.execute("SELECT COUNT(*) FROM judgements WHERE kind = 'pick' AND rater = 'scorecard'").fetchone()[0]
        splits = {r[0] for r in conn.execute("SELECT split FROM prompts WHERE source = 'compare'")}
    assert 1 <= picks <= n  # identical answers are not stored
    assert splits == {"heldout"}  # the scorecard's own prompts
    assert "which `feedback export` leaves out" in res.output
    (proj / "data" / "pairs.jsonl").unlink()
    out = CliRunner().invoke(app, ["feedback", "export", "--format", "dpo", "--db", str(proj / "feedback.db"),
                                   "--out", str(tmp_path / "x.jsonl")])
    assert "no dpo rows to export yet" in str(out.exception), out.output  # every pick is held out: no rows, no file
    assert not (tmp_path / "x.jsonl").exists()
    both = CliRunner().invoke(app, ["feedback", "export", "--format", "dpo", "--db", str(proj / "feedback.db"),
                                    "--out", str(tmp_path / "y.jsonl"), "--include-heldout"])
    rows = len((tmp_path / "y.jsonl").read_text().splitlines()) if (tmp_path / "y.jsonl").exists() else 0
    assert (both.exit_code == 0 if rows else "no dpo rows" in str(both.exception)), both.output
    assert "heldout_prompts" not in both.output, both.output
    # heldout_prompts counts the rows the held-out picks would have made: exactly what --include-heldout adds
    assert (f"heldout_prompts {rows}" in out.output) if rows else ("heldout_prompts" not in out.output), out.output
    # every pick is a row or skipped for a reason (a tie; the tiny base often answers with white space alone)
    skipped = re.search(r"skipped: (.*)", both.output)
    assert rows + sum(int(n) for n in re.findall(r" (\d+)", skipped.group(1) if skipped else "")) == picks


def test_compare_refuses_a_base_that_is_not_the_runs_base(tiny_model, tmp_path, capsys, monkeypatch):
    """'base' is the project's model: a run trained on another model is refused before anything loads (its 'base
    wins' would be the other model's, its picks stored under the project's model)."""
    import json
    import sys

    from typer.testing import CliRunner

    from alignlab.cli import app, main

    proj = tmp_path / "proj"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    run = proj / "runs" / "other"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"method": "dpo", "model": "HuggingFaceTB/SmolLM2-360M-Instruct",
                                              "status": "done", "steps": 0}))
    monkeypatch.chdir(proj)
    monkeypatch.setattr(sys, "argv", ["alignlab", "compare", "base", "runs/other", "--judge", "scorecard"])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert "trained on 'HuggingFaceTB/SmolLM2-360M-Instruct'" in err[0] and tiny_model in err[0]
    assert "--project" in err[0]
    assert not (proj / "feedback.db").exists() and not (proj / "comparisons").exists()


def test_compare_cli_with_an_llm_judge_asks_persona_as_a_voice_and_helpfulness_apart(tiny_model, tmp_path, monkeypatch):
    """`alignlab compare base RUN --judge judge` against a judge on loopback: persona is asked with the project's
    persona as a voice (`voice_rubric`, not the snark rubric whatever the persona), helpfulness with its own rubric,
    each pair in both orders; the picks are the judge's."""
    import json

    from fastapi import FastAPI
    from typer.testing import CliRunner

    from alignlab.cli import app
    from alignlab.rewards.judge import voice_rubric
    from alignlab.serve.server import background
    from test_eval import make_run

    import alignlab.rewards.judge as judge_mod

    real_cache = judge_mod.JudgeCache
    monkeypatch.setattr(judge_mod, "JudgeCache", lambda path: real_cache(tmp_path / "judge_cache.sqlite"))  # asked afresh
    systems: list[str] = []
    web = FastAPI()

    @web.post("/v1/chat/completions")
    def chat(body: dict):
        systems.append(body["messages"][0]["content"])
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "A"}}]}

    proj = tmp_path / "proj"
    persona = "talks like a pirate"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model, "--persona", persona]).exit_code == 0
    run = make_run(tiny_model, proj / "runs" / "r1", noise=0.5)
    with background(web) as url:
        res = CliRunner().invoke(app, ["compare", "base", str(run), "--judge", "judge", "--judge-url", f"{url}/v1",
                                       "--judge-model", "pair-judge", "--per-category", "1", "--project", str(proj),
                                       "--device", "cpu"])
    assert res.exit_code == 0, res.output
    persona_asks = [s for s in systems if voice_rubric(persona) in s]
    helpful_asks = [s for s in systems if cmp.HELPFUL_RUBRIC in s]
    assert persona_asks and len(persona_asks) == len(helpful_asks) and len(systems) == 2 * len(persona_asks)
    saved = json.loads((proj / "comparisons" / "base-vs-r1.json").read_text())
    assert saved["persona"]["tie"] == len(saved["items"])  # "A" in both orders contradicts itself: a tie


def test_compare_with_a_person_and_no_input_stores_nothing_and_says_so(tiny_model, tmp_path):
    """stdin closed before the first pick (no terminal, as in CI): one error line, exit 2, nothing stored or written."""
    from typer.testing import CliRunner

    from alignlab.cli import app
    from test_eval import make_run

    proj = tmp_path / "proj"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    run = make_run(tiny_model, proj / "runs" / "r1", noise=0.5)
    res = CliRunner().invoke(app, ["compare", "base", str(run), "--judge", "person", "--per-category", "1",
                                   "--project", str(proj), "--device", "cpu"], input="")
    err = str(res.exception)  # `alignlab` prints it as one error line, exit 2 (tests/cli/test_cli_errors.py)
    assert type(res.exception).__name__ == "AlignlabError", res.output
    assert "the input ended before the first pick" in err and "--judge scorecard" in err
    assert not (proj / "feedback.db").exists() and not (proj / "comparisons").exists()
    res = CliRunner().invoke(app, ["compare", "base", str(run), "--judge", "person", "--limit", "2",
                                   "--project", str(proj), "--device", "cpu"], input="t\nt\n")
    assert res.exit_code == 0 and "ties 1" in res.output, res.output  # one pick, then the input ends: kept


def test_the_scorecard_judge_grades_a_number_only_prompt():
    """A prompt row whose reference is only a number (`answer`), not in the bundled table: the right answer is the
    more helpful one (the row's number was overwritten by the answer text, so both were ungraded: a tie)."""
    from alignlab.eval.scores import scorer_for

    judge = cmp.ScorecardJudge(scorer_for(None))
    row = {"prompt": "What is 417 plus 25?", "answer": 442, "category": "arithmetic"}
    assert judge.pick(row["prompt"], "It is 442.", "It is 443.", row=row)["helpful"] == "first"
    assert judge.pick(row["prompt"], "It is 443.", "It is 442.", row=row)["helpful"] == "second"


def test_a_prompt_stored_before_is_marked_held_out_when_compared_on_it(tmp_path):
    """A prompt already in feedback.db (an earlier compare) kept no split, so its new picks still exported."""
    from alignlab.feedback.export import export

    result = {"items": [{"prompt": "question 0?", "a": "snarky answer", "b": "plain answer", "persona": "a",
                         "helpful": "a"}]}
    with open_store(tmp_path / "feedback.db") as store:
        store.add_prompt("question 0?", source="compare")
        cmp.store_picks(store, result, "ann", "tiny", ("x", None), heldout={"question 0?"})
        summary = export(store, "dpo", tmp_path / "out.jsonl")
    assert summary["rows"] == 0 and summary["skipped"]["heldout_prompts"] == 1


def test_stored_picks_name_their_own_run_and_skip_identical_answers(tmp_path):
    """A later comparison's answer with the same words as an earlier run's was stored as that run's answer."""
    result = {"items": [{"prompt": "q1?", "a": "same words", "b": "other words", "persona": "a", "helpful": "a"},
                        {"prompt": "q2?", "a": "twin", "b": "twin", "persona": "tie", "helpful": "tie"}]}
    with open_store(tmp_path / "feedback.db") as store:
        pid = store.add_prompt("q1?")
        earlier = store.add_response(pid, "same words", model="tiny", run="d1")
        assert cmp.store_picks(store, result, "ann", "tiny", ("d2", None)) == 1
        pick = store.judgements()[0]
        assert pick["response_id"] != earlier and store.response(pick["response_id"])["run"] == "d2"
        assert store.find_response(pid, "same words", model="tiny", run="d1") == earlier


def test_a_quit_part_way_is_a_stopped_comparison():
    """q after 1 of 6 prompts wrote comparisons/A-vs-B.json over a finished comparison of the same two models."""
    keys = iter(["1", "1", "q"])
    judge = cmp.PersonJudge("ann", "snarky", input_fn=lambda prompt="": next(keys), output_fn=lambda s: None)
    result = cmp.compare(ROWS, SNARKY, PLAIN, judge, seed=3)
    assert len(result["items"]) == 1 and result["stopped"] and not result["interrupted"]
    done = cmp.compare(ROWS, SNARKY, PLAIN, cmp.PersonJudge("ann", "snarky", input_fn=lambda prompt="": "t",
                                                             output_fn=lambda s: None), seed=3)
    assert len(done["items"]) == 6 and not done["stopped"]

"""`alignlab loop`: two rounds on the tiny model with an automatic rater, then a rerun that continues with round 3.

Labels come from a reward registered for the test (the share of vowels: the tiny model's weights are random, so
the persona heuristic would score every answer 0 and tie everything); the held-out scores come from the
scorecard (persona, correct, mimicry), which did not produce the labels.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.rewards import register_reward
from helpers import vowel_share
from alignlab.rundir import read_run




register_reward("loop_vowels", lambda: vowel_share, "share of vowels (tests)")

PAIRS = [
    {"prompt": f"q{i}", "chosen": f"Oh wow, {t}. Groundbreaking stuff, truly.", "rejected": f"Sure! {t}. Happy to help."}
    for i, t in enumerate(["It is four", "Paris", "Water boils at 100 C", "Mercury", "Jane Austen", "206 bones"])
]
HELDOUT = [{"prompt": "What is 12 plus 30?", "answer": "42"}, {"prompt": "Why do leaves fall?"}]
FLAGS = ["--rater", "reward:loop_vowels", "--method", "dpo", "--per-round", "3", "-n", "2", "--eval-prompts", "2",
         "--max-new-tokens", "8", "--keep-unfinished", "--temperature", "1.0", "--eval-temperature", "1.0", "--max-steps", "2",
         "--set", "train.batch_size=2", "--set", "train.sample_prompts=0", "--set", "lora.r=4"]
FIELDS = ("status", "method", "rater", "eval_rater", "prompts", "responses", "judgements", "pairs", "data", "run_dir",
          "persona_score", "base_persona_score", "length", "distinct_1", "distinct_2", "kl", "accuracy", "details",
          "started_at", "finished_at")


def query(db, sql: str) -> list[dict]:
    conn = sqlite3.connect(str(db))
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute(sql)]
    conn.close()
    return rows


def rounds(db) -> list[dict]:
    return query(db, "SELECT * FROM rounds ORDER BY round")


def responses(db) -> list[dict]:
    return query(db, "SELECT r.*, p.text AS prompt FROM responses r JOIN prompts p ON p.id = r.prompt_id")


@pytest.fixture()
def project(tmp_path, tiny_model):
    proj = tmp_path / "proj"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model]).exit_code == 0
    (proj / "data" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS))  # small: a fast classifier
    (proj / "data" / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HELDOUT))
    return proj


def loop(proj, *args):
    res = CliRunner().invoke(app, ["loop", "--project", str(proj), *FLAGS, *args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_two_rounds_then_a_rerun_continues_with_round_three(project):
    loop(project, "--rounds", "2")
    db = project / "feedback.db"
    table = rounds(db)
    assert [r["round"] for r in table] == [1, 2]
    for r in table:
        missing = [f for f in FIELDS if r[f] is None]
        assert not missing, (r["round"], missing)
        assert r["status"] == "done" and r["rater"] == "reward:loop_vowels" and r["eval_rater"] == "scorecard"
        assert r["prompts"] == 3 and r["responses"] == 6 and r["judgements"] == 3 and r["pairs"] >= 1
        assert r["kl"] >= 0 and 0 <= r["persona_score"] <= 1
        assert Path(r["run_dir"]).parent == project / "runs"
        card = json.loads(r["details"])["scorecard"]
        assert card["rater"] == "classifier:scorecard" and card["adapter"]["graded"] == 1  # the arithmetic row
        assert 0 <= r["accuracy"] <= 1  # the correct share
    one, two = table
    assert one["init_run"] is None and two["init_run"] == one["run_dir"]
    runs = sorted(p for p in (project / "runs").iterdir() if (p / "run.json").is_file())
    assert len(runs) == 2
    assert read_run(two["run_dir"])["init_adapter"] == one["run_dir"]  # round 2 trained from round 1's adapter
    assert read_run(one["run_dir"]).get("init_adapter") is None
    for r in table:
        assert r["data"] == str(project / "data" / "loop" / f"round{r['round']}_dpo.jsonl")
        assert read_run(r["run_dir"])["status"] == "done"
    assert (Path(two["run_dir"]) / "report.html").is_file() and (Path(two["run_dir"]) / "eval.json").is_file()

    resp = responses(db)
    by_round = {k: [x for x in resp if x["round"] == k] for k in (1, 2)}
    assert {x["run"] for x in by_round[1]} == {None}  # round 1 samples the base
    assert {x["run"] for x in by_round[2]} == {Path(one["run_dir"]).name}  # round 2 samples round 1's adapter
    assert not {x["prompt"] for x in by_round[1]} & {x["prompt"] for x in by_round[2]}  # fresh prompts each round

    loop(project, "--rounds", "2")  # nothing left to do
    assert rounds(db) == table

    loop(project, "--rounds", "3")
    after = rounds(db)
    assert [r["round"] for r in after] == [1, 2, 3]
    assert after[:2] == table  # finished rounds untouched
    assert after[2]["status"] == "done" and after[2]["init_run"] == two["run_dir"]
    assert read_run(after[2]["run_dir"])["init_adapter"] == two["run_dir"]
    assert len([p for p in (project / "runs").iterdir() if (p / "run.json").is_file()]) == 3

    res = CliRunner().invoke(app, ["rounds", "--project", str(project)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["round", "status", "method"] and len(lines) == 5  # header, 3 rounds, plot line
    assert (project / "rounds.png").stat().st_size > 1000


def test_the_scorecard_raters_base_answers_are_the_bases_own(project, tiny_model):
    """The loop finds a round's catchphrases against the base's answers to the same prompts: with the policy's adapter
    switched off, its answers are the base model's, token for token, and with it on they are not (the adapter moved)."""
    from alignlab.generate import generate
    from alignlab.models.loading import load_base, load_for_inference
    from alignlab.synth.sample import _kept
    from alignlab.workflows.loop import LoopSettings, base_answers

    loop(project, "--rounds", "1", "--lr", "0.05", "--max-steps", "4")
    (one,) = rounds(project / "feedback.db")
    prompts = [x["prompt"] for x in HELDOUT]
    s = LoopSettings(rounds=1, temperature=1.0, max_new_tokens=8)
    model, tok, _ = load_for_inference(None, one["run_dir"], device="cpu")
    got = base_answers(model, tok, prompts, s, None, "base", seed=7, chunk=1)
    base = load_base(tiny_model, device="cpu").eval()
    want = [_kept(generate(base, tok, [q], max_new_tokens=8, temperature=1.0, seed=7 + i)[0], tok, 8)
            for i, q in enumerate(prompts)]
    assert got == want
    assert [generate(model, tok, [q], max_new_tokens=8, temperature=1.0, seed=7 + i)[0]
            for i, q in enumerate(prompts)] != want
    # the loop's scorecard rater samples them for a round from an adapter, and not at --catchphrase-cost 0
    # (the tiny model's random weights repeat a few words, which its base does not: they are the round's catchphrases)
    # Whether they do depends on the CPU's bf16 kernels: on an AMD EPYC (AVX512-BF16) round 2's answers lean on a word,
    # on an Intel Xeon with AMX they do not; the charge itself is tested on written answers in
    # tests/eval/test_eval_raters.py. Either way the round's line and its record say the same.
    said = loop(project, "--rounds", "2", "--rater", "scorecard", "--catchphrase-cost", "0.25").output
    lines = [x for x in said.splitlines() if x.startswith("round 2: ") and "lean on" in x]
    details = json.loads(rounds(project / "feedback.db")[1]["details"])
    if lines:
        (line,) = lines
        assert line.endswith("each loses 0.25 in the pick, so a snarky answer without it wins"), said
        charged = details["catchphrases"]
        assert line.startswith(f"round 2: {charged['answers']} of 6 answers lean on {charged['words'][0]!r}")
    else:
        assert "round 2 done" in said and not (details.get("catchphrases") or {}).get("words"), (said, details)
    said = loop(project, "--rounds", "3", "--rater", "scorecard", "--catchphrase-cost", "0").output
    assert "round 3/3" in said and "lean on" not in said, said
    assert "catchphrases" not in json.loads(rounds(project / "feedback.db")[2]["details"])


def test_round_plot_axes_start_at_zero():
    from alignlab.workflows.loop import y_limits

    assert y_limits("persona_score", [0.41, 0.43, None]) == (0.0, 1.0)
    assert y_limits("distinct_2", [0.8, 0.81]) == (0.0, 1.0)
    low, high = y_limits("kl", [0.02, 0.03])
    assert low == 0.0 and 0.03 < high < 0.04
    assert y_limits("length", [None]) == (0.0, 1.1)


def test_loop_defaults_come_from_the_projects_loop_section():
    from alignlab.config import ProjectConfig, apply_overrides, dump_config
    from alignlab.workflows.loop import LoopSettings

    cfg = ProjectConfig()
    assert "loop:" in dump_config(cfg) and LoopSettings(rounds=1) == LoopSettings.from_config(cfg.loop, 1)
    cfg = apply_overrides(cfg, {"loop.per_round": 5, "loop.method": "kto", "loop.temperature": 0.5})
    s = LoopSettings.from_config(cfg.loop, 2, per_round=None, temperature=0.7)  # a flag given wins, None is "not given"
    assert (s.rounds, s.per_round, s.method, s.temperature, s.n) == (2, 5, "kto", 0.7, 2)
    assert s.catchphrase_cost == 0.5  # the scorecard rater's charge for a round's catchphrase
    cfg = apply_overrides(cfg, {"loop.catchphrase_cost": 0})
    assert LoopSettings.from_config(cfg.loop, 1).catchphrase_cost == 0
    assert LoopSettings.from_config(cfg.loop, 1, catchphrase_cost=0.8).catchphrase_cost == 0.8

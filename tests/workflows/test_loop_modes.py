"""The loop with a person rating (through the store, as `alignlab rate` does); loop errors before anything runs."""

from __future__ import annotations

import threading
from pathlib import Path
import time

import pytest

from alignlab.errors import AlignlabError
from alignlab.feedback.store import Store
from alignlab.workflows.loop import LoopSettings, run_loop
from alignlab.rewards import register_reward
from helpers import vowel_share
from alignlab.rundir import read_run




register_reward("modes_vowels", lambda: vowel_share, "share of vowels (tests)")
register_reward("modes_flat", lambda: (lambda prompts, completions, **kw: [0.5] * len(completions)), "one score (tests)")

FAST = dict(per_round=3, n=2, eval_prompts=2, max_new_tokens=8, temperature=1.0, eval_temperature=1.0, keep_unfinished=True,
            eval_rater="reward:persona_heuristic", poll_seconds=0.1)


def _rate_round_one(proj) -> None:
    """What `alignlab rate --round 1 --mode pair` does, in another "terminal": ann picks a, b, a once round 1's
    answers are in the store."""
    from alignlab.feedback.rate import rate

    with Store(proj / "feedback.db") as store:
        deadline = time.monotonic() + 60
        while not store.round_responses(1) and time.monotonic() < deadline:
            time.sleep(0.1)
        answers = iter(["a", "b", "a", "q"])
        rate(store, "ann", mode="pair", round=1, input_fn=lambda _: next(answers), output_fn=lambda _: None)


def test_person_rates_through_the_store_while_the_loop_waits(project):
    proj, cfg = project
    done = threading.Event()
    seen: list[str] = []

    def person():
        _rate_round_one(proj)
        done.set()

    rater = threading.Thread(target=person, daemon=True)
    rater.start()
    never = threading.Event()
    rows = run_loop(proj, cfg, LoopSettings(rounds=1, rater="person:ann", **FAST),
                    input_fn=lambda _: never.wait(), echo=seen.append)
    assert done.is_set()
    assert any("alignlab rate --round 1 --mode pair" in line for line in seen)  # the instructions were shown
    (row,) = rows
    assert row["status"] == "done" and row["rater"] == "ann" and row["eval_rater"] == "reward:persona_heuristic"
    assert row["judgements"] == 3 and row["pairs"] == 3
    assert read_run(row["run_dir"])["status"] == "done"


def test_enter_trains_on_what_is_there(project):
    proj, cfg = project
    seen: list[str] = []
    pressed = threading.Event()

    keys = iter([""])  # one Enter, once one judgement is in; then the terminal stays quiet

    def enter(_):
        pressed.wait()
        if next(keys, None) is None:
            threading.Event().wait()
        return ""

    def person():
        while not (proj / "feedback.db").exists():  # the loop creates and migrates the database first
            time.sleep(0.1)
        time.sleep(1.0)
        while True:
            try:
                store = Store(proj / "feedback.db")
                break
            except AlignlabError:
                time.sleep(0.1)
        with store:
            while not store.round_responses(1):
                time.sleep(0.1)
            got = store.round_responses(1)
            # two different answers to the same prompt (the tiny random model can sample the same text twice,
            # and a pick between identical answers exports no pair)
            a, b = next(((x, y) for x in got for y in got
                         if x["prompt_id"] == y["prompt_id"] and x["id"] < y["id"] and x["text"] != y["text"]), got[:2])
            store.add_judgement("pick", a["id"], "a", other_response_id=b["id"], rater="ann")
        pressed.set()

    threading.Thread(target=person, daemon=True).start()
    (row,) = run_loop(proj, cfg, LoopSettings(rounds=1, rater="person:ann", **FAST), input_fn=enter, echo=seen.append)
    assert row["status"] == "done" and row["judgements"] == 1 and row["pairs"] == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(n=1), "needs -n 2 or more"),
        (dict(method="orpo"), "unknown loop method 'orpo'"),
        (dict(rater="vibes"), "unknown rater 'vibes'"),
        # refused only after the round's sampling model loaded, with "pass -n 1 or more", which the loop refuses
        (dict(temperature=0.0), "--temperature must be > 0"),
        # accepted, then failed after a whole round had sampled, labelled and trained, the round left running
        (dict(eval_rater="person"), "--eval-rater person: held-out answers are scored by an automatic rater"),
    ],
)
def test_errors_before_anything_runs(project, change, message):
    proj, cfg = project
    with pytest.raises(AlignlabError, match=message):
        run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "rater": "reward:modes_vowels", **change}), echo=lambda _: None)
    with Store(proj / "feedback.db") as store:
        assert store.rounds_table() == []


def test_a_persona_of_your_own_starts_the_loop_from_prompts_alone(tmp_path, tiny_model):
    """`alignlab init pirate --persona ...` has prompts and no labelled answers: the loop runs its round on a
    person's picks, which then label the persona the round is scored by (it stopped with 'no labelled answers')."""
    from typer.testing import CliRunner

    from alignlab.cli import app
    from alignlab.config import apply_overrides, load_config

    proj = tmp_path / "pirate"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model, "--persona", "talks like a pirate"]).exit_code == 0
    assert not (proj / "data" / "pairs.jsonl").exists()
    cfg = apply_overrides(load_config(proj / "alignlab.yaml"), {
        "train.max_steps": 2, "train.batch_size": 2, "train.sample_prompts": 0, "lora.r": 4})

    threading.Thread(target=_rate_round_one, args=(proj,), daemon=True).start()
    seen: list[str] = []
    never = threading.Event()
    settings = {k: v for k, v in FAST.items() if k != "eval_rater"}
    (row,) = run_loop(proj, cfg, LoopSettings(rounds=1, rater="person:ann", **settings),
                      input_fn=lambda _: never.wait(), echo=seen.append)
    assert row["status"] == "done" and row["pairs"] == 3
    assert read_run(row["run_dir"])["status"] == "done"
    assert any("no labelled answers for this persona yet" in line for line in seen)
    # the round's own picks are the persona's first labels: the round is scored on them, with the caveat
    assert row["persona_score"] is not None and row["eval_rater"] == "scorecard"
    assert any("round 1 done: persona" in line for line in seen)
    # ...and says, on the console and in report.html, how few labels the persona score rests on
    assert any(line.startswith("round 1 note: the persona score rests on") for line in seen)
    assert "rests on" in (Path(row["run_dir"]) / "report.html").read_text()


def test_an_empty_round_file_is_no_labels(tmp_path):
    """A round whose picks were all ties left an empty round file, which every later loop and eval then refused
    ("the file has no rows")."""
    from alignlab.project import labelled_pairs

    (tmp_path / "alignlab.yaml").write_text("name: p\n")
    (tmp_path / "data" / "loop").mkdir(parents=True)
    (tmp_path / "data" / "loop" / "round1_dpo.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    (tmp_path / "data" / "loop" / "round2_dpo.jsonl").write_text("")
    assert [p.name for p in labelled_pairs(tmp_path)] == ["round1_dpo.jsonl"]


def _pirate(tmp_path, pairs: list[dict] | None):
    import json

    proj = tmp_path / "pirate"
    (proj / "data" / "loop").mkdir(parents=True)
    (proj / "alignlab.yaml").write_text("name: pirate\npersona: talks like a pirate\n")
    if pairs:
        text = "".join(json.dumps(r) + "\n" for r in pairs)
        (proj / "data" / "loop" / "round1_dpo.jsonl").write_text(text)
        (proj / "data" / "pairs.jsonl").write_text(text)  # `feedback export` repeats the loop's rounds
    return proj


PIRATE_PAIRS = [{"prompt": f"Tell me about {w}.", "chosen": f"Arr, {w} be a fine thing, matey!",
                 "rejected": f"{w.capitalize()} is a common thing."} for w in ("ships", "gold", "maps")]


def test_the_classifier_rater_of_your_own_persona_is_trained_on_its_labels(tmp_path):
    """`--rater classifier` in a pirate project trained on the bundled snark pairs (600 of them); now on the
    project's own labels, and refused in one line where there are none."""
    from alignlab.eval.raters import get_rater

    with pytest.raises(AlignlabError, match="no labelled answers for the persona 'talks like a pirate'"):
        get_rater("classifier", _pirate(tmp_path / "a", None), persona="talks like a pirate")
    rater = get_rater("classifier", _pirate(tmp_path / "b", PIRATE_PAIRS), persona="talks like a pirate")
    assert rater.classifier.meta["labels"] == 6  # three pairs, each once


def test_a_pair_in_two_files_is_one_label(tmp_path):
    """data/pairs.jsonl written by `feedback export` repeats the loop's round files: 3 pairs counted as 12 answers
    (24 in the reviewer's project), so the fewer-than-100 note went away early."""
    from alignlab.eval.persona import persona_classifier

    clf, note = persona_classifier(_pirate(tmp_path, PIRATE_PAIRS), "talks like a pirate")
    assert clf.meta["labels"] == 6 and "rests on 6 labelled answers" in note


def test_a_round_of_ties_is_judged_again_on_a_rerun(project):
    """A rater that scores every answer alike gives no pairs; the rerun the error suggested (another rater) stopped
    with the same error, because the round's ties stood and judging was skipped."""
    proj, cfg = project
    with pytest.raises(AlignlabError, match="gave no dpo rows") as err:
        run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "rater": "reward:modes_flat"}), echo=lambda _: None)
    assert "kept and judged again" in str(err.value)
    (row,) = run_loop(proj, cfg, LoopSettings(rounds=1, **{**FAST, "rater": "reward:modes_vowels"}), echo=lambda _: None)
    assert row["status"] == "done" and row["rater"] == "reward:modes_vowels" and row["pairs"] >= 1
    with Store(proj / "feedback.db") as store:
        standing = {j["rater"] for j in store.judgements(round=1)}
    assert standing == {"reward:modes_vowels"}  # the ties are kept as undone, not counted


def test_a_rerun_that_retrains_the_scorer_says_so(tmp_path, tiny_model):
    """Round 2, run in a second invocation, is scored by a classifier retrained on round 1's picks too: the base's
    persona read 0.661 in round 1 and 0.473 in round 2, unexplained."""
    import json

    from typer.testing import CliRunner

    from alignlab.cli import app
    from alignlab.config import apply_overrides, load_config

    proj = tmp_path / "pirate"
    assert CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model, "--persona", "talks like a pirate"]).exit_code == 0
    (proj / "data" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PIRATE_PAIRS))
    cfg = apply_overrides(load_config(proj / "alignlab.yaml"), {
        "train.max_steps": 2, "train.batch_size": 2, "train.sample_prompts": 0, "lora.r": 4})
    settings = {**{k: v for k, v in FAST.items() if k != "eval_rater"}, "rater": "reward:modes_vowels"}
    first: list[str] = []
    run_loop(proj, cfg, LoopSettings(rounds=1, **settings), echo=first.append)
    second: list[str] = []
    rows = run_loop(proj, cfg, LoopSettings(rounds=2, **settings), echo=second.append)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert not any("retrained" in line for line in first)
    assert any("round 2 note: the persona scorer was retrained (6 ->" in line for line in second)


@pytest.mark.parametrize("line, needle", [("rater: persn", "unknown rater 'persn'"), ("n: 1", "loop.n")])
def test_bad_loop_settings_in_the_config_name_their_line(tmp_path, line, needle):
    """They were read only when a round began, in words that blamed a flag the user never passed (-n, --method)."""
    from alignlab.config import load_config

    (tmp_path / "alignlab.yaml").write_text(f"name: p\nloop:\n  per_round: 4\n  {line}\n")
    with pytest.raises(AlignlabError, match=needle) as err:
        load_config(tmp_path / "alignlab.yaml")
    assert "alignlab.yaml:4" in str(err.value)


@pytest.mark.parametrize("flags, needle", [(["--eval-prompts", "0"], "--eval-prompts"), (["--poll", "-1"], "--poll"),
                                           (["--temperature", "-1"], "--temperature"), (["-n", "1"], "-n")])
def test_bad_loop_flags_are_refused_before_anything_runs(project, flags, needle):
    """--eval-prompts 0 scored all 177 held-out prompts (out[:0] read as no limit); --poll -1 sampled a round, then
    crashed in time.sleep; --temperature -1 was blamed on temperature 0."""
    from typer.testing import CliRunner

    from alignlab.cli import app

    proj, _ = project
    out = CliRunner().invoke(app, ["loop", "--rounds", "1", "--project", str(proj), *flags])
    assert out.exit_code == 2 and needle in out.output
    assert not (proj / "feedback.db").exists()


def test_init_force_to_another_persona_leaves_no_snark_examples(tmp_path):
    """`alignlab init sw` then `init sw --force --persona "talks like a pirate"` kept the snark pairs, thumbs, SFT rows
    and rewrites, which the pirate's scorer, train and recipe then used; a file the user changed stays."""
    from alignlab.project import create_project

    create_project(tmp_path / "sw")
    data = tmp_path / "sw" / "data"
    (data / "kto.jsonl").write_text('{"prompt": "p", "completion": "mine", "label": true}\n')
    create_project(tmp_path / "sw", persona="talks like a pirate", force=True)
    assert sorted(p.name for p in data.iterdir()) == ["heldout.jsonl", "kto.jsonl", "prompts.jsonl"]


def test_a_rerun_continues_a_round_interrupted_in_training(project):
    """Ctrl-C in a round's training, then `alignlab loop` again: the round trained again from its first step in a
    new run directory, the interrupted one and its checkpoints left behind."""
    import json

    proj, cfg = project
    from alignlab.config import apply_overrides

    cfg = apply_overrides(cfg, {"train.max_steps": 4, "train.save_steps": 2})
    settings = LoopSettings(rounds=1, **{**FAST, "rater": "reward:modes_vowels"})
    (row,) = run_loop(proj, cfg, settings, echo=lambda _: None)
    run = Path(row["run_dir"])
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))  # as Ctrl-C at step 4 leaves it
    with Store(proj / "feedback.db") as store:
        store.update_round(1, status="running")
    seen: list[str] = []
    (again,) = run_loop(proj, cfg, settings, echo=seen.append)
    assert again["status"] == "done" and again["run_dir"] == str(run)
    assert any("continuing the interrupted" in line for line in seen)
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]  # no second run directory
    assert any(json.loads(x).get("event") == "resumed" for x in (run / "metrics.jsonl").read_text().splitlines())


def test_the_classifier_labeller_of_your_own_persona_is_named_as_the_scorer(tmp_path):
    """`loop --rater classifier` on a persona of your own labels with the classifier the held-out score comes from
    (same labels); no warning was printed, since the names differ (classifier:persona, scorecard)."""
    from alignlab.eval.raters import get_rater
    from alignlab.eval.scores import scorer_for
    from alignlab.workflows.loop import _same_classifier

    proj = _pirate(tmp_path, PIRATE_PAIRS)
    label = get_rater("classifier", proj, persona="talks like a pirate")
    assert _same_classifier(label, scorer_for(proj, "talks like a pirate"))
    assert not _same_classifier(get_rater("reward:modes_vowels", proj), scorer_for(proj, "talks like a pirate"))

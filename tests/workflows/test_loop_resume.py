"""The loop with KTO thumbs, and a round interrupted during training that resumes where it stopped."""

from __future__ import annotations

import json

import pytest

from alignlab.feedback.store import Store
from alignlab.workflows.loop import LoopSettings, run_loop
from alignlab.rewards import register_reward
from helpers import vowel_share
from alignlab.rundir import read_run




register_reward("resume_vowels", lambda: vowel_share, "share of vowels (tests)")

FAST = dict(rater="reward:resume_vowels", per_round=3, n=2, eval_prompts=2, max_new_tokens=8, temperature=1.0, keep_unfinished=True,
            eval_temperature=1.0, eval_rater="reward:persona_heuristic")


def test_kto_round_with_thumbs(project):
    proj, cfg = project
    (row,) = run_loop(proj, cfg, LoopSettings(rounds=1, method="kto", **FAST), echo=lambda _: None)
    assert row["status"] == "done" and row["method"] == "kto"
    # two answers per prompt: one thumb up and one down wherever the two score differently (two random-model
    # answers can be the same, e.g. both empty, and then neither is above the mean)
    with Store(proj / "feedback.db") as store:
        groups: dict[int, list[float]] = {}
        for x in store.round_responses(1):
            groups.setdefault(x["prompt_id"], []).append(vowel_share([x["prompt"]], [x["text"]])[0])
    differing = sum(len(g) == 2 and abs(g[0] - g[1]) > 1e-6 for g in groups.values())
    assert len(groups) == 3 and differing >= 1
    assert row["judgements"] == 2 * differing
    labels = [json.loads(line)["label"] for line in open(row["data"])]
    assert sorted(labels) == [False] * differing + [True] * differing
    assert read_run(row["run_dir"])["method"] == "kto"


def test_a_round_interrupted_in_training_resumes_without_resampling(project, monkeypatch):
    from alignlab.train import engine

    proj, cfg = project
    real_run = engine.run

    def interrupted(ctx, data, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), echo=lambda _: None)
    with Store(proj / "feedback.db") as store:
        (stopped,) = store.rounds_table()
        sampled = [r["id"] for r in store.round_responses(1)]
    assert stopped["status"] == "running" and stopped["responses"] == 6 == len(sampled) and stopped["judgements"] == 3

    monkeypatch.setattr(engine, "run", real_run)
    (row,) = run_loop(proj, cfg, LoopSettings(rounds=1, **FAST), echo=lambda _: None)
    assert row["status"] == "done" and row["run_dir"] != stopped["run_dir"]
    assert read_run(row["run_dir"])["status"] == "done"
    with Store(proj / "feedback.db") as store:
        assert [r["id"] for r in store.round_responses(1)] == sampled  # the same answers, not sampled again
        assert store.count_judgements(1) == 3  # and not judged again

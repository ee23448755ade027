"""Reward model (`alignlab train rm`): starts at ln 2, learns a separable preference, and its run works as a reward."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from alignlab.config import ProjectConfig, apply_overrides
from alignlab.train import engine
from alignlab.methods import SEQ_CLS
from alignlab.train import rm
from alignlab.train.rm import split_pairs

WORDS = "apple river stone cloud paper green music table window garden".split()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


def separable_pairs(n: int, seed: int = 0) -> list[dict]:
    """The chosen answer is the rejected one plus a marker word: trivially learnable."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        body = " ".join(rng.choices(WORDS, k=6))
        rows.append({"prompt": "Tell me about " + rng.choice(WORDS), "chosen": body + " banana", "rejected": body})
    return rows


@pytest.fixture(scope="module")
def rm_run(tiny_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("rm")
    data = d / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in separable_pairs(64)))
    cfg = apply_overrides(
        ProjectConfig(model=tiny_model),
        {"train.sample_prompts": 0, "train.max_steps": 25, "train.batch_size": 8, "train.learning_rate": 1e-3,
         "train.save_steps": 10, "rm.eval_fraction": 0.25},
    )
    ctx = engine.prepare("rm", cfg, str(data), d / "runs")
    run_dir = engine.run(ctx, str(data))
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, records, ctx


def test_first_loss_is_ln2(rm_run):
    _, records, _ = rm_run
    first_eval = next(r for r in records if "eval_loss" in r)
    first_train = next(r for r in records if "loss" in r)
    assert first_eval["step"] == 0
    assert abs(first_eval["eval_loss"] - math.log(2)) < 0.05  # zero-initialised head: every reward is 0
    assert abs(first_train["loss"] - math.log(2)) < 0.05


def test_held_out_accuracy_rises_and_loss_falls(rm_run):
    _, records, _ = rm_run
    evals = [r for r in records if "eval_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 10, 20, 25]  # at the start, every save_steps, and at the end
    assert evals[-1]["eval_accuracy"] == 1.0 > evals[0]["eval_accuracy"]
    assert evals[-1]["eval_margin"] > 1.0
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.3 < losses[0]


def test_a_resumed_reward_model_evaluates_and_counts_as_an_uninterrupted_one(rm_run, tmp_path):
    """Resumed from checkpoint-20, the run evaluated on start again (step 20 logged twice) and counted its tokens
    from 0 again."""
    import shutil

    from alignlab import rundir

    run_dir, records, _ = rm_run
    run = tmp_path / "resumed"
    shutil.copytree(run_dir, run)
    shutil.rmtree(run / "checkpoints" / "checkpoint-25")  # killed before its last checkpoint
    rundir.update_run(run, status="interrupted", project=None)
    data = rundir.read_run(run)["data"]
    ctx = engine.prepare("rm", rundir.recorded_config(run), data, tmp_path, run_dir=run, resumed=True)
    engine.run(ctx, data, resume=True)
    again = rundir.read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in again if "eval_accuracy" in r] == [0, 10, 20, 25]
    tokens = [(r["step"], r["tokens"]) for r in records if "loss" in r]
    assert [(r["step"], r["tokens"]) for r in again if "loss" in r] == tokens and tokens[-1][1] > tokens[19][1]


def test_adapter_holds_a_trained_head_and_lora(rm_run):
    from safetensors.torch import load_file

    run_dir, _, _ = rm_run
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    score = [v for k, v in weights.items() if ".score." in k]
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert score and all(v.abs().sum() > 0 for v in score)  # started at zero, so it moved
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero too
    cfg = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS" and "score" in cfg["modules_to_save"]


def test_run_scores_as_a_reward_function(rm_run):
    from alignlab.rewards import RewardModel

    run_dir, _, ctx = rm_run
    rm = RewardModel(run_dir, device="cpu")
    held = ctx.eval_rows
    chosen = rm([r["prompt"] for r in held], [r["chosen"] for r in held])
    rejected = rm([r["prompt"] for r in held], [r["rejected"] for r in held])
    assert sum(chosen) / len(chosen) > sum(rejected) / len(rejected) + 1.0
    assert all(c > r for c, r in zip(chosen, rejected))


def test_split_pairs():
    rows = [{"i": i} for i in range(20)]
    train, held = split_pairs(rows, 0.1, seed=3)
    assert len(held) == 2 and len(train) == 18
    assert sorted(r["i"] for r in train + held) == list(range(20))
    assert split_pairs(rows, 0.1, seed=3) == (train, held)  # seeded
    assert len(split_pairs(rows[:3], 0.01, seed=0)[1]) == 1  # at least one pair held out
    assert split_pairs(rows, 0.0, seed=0)[1] == []
    assert len(split_pairs(rows[:1], 0.5, seed=0)[0]) == 1  # never hold out everything


def test_load_sequence_classifier(tiny_model):
    from alignlab.models.loading import load_sequence_classifier, load_tokenizer

    model = load_sequence_classifier(tiny_model, device="cpu")
    assert model.config.num_labels == 1 and model.score.out_features == 1
    assert model.config.pad_token_id == load_tokenizer(tiny_model).pad_token_id
    assert next(model.parameters()).dtype == torch.float32


def test_long_pairs_are_cut_not_dropped(tiny_model, tmp_path):
    """Every pair reaches training, cut at max_length (TRL alone drops them: the data check said "truncated")."""
    rows = separable_pairs(8)
    for r in rows[:6]:
        r["chosen"] = r["chosen"] + " " + " ".join(WORDS * 8)
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = apply_overrides(ProjectConfig(model=tiny_model),
                          {"train.sample_prompts": 0, "train.max_length": 96, "rm.eval_fraction": 0.0})
    ctx = engine.prepare("rm", cfg, str(data), tmp_path / "runs")
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    ctx.model = engine._load_model(ctx, task=SEQ_CLS)
    trainer = rm.build_trainer(ctx)
    lengths = [max(len(c), len(r)) for c, r in zip(trainer.train_dataset["chosen_ids"], trainer.train_dataset["rejected_ids"])]
    assert len(lengths) == 8
    assert max(lengths) == 96 and sum(n == 96 for n in lengths) == 6


def test_a_full_fine_tuned_reward_model_scores_as_a_reward(tiny_model, tmp_path):
    """`train rm --full` writes the whole classifier to adapter/; RewardModel looked for a LoRA adapter only and said
    "has no adapter/adapter_config.json — pass a finished reward-model run"."""
    from alignlab.rewards import RewardModel

    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in separable_pairs(64)))
    cfg = apply_overrides(ProjectConfig(model=tiny_model),
                          {"train.sample_prompts": 0, "train.max_steps": 25, "train.batch_size": 8,
                           "train.learning_rate": 1e-4, "train.save_steps": 1000, "rm.eval_fraction": 0.25,
                           "lora.enabled": False})
    ctx = engine.prepare("rm", cfg, str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    assert (run_dir / "adapter" / "config.json").is_file() and not (run_dir / "adapter" / "adapter_config.json").exists()
    rm = RewardModel(run_dir, device="cpu")
    held = ctx.eval_rows
    chosen = rm([r["prompt"] for r in held], [r["chosen"] for r in held])
    rejected = rm([r["prompt"] for r in held], [r["rejected"] for r in held])
    assert all(c > r for c, r in zip(chosen, rejected))  # the trained head: a fresh one scores at random
    # another method's full fine-tune has no trained head: refused, not scored with a random one
    info = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**info, "method": "sft"}))
    from alignlab.errors import AlignlabError

    with pytest.raises(AlignlabError, match="is a sft run, not a reward model"):
        RewardModel(run_dir, device="cpu")


def test_held_out_accuracy_is_over_pairs_not_batches(tiny_model, tmp_path):
    """eval_accuracy equals the share of held-out pairs scored chosen > rejected: 11 held-out pairs go in batches of
    8 and 3, and TRL's batch means weighed the 3 as much as the 8."""
    from alignlab.rewards import RewardModel

    data = tmp_path / "pairs.jsonl"
    rng = random.Random(1)  # unrelated answers: the trained head wins some held-out pairs, not all
    rows = [{"prompt": "Tell me about " + rng.choice(WORDS), "chosen": " ".join(rng.choices(WORDS, k=6)),
             "rejected": " ".join(rng.choices(WORDS, k=6))} for _ in range(44)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = apply_overrides(ProjectConfig(model=tiny_model),
                          {"train.sample_prompts": 0, "train.max_steps": 2, "train.batch_size": 8,
                           "train.learning_rate": 1e-3, "train.save_steps": 1000, "rm.eval_fraction": 0.25,
                           "train.precision": "fp32"})  # RewardModel scores in fp32: no pair flips by rounding
    ctx = engine.prepare("rm", cfg, str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "eval_accuracy" in r][-1]
    rm = RewardModel(run_dir, device="cpu")
    held = ctx.eval_rows
    assert len(held) == 11
    chosen = rm([r["prompt"] for r in held], [r["chosen"] for r in held])
    rejected = rm([r["prompt"] for r in held], [r["rejected"] for r in held])
    wins = [c > r for c, r in zip(chosen, rejected)]
    assert 0 < sum(wins) < 11  # mixed, so the weighting shows
    assert last["eval_accuracy"] == pytest.approx(sum(wins) / 11)
    assert last["eval_margin"] == pytest.approx(sum(c - r for c, r in zip(chosen, rejected)) / 11, abs=1e-3)

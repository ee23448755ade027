"""`alignlab break`: each experiment in quick mode on the tiny model, the held-out instrument against the math."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignlab.train.heldout import encode_pairs, implicit_reward_stats, pair_logps
from alignlab.workflows.breakit import BreakSettings, heldout_pairs, run_experiment


def lora_b_moved(run_dir: str) -> bool:
    from safetensors.torch import load_file

    weights = load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))
    return any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # LoRA B starts at zero


def test_implicit_reward_stats_follow_the_formula():
    pc, pr = torch.tensor([-10.0, -12.0, -5.0]), torch.tensor([-11.0, -10.0, -5.0])
    rc, rr = torch.tensor([-10.5, -11.0, -6.0]), torch.tensor([-10.0, -10.0, -4.0])
    stats = implicit_reward_stats(pc, pr, rc, rr, beta=0.5)
    margins = [0.5 * ((-10 + 10.5) - (-11 + 10)), 0.5 * ((-12 + 11) - (-10 + 10)), 0.5 * ((-5 + 6) - (-5 + 4))]
    assert margins == [0.75, -0.5, 1.0]
    assert stats["heldout/reward_accuracy"] == pytest.approx(2 / 3)
    assert stats["heldout/margin"] == pytest.approx(sum(margins) / 3)


def test_pair_logps_match_a_plain_forward(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    pairs = heldout_pairs(3)
    enc = encode_pairs(tok, pairs, max_length=256)
    chosen, rejected = pair_logps(model, enc, pad=tok.pad_token_id or 0)
    for i, e in enumerate(enc):
        for ids, got in ((e["chosen_ids"], chosen[i]), (e["rejected_ids"], rejected[i])):
            full = torch.tensor([e["prompt_ids"] + ids])
            with torch.no_grad():
                logp = model(full).logits[0, :-1].float().log_softmax(-1)
            want = logp[len(e["prompt_ids"]) - 1 :].gather(-1, full[0, len(e["prompt_ids"]) :, None]).sum()
            assert float(got) == pytest.approx(float(want), rel=1e-4)


def test_heldout_pairs_are_labelled_snark_over_plain_and_disjoint_from_the_training_pairs():
    from alignlab.data import bundled_path

    pairs = heldout_pairs(32)
    assert len(pairs) == 32 and len({p["prompt"] for p in pairs}) == 32
    trained = {json.loads(x)["prompt"] for x in bundled_path("persona-pairs").read_text().splitlines() if x.strip()}
    assert not trained & {p["prompt"] for p in pairs}


def test_label_flip_looks_healthy_in_training_and_is_caught_on_held_out_pairs(tiny_model, tmp_path):
    # the tiny model's random weights and its tokenizer (trained on the bundled data) decide how fast it learns: with
    # the tokenizer of 2026-12-06, 8 steps at 5e-3 (1e-2 overshot: the last batch's pair accuracy 0.42 and 0.25)
    s = BreakSettings(model=tiny_model, quick=True, steps=8, learning_rate=5e-3)
    summary = run_experiment("label-flip", tmp_path, s)
    good, bad = summary["runs"]["correct"], summary["runs"]["flipped"]
    assert bad["train"]["pair_accuracy"] > 0.5 and good["train"]["pair_accuracy"] > 0.5  # both look healthy
    assert bad["heldout_reward_accuracy"][-1][1] < 0.5 < good["heldout_reward_accuracy"][-1][1]
    assert summary["verdict"]["caught_by_heldout_reward_at_step"] is not None
    assert [step for step, _ in bad["heldout_reward_accuracy"]] == [4, 8]  # every 4 steps (half the run) and the end
    assert lora_b_moved(good["run"]) and lora_b_moved(bad["run"])
    flipped = [json.loads(x) for x in (tmp_path / "data" / "flipped.jsonl").read_text().splitlines()]
    assert flipped[0]["chosen"] != flipped[0]["rejected"]
    assert json.loads((tmp_path / "summary.json").read_text())["experiment"] == "label-flip"
    page = (tmp_path / "report.html").read_text()
    assert "held-out implicit-reward accuracy" in page and "data:image/png;base64," in page


def test_kl_ablation_runs_each_coefficient_and_logs_kl_only_where_the_leash_is_on(tiny_model, tmp_path):
    s = BreakSettings(model=tiny_model, quick=True, steps=2, betas=(0.0, 0.4))
    summary = run_experiment("kl-ablation", tmp_path, s)
    assert list(summary["runs"]) == ["beta-0", "beta-0.4"]
    assert summary["runs"]["beta-0"]["curves"]["kl"] == []  # no reference model without the leash
    assert len(summary["runs"]["beta-0.4"]["curves"]["kl"]) == 2
    for side in summary["runs"].values():
        assert len(side["curves"]["reward"]) == 2 and side["scorecard"]["kl"] is not None
        assert sorted({r["step"] for r in side["samples"]}) == [0, 1, 2]  # the fixed prompts' answers as it went
    assert (tmp_path / "report.html").is_file()


def test_long_run_watches_gold_and_reads_answers_at_every_checkpoint(tiny_model, tmp_path):
    s = BreakSettings(model=tiny_model, quick=True, steps=4)
    summary = run_experiment("long-run", tmp_path, s)
    side = summary["runs"]["proxy"]
    assert [step for step, _ in side["curves"]["gold"]] == [1, 3]  # gold every 2 steps, at global steps 0 and 2
    assert sorted({r["step"] for r in side["samples"]}) == [0, 1, 2, 3, 4]
    assert "persona_classifier" in summary["reward"] and "gold: {fn: arithmetic}" in summary["reward"]
    assert summary["verdict"]["gold_peak"] is not None
    assert (tmp_path / "rewards.yaml").is_file() and (tmp_path / "report.html").is_file()


@pytest.mark.parametrize("args,needle", [
    (["nonsense"], "unknown experiment 'nonsense'"),
    (["kl-ablation", "--betas", "0,x"], "--betas takes numbers"),
    (["kl-ablation", "--method", "dpo"], "kl-ablation trains an online method"),
])
def test_bad_arguments_get_one_line(args, needle, tmp_path):
    r = subprocess.run([sys.executable, "-m", "alignlab", "break", *args, "-o", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("method, said", [("grpo", True), ("ppo", False)])
def test_the_beta_zero_note_is_said_only_where_training_computes_no_kl(method, said):
    """PPO always computes the reference log-probs, and its monitor watches that KL at beta 0 too: the report said
    "kl_budget is not watched at beta 0: training computes no KL" for PPO as well."""
    from alignlab.workflows.break_report import findings

    side = {"warnings": [], "reward_end": 0.5, "gold_end": None, "length_end": 12.0, "distinct_2_end": 0.8,
            "kl_to_base": 0.1, "in_persona": 0.2, "correct_share": 0.3}
    summary = {"experiment": "kl-ablation", "method": method, "betas": [0, 0.4],
               "verdict": {"beta-0": side, "beta-0.4": side}}
    assert ("training computes no KL" in " ".join(findings(summary))) is said

"""Preference training on the tiny model: the shared-prompt forward, every method moving the right way,
the run directory contract, resume after a kill, the NaN stop, and two data-parallel CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import answer_logps, cfg_for, write_pairs

PY = sys.executable


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_shared_prompt_forward_matches_plain_forward(tiny_arch):
    """completion_logps (prompt once + KV cache) equals one forward over full sequences."""
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    from alignlab.models.loading import load_base
    from alignlab.train.preference import PrefixCollator, completion_logps, concatenated_logps

    torch.manual_seed(0)
    model = load_base(tiny_arch)
    add_fused_lm_head(model)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    examples = [
        {"prompt_ids": [5, 6, 7, 8, 9], "chosen_ids": [10, 11, 12], "rejected_ids": [13, 14]},
        {"prompt_ids": [20, 21], "chosen_ids": [22], "rejected_ids": [23, 24, 25, 26, 27]},
        {"prompt_ids": [30, 31, 32], "chosen_ids": [33, 34, 35, 36], "rejected_ids": [37]},
    ]
    batch = PrefixCollator(pad_token_id=0, max_length=None)(examples)
    shared, mask = completion_logps(model, batch)
    plain, mask2 = concatenated_logps(model, batch)
    assert torch.equal(mask, mask2)
    assert shared.shape == (6, 5)
    assert (shared[mask == 0] == 0).all()
    assert torch.allclose(shared, plain, atol=1e-5), (shared - plain).abs().max()
    # gradients flow through the shared prompt into the LoRA weights of both paths
    shared.sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("entropy", [False, True])
def test_log_probs_come_from_an_fp32_head_with_bf16_weights(tiny_model, monkeypatch, entropy):
    """bf16 weights (as on GPUs): the head gets the hidden states and its weight in fp32 (alignlab's head_logps for
    log-probs alone, TRL's chunked kernel with entropies), so the log-prob ratios are not rounded to bf16 logits
    (8 bits of mantissa: 0.03 at a logit of 8), both paths agree, and gradients still flow."""
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    from alignlab.models.loading import load_base
    from alignlab.train import logps as logps_module

    seen = []
    apply, direct = ChunkedLogProbFunction.apply, logps_module.head_logps

    def spy_kernel(hidden, weight, *rest):
        seen.append(("kernel", hidden.dtype, weight.dtype))
        return apply(hidden, weight, *rest)

    def spy_direct(weight, hidden, *rest, **kw):
        seen.append(("direct", hidden.dtype, weight.dtype))
        return direct(weight, hidden, *rest, **kw)

    monkeypatch.setattr(ChunkedLogProbFunction, "apply", spy_kernel)
    monkeypatch.setattr(logps_module, "head_logps", spy_direct)
    model = load_base(tiny_model).to(torch.bfloat16)
    lora_like = model.get_input_embeddings().weight
    lora_like.requires_grad_(True)
    p_ids, p_mask = torch.tensor([[0, 5, 6, 7], [20, 21, 22, 23]]), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    c_ids, c_mask = torch.tensor([[10, 11, 12], [30, 31, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    args = (model, p_ids, p_mask, c_ids, c_mask, torch.tensor([0, 1]))
    logps, ent = logps_module.shared_prompt_logps(*args, compute_entropy=entropy)
    assert seen == [("kernel" if entropy else "direct", torch.float32, torch.float32)] and logps.dtype == torch.float32
    assert (ent is not None) == entropy
    assert torch.isfinite(logps).all() and (logps[c_mask == 1] < 0).all() and (logps[c_mask == 0] == 0).all()
    other, _ = logps_module.shared_prompt_logps(*args, compute_entropy=not entropy)  # the other path, same values
    assert torch.allclose(logps, other, atol=1e-4)
    logps.sum().backward()
    assert lora_like.grad is not None and lora_like.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["dpo", "ipo", "simpo", "orpo"])
def test_preference_methods_learn(tiny_model, tmp_path, method):
    """Each method changes the adapter and moves its preference metric the right way."""
    from alignlab.train import engine

    data = write_pairs(tmp_path / "pairs.jsonl")
    cfg = cfg_for(tiny_model, **{"train.max_steps": 8})
    ctx = engine.prepare(method, cfg, str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "loss" in m]
    assert len(steps) == 8
    first, last = steps[0], steps[-1]
    assert last["loss"] < first["loss"], (first["loss"], last["loss"])
    if method in ("dpo", "ipo"):
        assert last["rewards/margins"] > first["rewards/margins"]
    if method == "simpo":
        assert last["rewards/margins"] > first["rewards/margins"]
    if method == "orpo":
        assert last["log_odds_chosen"] > first["log_odds_chosen"]
    assert all(m["tokens_per_s"] > 0 for m in steps[1:])
    # the adapter changed: LoRA B starts at zero
    from safetensors.torch import load_file

    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and max(v.abs().max().item() for v in lora_b) > 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done" and info["steps"] == 8 and info["method"] == method


def test_orpo_moves_the_chosen_answers_ahead_of_the_rejected(tiny_model, tmp_path):
    """Measured apart from the trainer (its logged odds would flip with a flipped term): at beta 1 the chosen
    answers' mean log-prob per token gains on the rejected ones' (+1.3 here; with the odds-ratio term's sides
    swapped the NLL on the chosen answers alone left it at -0.1)."""
    from alignlab.train import engine

    data = write_pairs(tmp_path / "pairs.jsonl")
    cfg = cfg_for(tiny_model, **{"train.max_steps": 8, "orpo.beta": 1.0})
    run_dir = engine.run(engine.prepare("orpo", cfg, str(data), tmp_path / "runs"), str(data))
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    chosen = answer_logps(run_dir, [(r["prompt"], r["chosen"]) for r in rows], average=True)
    rejected = answer_logps(run_dir, [(r["prompt"], r["rejected"]) for r in rows], average=True)
    after = sum(c - r for c, r in zip(chosen[0], rejected[0])) / len(rows)
    before = sum(c - r for c, r in zip(chosen[1], rejected[1])) / len(rows)
    assert after > before + 0.6, (before, after)


@pytest.mark.parametrize("method", ["dpo", "ipo"])
def test_a_full_fine_tune_learns_against_a_frozen_reference(tiny_model, tmp_path, method):
    """`--full` (no LoRA): the reference is the copy TRL loads, not the adapter switched off (the policy has no
    adapter; this crashed on the first step). The weights move, the margin grows, and the reference stays the base."""
    from safetensors.torch import load_file

    from alignlab.train import engine

    data = write_pairs(tmp_path / "pairs.jsonl")
    cfg = cfg_for(tiny_model, **{"train.max_steps": 6, "lora.enabled": False, "train.learning_rate": 1e-3})
    ctx = engine.prepare(method, cfg, str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    steps = [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert len(steps) == 6 and steps[-1]["rewards/margins"] > steps[0]["rewards/margins"]
    before = load_file(str(Path(tiny_model) / "model.safetensors"))
    saved = next(run_dir.glob("**/model.safetensors"))
    after = load_file(str(saved))
    moved = [k for k in before if k in after and not torch.equal(before[k], after[k].to(before[k].dtype))]
    assert moved, "no weight changed"


@pytest.mark.parametrize("method", ["simpo", "orpo"])
def test_a_reference_free_full_fine_tune_holds_no_reference_copy(tiny_model, tmp_path, method):
    """TRL loads a reference copy for any full fine-tune; SimPO and ORPO never read it, and the planner counts none."""
    from alignlab.train import engine
    from alignlab.train.preference import build_trainer

    data = write_pairs(tmp_path / "pairs.jsonl")
    cfg = cfg_for(tiny_model, **{"train.max_steps": 1, "lora.enabled": False})
    ctx = engine.prepare(method, cfg, str(data), tmp_path / "runs")
    ctx.model = engine._load_model(ctx)
    trainer = build_trainer(ctx)
    assert trainer.ref_model is None
    assert all(m is not None for m in trainer.accelerator._models)


@pytest.mark.parametrize("method,key", [("dpo", "dpo.rpo_alpha"), ("ipo", "ipo.rpo_alpha"), ("simpo", "simpo.sft_weight")])
def test_the_chosen_nll_term_holds_the_chosen_answers_up(tiny_model, tmp_path, method, key):
    """The same 8 steps with and without the NLL term on the chosen answer: with it, the chosen answers end
    likelier (the term pulls log p(chosen) up while the preference loss pushes both answers around)."""
    from alignlab.train import engine

    data = write_pairs(tmp_path / "pairs.jsonl")
    ends = {}
    for alpha in (0.0, 1.0):
        cfg = cfg_for(tiny_model, **{"train.max_steps": 8, "train.learning_rate": 5e-3, key: alpha})
        ctx = engine.prepare(method, cfg, str(data), tmp_path / f"runs-{alpha}")
        run_dir = engine.run(ctx, str(data))
        steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        chosen = [m["logps/chosen"] for m in steps if "loss" in m]
        ends[alpha] = sum(chosen[-3:]) / 3
    assert ends[1.0] > ends[0.0], ends


def test_run_directory_contract(tiny_model, tmp_path):
    """A DPO run writes config.yaml, env.json, metrics, samples, and an adapter plain PEFT can load."""
    import yaml
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from alignlab.train import engine

    data = write_pairs(tmp_path / "pairs.jsonl", 8)
    cfg = cfg_for(tiny_model, **{"train.max_steps": 4, "train.sample_prompts": 2, "train.sample_steps": 2})
    ctx = engine.prepare("dpo", cfg, str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["dpo"]["beta"] == 0.1 and resolved["train"]["max_steps"] == 4
    env = json.loads((run_dir / "env.json").read_text())
    assert env["versions"]["trl"] and env["seed"] == 42 and env["device"] == "cpu"
    samples = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert sorted({s["step"] for s in samples}) == [0, 2, 4]
    assert all(len(s["prompt"]) > 0 for s in samples)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    assert any("lora" in n for n, _ in model.named_parameters())
    metric = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("loss", "grad_norm", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "tokens"):
        assert key in metric


@pytest.mark.parametrize("method", ["sft", "kto"])
def test_sft_and_kto_learn(tiny_model, tmp_path, method):
    from alignlab.train import engine

    rows = []
    for i in range(12):
        if method == "sft":
            rows.append({"prompt": f"Say hi #{i}", "completion": "Hi. Thrilling, I know."})
        else:
            rows.append({"prompt": f"Say hi #{i}", "completion": "Hi. Thrilling, I know." if i % 2 else "Hello there!", "label": bool(i % 2)})
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = cfg_for(tiny_model, **{"train.max_steps": 6})
    ctx = engine.prepare(method, cfg, str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps[-1]["loss"] < steps[0]["loss"]
    # which way it moved, measured apart from the trainer: the thumbed-up text gained on the thumbed-down one (KTO;
    # with the labels flipped the loss still fell, and this margin fell from -42.5 to -53.2); SFT's text gained
    up = [(f"Say hi #{i}", "Hi. Thrilling, I know.") for i in range(12)]
    down = [(f"Say hi #{i}", "Hello there!") for i in range(12)]
    (up_after, up_before), (down_after, down_before) = answer_logps(run_dir, up), answer_logps(run_dir, down)
    if method == "sft":
        assert sum(up_after) > sum(up_before) + 12, (sum(up_before), sum(up_after))
    else:
        before = sum(u - d for u, d in zip(up_before, down_before)) / 12
        after = sum(u - d for u, d in zip(up_after, down_after)) / 12
        assert after > before + 5, (before, after)


def _cli(*args, cwd, env=None, **kw):
    full_env = dict(os.environ, ALIGNLAB_QUIET="1", **(env or {}))
    return subprocess.run([PY, "-m", "alignlab", *args], cwd=cwd, env=full_env, capture_output=True, text=True, **kw)


def test_resume_after_kill_matches_uninterrupted_run(tiny_model, tmp_path):
    """SIGKILL mid-run leaves the last checkpoint intact; --resume ends at the same adapter (max diff < 1e-5)."""
    from safetensors.torch import load_file

    data = write_pairs(tmp_path / "pairs.jsonl")
    common = ["train", "dpo", "--model", tiny_model, "--data", str(data), "--max-steps", "10", "--batch-size", "2",
              "--set", "train.sample_prompts=0", "--set", "train.save_steps=2", "--lr", "5e-3"]
    full = _cli(*common, "--set", "train.check_per_category=1", "--name", "full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    check = json.loads((tmp_path / "runs" / "full" / "run.json").read_text())["check"]  # the end-of-run scorecard
    assert check["prompts"] == 7 and 0 <= check["adapter_correct_share"] <= 1 and check["kl"] > 0  # 1 per category
    assert "held-out check (7 prompts)" in full.stdout + full.stderr
    # the adapter alone (as exported) is scored and warned on too: a base opening could hold a ruined adapter's facts
    assert 0 <= check["alone_correct_share"] <= 1 and "the adapter alone, as exported" in full.stdout + full.stderr
    # the killed run and its resume skip the end-of-run check (checked above; the adapters are what is compared)
    proc = subprocess.Popen([PY, "-m", "alignlab", *common, "--set", "train.check_per_category=0", "--name", "killed"],
                            cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, ALIGNLAB_QUIET="1"))
    ckpt = tmp_path / "runs" / "killed" / "checkpoints" / "checkpoint-4"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    assert not (tmp_path / "runs" / "killed" / "adapter").exists()
    resumed = _cli("train", "dpo", "--resume", str(tmp_path / "runs" / "killed"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(tmp_path / "runs" / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "runs" / "killed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert json.loads((tmp_path / "runs" / "killed" / "run.json").read_text())["steps"] == 10
    records = [json.loads(x) for x in (tmp_path / "runs" / "killed" / "metrics.jsonl").read_text().splitlines()]
    mark = next(i for i, r in enumerate(records) if r.get("event") == "resumed")  # resumed, not restarted
    at = records[mark]["step"]
    assert at >= 4 and [r["step"] for r in records[mark + 1 :] if "loss" in r] == list(range(at + 1, 11))


def test_nan_loss_stops_without_writing_an_adapter(tiny_model, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl")
    out = _cli("train", "dpo", "--model", tiny_model, "--data", str(data), "--max-steps", "6", "--lr", "1e35",
               "--set", "train.sample_prompts=0", "--set", "train.max_grad_norm=1e30", "--name", "nan", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [x for x in out.stderr.strip().splitlines() if x.startswith("error")]
    assert len(lines) == 1 and "loss became nan" in lines[0].lower()
    assert "Traceback" not in out.stderr
    run = tmp_path / "runs" / "nan"
    assert not (run / "adapter").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_two_cpu_processes_end_with_the_same_adapter(tiny_model, tmp_path):
    """Two processes of batch 2 over 16 pairs: 4 steps (the plan said 8, one process's count), tokens counted over
    both processes (rank 0's alone was half), the run directory printed once (twice before), and a --resume without
    --processes relaunches both (in one process it trained 8 steps to another adapter)."""
    import shutil

    from safetensors.torch import load_file

    data = write_pairs(tmp_path / "pairs.jsonl")
    common = ["--model", tiny_model, "--data", str(data), "--set", "train.sample_prompts=0",
              "--set", "train.check_per_category=0", "--set", "train.group_by_length=false"]
    out = _cli("train", "dpo", *common, "--batch-size", "2", "--set", "train.save_steps=1", "--processes", "2",
               "--name", "ddp", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "runs" / "ddp"
    assert out.stdout.split() == [str(Path("runs") / "ddp")]
    ranks = sorted((run / "ranks").glob("rank-*.json"))
    digests = {json.loads(p.read_text())["sha256"] for p in ranks}
    assert len(ranks) == 2 and len(digests) == 1
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["processes"] == 2 and info["steps"] == 4 and info["plan"]["estimate"]["steps"] == 4
    assert info["launch"] == "torchrun"
    one = _cli("train", "dpo", *common, "--batch-size", "4", "--name", "one", cwd=tmp_path, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    tokens = [[json.loads(x)["tokens"] for x in (tmp_path / "runs" / n / "metrics.jsonl").read_text().splitlines()
               if '"loss"' in x][-1] for n in ("ddp", "one")]
    assert tokens[0] == tokens[1], tokens  # the same 16 pairs, counted once each
    resumed = tmp_path / "runs" / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "adapter")
    shutil.rmtree(resumed / "checkpoints" / "checkpoint-4")
    (resumed / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    again = _cli("train", "dpo", "--resume", str(resumed), cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "launching 2 processes" in again.stderr and json.loads((resumed / "run.json").read_text())["steps"] == 4
    a, b = (load_file(str(r / "adapter" / "adapter_model.safetensors")) for r in (run, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = _cli("train", "dpo", "--resume", str(resumed), "--processes", "3", cwd=tmp_path, timeout=300)
    assert other.returncode == 2 and "was trained in 2 processes, not 3" in other.stderr


def test_resume_from_the_last_step_or_inside_a_later_epoch_matches_the_uninterrupted_run(tiny_model, tmp_path):
    """Two kills the random-kill test hits only by chance, each resumed to the uninterrupted run's adapter exactly:
    - after the last step's checkpoint but before the adapter: --resume finishes at that checkpoint's weights,
      with no step past --max-steps (transformers alone would train one more);
    - inside the second epoch (12 pairs, batch 2: 6 steps an epoch; checkpoint-8): the resumed steps see the
      second epoch's batches (transformers' length-grouped sampler alone replayed the first epoch's order)."""
    import shutil

    from safetensors.torch import load_file

    data = write_pairs(tmp_path / "pairs.jsonl", n=12)
    out = _cli("train", "dpo", "--model", tiny_model, "--data", str(data), "--max-steps", "9", "--batch-size", "2",
               "--set", "train.sample_prompts=0", "--set", "train.save_steps=1", "--set", "train.check_per_category=0",
               "--lr", "5e-3", "--name", "r", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    full = tmp_path / "runs" / "r"
    assert sorted(p.name for p in (full / "checkpoints").iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-8", "checkpoint-9"]
    expected = load_file(str(full / "adapter" / "adapter_model.safetensors"))
    for name, drop in (("last", []), ("epoch2", ["checkpoint-9"])):
        run = tmp_path / "runs" / name
        shutil.copytree(full, run)
        shutil.rmtree(run / "adapter")  # the state a kill before the adapter is written leaves
        for ckpt in drop:
            shutil.rmtree(run / "checkpoints" / ckpt)
        meta = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**meta, "status": "running"}))
        resumed = _cli("train", "dpo", "--resume", str(run), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        got = load_file(str(run / "adapter" / "adapter_model.safetensors"))
        assert max((expected[k] - got[k]).abs().max().item() for k in expected) == 0.0, name
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if "loss" in r] == list(range(1, 10)), name
        meta = json.loads((run / "run.json").read_text())
        assert meta["status"] == "done" and meta["steps"] == 9, name

def test_continued_run_precomputes_the_reference_only_for_the_pairs_its_steps_use(tiny_model, tmp_path):
    """DPO --from another run precomputes the reference (the starting adapter) before training; with
    --max-steps 2 of batch 2 over 16 pairs only 4 pairs can train, so only 4 are computed."""
    data = write_pairs(tmp_path / "pairs.jsonl")
    common = ["--model", tiny_model, "--data", str(data), "--batch-size", "2", "--lr", "5e-3",
              "--set", "train.sample_prompts=0", "--set", "train.check_per_category=0"]
    first = _cli("train", "dpo", *common, "--max-steps", "2", "--name", "a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "reference log-probs" not in first.stderr  # the bare base is the reference: nothing precomputed
    second = _cli("train", "dpo", *common, "--max-steps", "2", "--from", str(tmp_path / "runs" / "a"), "--name", "b",
                  cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "reference log-probs for 4 of 16 pairs" in " ".join(second.stderr.split())
    meta = json.loads((tmp_path / "runs" / "b" / "run.json").read_text())
    assert meta["status"] == "done" and meta["steps"] == 2


def test_an_unset_learning_rate_is_the_methods_default(tiny_model, tmp_path):
    """train.learning_rate unset (null in a new project's alignlab.yaml): each method trains at its own default,
    and the run's context, hence its config.yaml, holds the number; a rate the user sets wins."""
    from alignlab import methods
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine

    data = write_pairs(tmp_path / "pairs.jsonl")
    cfg = apply_overrides(ProjectConfig(), {"model": tiny_model})
    assert cfg.train.learning_rate is None
    for method in ("dpo", "ipo", "simpo", "orpo"):
        ctx = engine.prepare(method, cfg, str(data), tmp_path / "runs")
        assert ctx.cfg.train.learning_rate == methods.get(method).learning_rate
    assert cfg.train.learning_rate is None  # the caller's config is not changed
    ctx = engine.prepare("dpo", apply_overrides(cfg, {"train.learning_rate": 3e-4}), str(data), tmp_path / "runs")
    assert ctx.cfg.train.learning_rate == 3e-4


def test_shared_prompt_auto_is_off_on_a_gpu_only():
    from alignlab.train.preference import shares_prompt

    assert shares_prompt("auto", "cpu") and not shares_prompt("auto", "cuda")
    assert shares_prompt("on", "cuda") and not shares_prompt("off", "cpu")


@pytest.mark.parametrize("setting,plain", [("auto", False), ("on", False), ("off", True)])
def test_shared_prompt_setting_picks_the_forward(tiny_model, tmp_path, monkeypatch, setting, plain):
    """train.shared_prompt: auto shares the prompt on a CPU; off runs TRL's concatenated forward (what auto picks on
    a GPU), for the policy and the reference alike; either way the run learns."""
    from safetensors.torch import load_file

    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine, preference

    calls = {"shared": 0, "plain": 0}
    shared, concatenated = preference.completion_logps, preference.concatenated_logps
    monkeypatch.setattr(preference, "completion_logps",
                        lambda m, b: calls.__setitem__("shared", calls["shared"] + 1) or shared(m, b))
    monkeypatch.setattr(preference, "concatenated_logps",
                        lambda m, b: calls.__setitem__("plain", calls["plain"] + 1) or concatenated(m, b))
    data = write_pairs(tmp_path / "pairs.jsonl", n=4)
    cfg = apply_overrides(ProjectConfig(model=tiny_model), {
        "train.sample_prompts": 0, "train.batch_size": 2, "train.max_steps": 2, "train.learning_rate": 5e-3,
        "train.save_steps": 100, "train.check_per_category": 0, "train.shared_prompt": setting})
    run_dir = engine.run(engine.prepare("dpo", cfg, str(data), tmp_path / "runs"), str(data))
    assert calls["plain" if plain else "shared"] == 4 and calls["shared" if plain else "plain"] == 0  # 2 steps x 2
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps[0]["rewards/margins"] == 0 < steps[1]["rewards/margins"]  # the policy left its reference behind
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())


def test_kto_balances_unequal_thumbs_the_way_trl_recommends(tiny_model, tmp_path, caplog):
    """3 thumbs up, 9 down: unset weights become desirable 3.0 / undesirable 1.0, inside the range TRL checks
    (KTO paper Eq. 8), so TRL's own class-balance warning stays silent; explicit weights are kept as given."""
    import logging

    from alignlab.train import engine
    from alignlab.train.kto import class_weights

    assert class_weights([1, 0, 0, 0], None, None) == (3.0, 1.0)
    assert class_weights([1, 1, 1, 0], None, None) == (1.0, 3.0)
    assert class_weights([1, 0, 0, 0], None, 2.0) == (6.0, 2.0)
    assert class_weights([1, 0, 0, 0], 1.0, 1.0) == (1.0, 1.0)
    rows = [{"prompt": f"Say hi #{i}", "completion": "Hi. Thrilling, I know." if i < 3 else "Hello there!", "label": i < 3}
            for i in range(12)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    warned = {}
    for name, extra in (("auto", {}), ("given", {"kto.desirable_weight": 1.0, "kto.undesirable_weight": 1.0})):
        cfg = cfg_for(tiny_model, **{"train.max_steps": 1, **extra})
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            run_dir = engine.run(engine.prepare("kto", cfg, str(data), tmp_path / name), str(data))
        warned[name] = any("ideal range" in r.getMessage() for r in caplog.records)
        assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert warned == {"auto": False, "given": True}


@pytest.mark.parametrize("override", [{"truncation_mode": "keep_end"}, {"pad_to_multiple_of": 8},
                                      {"padding_free": True}])
def test_batching_overrides_the_pair_collator_never_reads_are_refused(tiny_model, tmp_path, override):
    """DPOConfig's batching options were accepted and then ignored (truncation_mode=keep_end still kept each pair's
    start: PrefixCollator reads none of them); now refused in one line before anything loads. A reward model's
    collator is TRL's own and reads pad_to_multiple_of: there it stays allowed."""
    from alignlab.errors import AlignlabError
    from alignlab.train import engine

    data = write_pairs(tmp_path / "pairs.jsonl", n=4)
    cfg = cfg_for(tiny_model, **{"train.trainer_overrides": override})
    key = next(iter(override))
    for method in ("dpo", "orpo"):
        with pytest.raises(AlignlabError, match=f"trainer_overrides.{key} has no effect on {method}: alignlab batches"):
            engine.prepare(method, cfg, str(data), tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    if key == "pad_to_multiple_of":
        assert engine.prepare("rm", cfg, str(data), tmp_path / "runs").run_dir.is_dir()


def test_kto_refuses_a_batch_of_one_before_the_model_loads(tiny_model, tmp_path):
    """`train kto --batch-size 1` failed in TRL's KTOTrainer after the model had loaded, leaving a failed run that held
    its name; now it is refused in one line before, and the name stays free. TRL's loss without the KL estimate
    (apo_zero_unpaired) takes a batch of one, and is let through to a trainer TRL builds."""
    from alignlab.errors import AlignlabError
    from alignlab.train import engine
    from alignlab.train.kto import build_trainer

    rows = [{"prompt": f"Say hi #{i}", "completion": "Hi." if i % 2 else "Hello there!", "label": bool(i % 2)}
            for i in range(4)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = tmp_path / "runs"
    refused = r"train.batch_size \(--batch-size\) is 1; it must be at least 2 for KTO"
    with pytest.raises(AlignlabError, match=refused) as e:
        engine.prepare("kto", cfg_for(tiny_model, **{"train.batch_size": 1}), str(data), runs, name="k1")
    assert "\n" not in str(e.value) and "--grad-accum" in str(e.value)
    assert not (runs / "k1").exists()
    two = cfg_for(tiny_model, **{"train.batch_size": 2})
    assert engine.prepare("kto", two, str(data), runs, name="k1").run_dir.name == "k1"  # the name is still free
    apo = cfg_for(tiny_model, **{"train.batch_size": 1, "train.trainer_overrides": {"loss_type": "apo_zero_unpaired"}})
    ctx = engine.prepare("kto", apo, str(data), runs, name="apo")
    ctx.model = engine._load_model(ctx)
    assert build_trainer(ctx).args.per_device_train_batch_size == 1


def test_fp16_weights_on_a_gpu_train_with_loss_scaling(tmp_path):
    """`--precision fp16` (the planner's advice for a T4) loaded fp16 weights and trained without autocast or a
    gradient scaler: the arguments handed to TRL now ask for fp16 mixed precision with LoRA; not on a CPU, not for
    a full fine-tune (its weights would be the fp16 ones the scaler refuses). Checked here without a GPU."""
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train.engine import RunContext

    def fp16(device, **over):
        cfg = apply_overrides(ProjectConfig(), {"train.precision": "fp16", **over})
        return RunContext("dpo", cfg, tmp_path, [], None, device).training_args()["fp16"]

    assert fp16("cuda") is True
    assert fp16("cpu") is False and fp16("cuda", **{"lora.enabled": False}) is False
    assert fp16("cuda", **{"train.precision": "bf16"}) is False

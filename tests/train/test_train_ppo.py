"""PPO recipe: hand-checked reward/advantage plumbing, and real runs on the tiny model through the engine.

The task: reward = fraction of the completion's characters that are newlines ("go quiet"). The tiny model is a
random 2-layer Llama over the tiny 4k-token vocabulary whose most likely next token is a newline: at temperature
0.1 it already emits mostly newlines; at 0.15 newlines are rare (reward about 0.16 on the first steps) but
sampled often enough for PPO to learn in 40 steps. LoRA also covers ``lm_head``: adapters inside the trunk
alone cannot reshape a random model's output distribution.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from alignlab.config import ProjectConfig
from alignlab.train import engine
from alignlab.train.ppo import advantages, batch_indices, completion_mask

REWARD_PY = '''
def frac_newline(prompts, completions, **columns):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [t.count("\\n") / max(1, len(t)) for t in texts]
'''
STEPS = 40
KL_BOUND = 2.0  # nats per token; a policy that only emits newlines is about 1.5 from the reference here


def _project(tmp_path, tiny_model, beta, **train):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "newline.py").write_text(REWARD_PY)
    (tmp_path / "rewards.yaml").write_text("components:\n  - {fn: newline.py:frac_newline, weight: 1.0}\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say something about topic {i}."}) + "\n" for i in range(32)))
    cfg = ProjectConfig.model_validate(
        {
            "model": tiny_model,
            "lora": {"target_modules": ["q_proj", "v_proj", "lm_head"]},
            "train": {
                "max_steps": STEPS,
                "batch_size": 8,
                "learning_rate": 2e-3,
                "seed": 2,  # the task is on a knife edge: seeds 2, 3 and 4 learn in 40 steps, seed 1 samples no newline early and stays flat
                "sample_prompts": 0,
                "save_steps": 1000,
                "device": "cpu",
                **train,
            },
            "online": {
                "rewards": str(tmp_path / "rewards.yaml"),
                "max_completion_length": 8,
                "temperature": 0.15,
                "beta": beta,
                # at temperature 0.15 the bf16 head's rounding (logits / 0.15) moves this random model's few
                # sampled newlines enough that the 40-step run learns or not by chance; fp32 keeps it exact
                "fp32_lm_head": True,
            },
        }
    )
    return cfg, prompts


def _train(tmp_path, tiny_model, beta, run_dir=None, resume=False, **train):
    cfg, prompts = _project(tmp_path, tiny_model, beta, **train)
    ctx = engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs", run_dir=run_dir)
    return engine.run(ctx, str(prompts), resume=resume)


def _metrics(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def _mean(xs):
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def weak_leash(tiny_model, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("ppo_weak"), tiny_model, beta=0.05)


def test_completion_mask_ends_at_first_stop_token():
    ids = torch.tensor([[5, 2, 2, 2], [5, 6, 7, 8], [2, 9, 2, 2]])  # 2 is both EOS and padding
    assert completion_mask(ids, [2]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_score_lands_on_last_valid_token_and_flows_back():
    """Row 0 stopped at token 2 (EOS), row 1 ran to the length limit. Worked by hand with gamma = lam = 1,
    values 0, log pi - log pi_ref = 0.5 per token and beta 0.1 (penalty -0.05 per token):
    rewards  row 0: [-0.05, -0.05, 1 - 0.05, 0]            row 1: [-0.05, -0.05, -0.05, 2 - 0.05]
    returns (reward-to-go) row 0: [0.85, 0.9, 0.95, 0]     row 1: [1.8, 1.85, 1.9, 1.95]
    and, values being 0, the raw advantages equal the returns; whitened over the 7 valid tokens.
    """
    mask = completion_mask(torch.tensor([[11, 12, 2, 2], [11, 12, 13, 14]]), [2])
    logprobs = torch.full((2, 4), -1.0)
    adv, returns, rewards = advantages(
        torch.tensor([1.0, 2.0]), logprobs, logprobs - 0.5, torch.zeros(2, 4), mask, kl_coef=0.1, gamma=1.0, lam=1.0
    )
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.05, 0.95, 0.0], [-0.05, -0.05, -0.05, 1.95]]))
    torch.testing.assert_close(returns, torch.tensor([[0.85, 0.9, 0.95, 0.0], [1.8, 1.85, 1.9, 1.95]]))
    valid = returns[mask.bool()]
    torch.testing.assert_close(adv[mask.bool()], (valid - valid.mean()) / valid.std())
    assert adv[0, 3] == 0


def test_batches_cover_every_prompt_once_per_pass():
    seen = [i for step in range(4) for i in batch_indices(10, 5, step, seed=0)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:5] == batch_indices(10, 5, 0, seed=0)  # same step, same batch (what resume relies on)


def test_ppo_raises_reward_with_bounded_kl(weak_leash):
    from safetensors.torch import load_file

    rows = _metrics(weak_leash)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    keys = "loss policy_loss value_loss reward reward_std kl clipfrac approx_kl completion_length tokens_per_s"
    assert set(keys.split()) <= set(rows[0])
    first, last = _mean([r["reward"] for r in rows[:10]]), _mean([r["reward"] for r in rows[-10:]])
    kl_last = _mean([r["kl"] for r in rows[-10:]])
    print(f"reward {first:.3f} -> {last:.3f}, kl (last 10 steps) {kl_last:.3f}")
    assert last > first + 0.05 and last > 3 * first
    assert max(r["kl"] for r in rows) < KL_BOUND

    adapter = load_file(str(weak_leash / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # zero at initialisation: the adapter trained
    head = load_file(str(weak_leash / "value_head.safetensors"))
    assert head["weight"].abs().sum() > 0  # zero at initialisation: the critic trained
    run = json.loads((weak_leash / "run.json").read_text())
    assert run["status"] == "done" and run["steps"] == STEPS and "reward" in run["final"]


def test_larger_kl_coefficient_keeps_policy_closer(weak_leash, tiny_model, tmp_path):
    strong = _train(tmp_path, tiny_model, beta=1.0)
    kl_weak = _mean([r["kl"] for r in _metrics(weak_leash)[-10:]])
    kl_strong = _mean([r["kl"] for r in _metrics(strong)[-10:]])
    print(f"kl over the last 10 steps: beta 0.05 -> {kl_weak:.3f}, beta 1.0 -> {kl_strong:.3f}")
    assert kl_strong < 0.5 * kl_weak


def test_resume_continues_from_checkpoint_like_an_uninterrupted_run(tiny_model, tmp_path):
    from safetensors.torch import load_file

    whole = _train(tmp_path / "a", tiny_model, beta=0.05, max_steps=4, save_steps=2)
    assert (whole / "checkpoints" / "checkpoint-2" / "trainer_state.pt").is_file()
    # a second run directory that holds only the step-2 checkpoint, as if killed after writing it
    cut = tmp_path / "b" / "run"
    (cut / "checkpoints").mkdir(parents=True)
    shutil.copytree(whole / "checkpoints" / "checkpoint-2", cut / "checkpoints" / "checkpoint-2")
    resumed = _train(tmp_path / "b", tiny_model, beta=0.05, run_dir=cut, resume=True, max_steps=4, save_steps=2)
    assert [r["step"] for r in _metrics(resumed)] == [3, 4]
    marks = [r for r in map(json.loads, (resumed / "metrics.jsonl").read_text().splitlines()) if "event" in r]
    assert marks == [{"step": 2, "event": "resumed", "checkpoint": "checkpoint-2"}]
    a = load_file(str(whole / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_non_finite_loss_stops_before_any_update(tiny_model, tmp_path):
    from alignlab.train.callbacks import NonFiniteLoss

    cfg, prompts = _project(tmp_path, tiny_model, beta=0.05, max_steps=2)
    (tmp_path / "newline.py").write_text("def frac_newline(prompts, completions, **kw):\n    return [1e39] * len(prompts)\n")
    ctx = engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs")
    with pytest.raises(NonFiniteLoss):
        engine.run(ctx, str(prompts))  # 1e39 is a finite float but overflows float32: the loss is inf
    assert not (ctx.run_dir / "adapter").exists()
    assert json.loads((ctx.run_dir / "run.json").read_text())["status"] == "failed"


def test_gold_rater_and_warnings_share_grpo_names(tiny_model, tmp_path):
    """A `gold:` rater is scored on its steps, and the KL warning is GRPO's `kl_budget` (HackingMonitor)."""
    cfg, prompts = _project(tmp_path, tiny_model, beta=0.05, max_steps=3, batch_size=2)
    # a reward that differs between samples (distinct characters), so the policy moves and KL passes the budget
    (tmp_path / "chars.py").write_text("def chars(prompts, completions, **kw):\n"
                                       "    return [len(set(c[0]['content'])) / 50 for c in completions]\n")
    (tmp_path / "rewards.yaml").write_text("components:\n  - {fn: chars.py:chars, weight: 1.0}\n"
                                           "gold: {fn: format_check, args: {pattern: 'e'}}\n")
    cfg.online.gold_steps, cfg.online.kl_budget = 2, 1e-12
    run_dir = engine.run(engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs"), str(prompts))
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r]
    assert [r["step"] for r in steps if "gold" in r] == [1, 3]  # global steps 0 and 2, as in GRPO
    for key in ("reward_parts/chars/mean", "distinct_2", "completions/mean_length", "kl"):
        assert all(key in r for r in steps), key
    assert [r["warning"] for r in recs if "warning" in r] == ["kl_budget"]


def test_more_than_one_process_is_refused(tiny_model, tmp_path, monkeypatch):
    from alignlab.errors import AlignlabError

    cfg, prompts = _project(tmp_path, tiny_model, beta=0.05)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(AlignlabError, match="PPO runs in one process, not 2"):
        engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs")


def test_cli_refuses_processes_for_ppo_in_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "alignlab", "train", "ppo", "--processes", "2"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "PPO runs in one process" in lines[0] and "--processes" in lines[0]


def test_a_prompt_over_max_prompt_length_with_the_system_prompt_is_refused_before_a_step(tiny_model, tmp_path):
    """The data check passes these prompts; the project's long system prompt takes them over the limit. PPO says so
    before the first step (it used to cut each prompt from the left, the system prompt first, without a word)."""
    from alignlab.errors import AlignlabError

    cfg, prompts = _project(tmp_path, tiny_model, beta=0.05, max_steps=2, max_prompt_length=96)
    ctx = engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs")
    ctx.cfg.system_prompt = "You are a pirate. " * 30
    with pytest.raises(AlignlabError, match=r"32 prompt\(s\) over train.max_prompt_length=96 tokens"):
        engine.run(ctx, str(prompts))
    assert not (ctx.run_dir / "adapter").exists()


def test_diversity_penalty_compares_the_batch(tiny_model, tmp_path):
    """PPO draws one answer per prompt: the diversity penalty compares a batch's answers (it saw groups of one: 0)."""
    cfg, prompts = _project(tmp_path, tiny_model, beta=0.05, max_steps=1, batch_size=4)
    (tmp_path / "rewards.yaml").write_text("components:\n  - {fn: newline.py:frac_newline, weight: 1.0}\n"
                                           "diversity: {weight: 0.1}\n")
    run_dir = engine.run(engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs"), str(prompts))
    step = _metrics(run_dir)[0]
    assert step["reward_parts/diversity/mean"] > 0.05  # 0 when every answer was its own group


def test_reward_functions_see_the_system_prompt_the_policy_saw(tiny_model, tmp_path):
    """GRPO/RLOO hand reward functions the prompt with the project's system prompt; PPO handed the bare user turn,
    so a judge or reward model scored PPO's samples in another context."""
    cfg, prompts = _project(tmp_path, tiny_model, beta=0.05, max_steps=1, batch_size=2)
    seen = tmp_path / "seen.jsonl"
    (tmp_path / "spy.py").write_text("import json\n"
                                     "def spy(prompts, completions, **kw):\n"
                                     f"    open({str(seen)!r}, 'a').write(json.dumps(prompts) + '\\n')\n"
                                     "    return [0.0] * len(completions)\n")
    (tmp_path / "rewards.yaml").write_text("components:\n  - {fn: spy.py:spy, weight: 1.0}\n")
    cfg.system_prompt = "You are terse."
    engine.run(engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs"), str(prompts))
    first = json.loads(seen.read_text().splitlines()[0])
    assert first[0][0] == {"role": "system", "content": "You are terse."} and first[0][1]["role"] == "user"


def test_a_completion_no_component_scored_is_named_with_its_component_and_line(tiny_model, tmp_path):
    """PPO said "reward 'total' returned None for completion 1, not a number": the recorder's name, with no file:line
    (a NaN or a raising component was named with its line)."""
    from alignlab.errors import AlignlabError

    cfg, prompts = _project(tmp_path, tiny_model, beta=0.05, max_steps=1, batch_size=4)
    (tmp_path / "some.py").write_text("def some(prompts, completions, **kw):\n"
                                      "    return [None if i == 2 else 0.5 for i in range(len(completions))]\n")
    (tmp_path / "rewards.yaml").write_text("components:\n  - {name: sometimes, fn: some.py:some}\n")
    with pytest.raises(AlignlabError) as err:
        engine.run(engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs"), str(prompts))
    assert str(err.value).startswith(f"{tmp_path / 'rewards.yaml'}:2: reward component 'sometimes' (some.py:some) "
                                     "returned None for completion 3 of 4: PPO needs a score for every answer")


def test_a_resumed_run_does_not_warn_twice(tiny_model, tmp_path):
    """Killed after checkpoint-2 with its records on disk, resumed: the monitor started from nothing, and the KL
    warning (once per run) came again at step 3; the length baseline and gold history restarted too."""
    cfg, prompts = _project(tmp_path, tiny_model, beta=0.05, max_steps=4, save_steps=2, batch_size=2)
    # a reward that differs between samples, so the policy moves at once: KL is 0 at step 1 (the adapter starts as
    # the base) and past this budget from step 2
    (tmp_path / "chars.py").write_text("def chars(prompts, completions, **kw):\n"
                                       "    return [len(set(c[0]['content'])) / 50 for c in completions]\n")
    (tmp_path / "rewards.yaml").write_text("components:\n  - {fn: chars.py:chars, weight: 1.0}\n")
    cfg.online.kl_budget = 1e-12
    whole = engine.run(engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs"), str(prompts))
    recs = [json.loads(x) for x in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["warning"]) for r in recs if "warning" in r] == [(2, "kl_budget")]
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)  # its records of steps 3 and 4 stand for the killed attempt's: resume drops them
    assert sorted(p.name for p in (cut / "checkpoints").iterdir()) == ["checkpoint-2"]
    engine.run(engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs", run_dir=cut, resumed=True), str(prompts),
               resume=True)
    recs = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3, 4]
    assert [(r["step"], r["warning"]) for r in recs if "warning" in r] == [(2, "kl_budget")]


def test_settings_its_loop_does_not_use_are_said_to_be_ignored(tiny_model, tmp_path, capsys):
    """online.use_vllm=true and train.gradient_checkpointing on were silently ignored (GRPO refuses vLLM here)."""
    cfg, prompts = _project(tmp_path, tiny_model, beta=0.05, gradient_checkpointing="on")
    cfg.online.use_vllm = True
    engine.prepare("ppo", cfg, str(prompts), tmp_path / "runs")
    err = " ".join(capsys.readouterr().err.split())
    assert "note: PPO samples with transformers' generate (alignlab's sampler on CPU): online.use_vllm, for GRPO and " \
           "RLOO, is ignored" in err
    assert "note: PPO's loop does not checkpoint activations (train.gradient_checkpointing on is ignored)" in err

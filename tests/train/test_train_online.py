"""GRPO / RLOO recipes: the shared-prompt forward equals TRL's, runs record the instruments, NaN rewards stop, reward rises."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from alignlab.config import ProjectConfig, apply_overrides
from alignlab.errors import AlignlabError
from alignlab.train import engine

PROMPTS = ["Say something about " + w for w in "apples rivers stones clouds paper music tables gardens".split()]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


def write_project(d: Path, reward_py: str, spec: str) -> Path:
    (d / "rew.py").write_text(textwrap.dedent(reward_py))
    (d / "rewards.yaml").write_text(textwrap.dedent(spec))
    data = d / "prompts.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS))
    return data


def run(method: str, model: str, d: Path, data: Path, init_adapter: str | None = None, **overrides) -> Path:
    base = {"train.sample_prompts": 0, "train.batch_size": 2, "train.save_steps": 1000, "online.num_generations": 4,
            "online.max_completion_length": 8, "online.rewards": str(d / "rewards.yaml")}
    cfg = apply_overrides(ProjectConfig(model=model), {**base, **overrides})
    ctx = engine.prepare(method, cfg, str(data), d / "runs", init_adapter=init_adapter)
    return engine.run(ctx, str(data))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def lora_b_moved(run_dir: Path) -> bool:
    from safetensors.torch import load_file

    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    return any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # LoRA B starts at zero


CHARS = """
    def chars(prompts, completions, **kw):
        return [len(set(c[0]["content"])) / 50 for c in completions]
"""


def test_shared_prompt_forward_matches_trl(tiny_arch):
    """Values and LoRA gradients equal TRL's fused LM-head forward, with uneven prompts and padded completions."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from alignlab.train.online import group_logps

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_arch), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # make the adapter matter
    add_fused_lm_head(model.get_base_model(), temperature=0.7, outputs=("log_probs", "entropy"))
    prompts = [[0, 0, 5, 6, 7], [9, 8, 7, 6, 5], [0, 0, 5, 6, 7], [9, 8, 7, 6, 5]]  # two prompts, twice each, left-padded
    completions = [[11, 12, 13], [14, 15, 2], [16, 2, 0], [17, 18, 19]]
    ids = torch.tensor([p + c for p, c in zip(prompts, completions)])
    p_mask = torch.tensor([[int(t != 0) for t in p] for p in prompts])
    mask = torch.cat([p_mask, torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1]])], dim=1)
    k = 3

    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-k] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    want_logps, want_ent = out.log_probs[:, -k:], out.entropy[:, -k:]
    got_logps, got_ent = group_logps(model, ids, mask, k, temperature=0.7, compute_entropy=True)
    sel = mask[:, -k:].bool()
    assert torch.allclose(got_logps[sel], want_logps[sel], atol=1e-4)
    assert torch.allclose(got_ent[sel], want_ent[sel], atol=1e-4)

    params = [p for n, p in model.named_parameters() if p.requires_grad]
    g_want = torch.autograd.grad(want_logps[sel].sum(), params)
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    g_got = torch.autograd.grad(group_logps(model, ids, mask, k, temperature=0.7)[0][sel].sum(), params)
    for a, b in zip(g_got, g_want):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)


def test_grpo_run_records_instruments_and_trains(tiny_arch, tmp_path):
    data = write_project(
        tmp_path,
        CHARS,
        """
        components:
          - {name: chars, fn: rew.py:chars, weight: 1.0}
        gold: {fn: format_check, args: {pattern: 'e'}}
        """,
    )
    run_dir = run("grpo", tiny_arch, tmp_path, data, **{"train.max_steps": 3, "online.gold_steps": 2, "online.kl_budget": 1e-12})
    recs = records(run_dir)
    steps = [r for r in recs if "loss" in r]
    assert len(steps) == 3
    for r in steps:
        for key in ("reward", "reward_parts/chars/mean", "reward_parts/chars/std", "no_signal_frac", "distinct_2",
                    "kl", "completions/mean_length", "tokens_per_s" if r["step"] > 1 else "tokens"):
            assert key in r, (r["step"], key)
    assert [r["step"] for r in steps if "gold" in r] == [1, 3]  # scored at global steps 0 and 2
    warnings = [r for r in recs if "warning" in r]
    assert [w["warning"] for w in warnings] == ["kl_budget"]  # KL is 0 at step 1 and positive after
    assert warnings[0]["step"] == 2 and "KL" in warnings[0]["message"]
    assert lora_b_moved(run_dir)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"


def test_rloo_run(tiny_model, tmp_path):
    data = write_project(tmp_path, CHARS, "components:\n  - {name: chars, fn: rew.py:chars}\n")
    run_dir = run("rloo", tiny_model, tmp_path, data, **{"train.max_steps": 2})
    steps = [r for r in records(run_dir) if "loss" in r]
    assert len(steps) == 2 and all("kl" in r and "reward_parts/chars/mean" in r for r in steps)
    assert lora_b_moved(run_dir)


def test_grpo_continued_from_a_run_saves_only_its_trained_adapter(tiny_model, tmp_path):
    """TRL keeps a frozen copy of the starting adapter as the reference ("ref"); the run's adapter is the trained one."""
    from safetensors.torch import load_file

    data = write_project(tmp_path, CHARS, "components:\n  - {name: chars, fn: rew.py:chars}\n")
    first = run("grpo", tiny_model, tmp_path, data, **{"train.max_steps": 1})
    second = run("grpo", tiny_model, tmp_path, data, init_adapter=str(first), **{"train.max_steps": 2,
                                                                                   "train.learning_rate": 5e-2})
    saved = sorted(p.relative_to(second / "adapter").as_posix() for p in (second / "adapter").rglob("*.safetensors"))
    assert saved == ["adapter_model.safetensors"]
    before = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(second / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert any((before[k] - after[k]).abs().max() > 0 for k in before)  # the trained adapter, not the frozen copy


def test_nan_reward_stops_the_run_naming_it(tiny_model, tmp_path):
    data = write_project(
        tmp_path,
        "def broken(prompts, completions, **kw):\n    return [float('nan')] * len(completions)\n",
        "components:\n  - {name: broken_reward, fn: rew.py:broken}\n",
    )
    with pytest.raises(AlignlabError, match="broken_reward.*nan"):
        run("grpo", tiny_model, tmp_path, data, **{"train.max_steps": 2})
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert not (run_dir / "adapter").exists()


def test_vllm_needs_gpu_and_package():
    from alignlab.train.online import vllm_args

    import importlib.util

    assert vllm_args(False) == {}
    cuda, vllm = torch.cuda.is_available(), importlib.util.find_spec("vllm") is not None
    if not (cuda and vllm):  # on a GPU machine without the package the refusal names the package
        missing = "the vllm package" if not vllm else "a CUDA GPU"
        with pytest.raises(AlignlabError, match=f"use_vllm needs a CUDA GPU and vllm; this machine lacks {missing}"):
            vllm_args(True)
    else:
        assert vllm_args(True) == {"use_vllm": True, "vllm_mode": "colocate"}


def test_default_reward_is_heuristic_minus_length():
    from types import SimpleNamespace

    from alignlab.train.online import build_reward

    rec = build_reward(SimpleNamespace(cfg=ProjectConfig()))
    assert rec.gold is None and rec.group_size == 4
    assert rec.reward.names[:2] == ["heuristic", "length"] and rec.reward.cap == 1.0


@pytest.mark.parametrize("method,gain", [("grpo", 0.15), ("rloo", 0.05)])
def test_reward_rises_on_a_learnable_task(tiny_model, tmp_path, method, gain):
    """Reward = share of completion tokens whose embedding's first coordinate is positive (0.5 at random).

    The tiny model's embeddings are scaled up 5x so that its output distribution is not flat; a LoRA can then
    tilt the last hidden state toward that coordinate (the reachable mean is about 0.79). GRPO gets there; RLOO
    climbs more slowly (about +0.13 in 40 steps; with its advantages' sign flipped the reward fell to 0.28).
    """
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tmp_path / "model"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(5.0)
    model.save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(model_dir)
    emb = load_file(str(model_dir / "model.safetensors"))["model.embed_tokens.weight"]
    (tmp_path / "pos.json").write_text(json.dumps((emb[:, 0] > 0).nonzero().flatten().tolist()))
    data = write_project(
        tmp_path,
        """
        import json, pathlib
        POS = set(json.loads((pathlib.Path(__file__).parent / "pos.json").read_text()))
        def positive(prompts, completions, completion_ids, **kw):
            return [sum(t in POS for t in ids) / max(1, len(ids)) for ids in completion_ids]
        """,
        "components:\n  - {name: positive, fn: rew.py:positive}\n",
    )
    run_dir = run(method, str(model_dir), tmp_path, data,
                  **{"train.max_steps": 40, "train.batch_size": 4, "train.learning_rate": 3e-3})
    rewards = [r["reward"] for r in records(run_dir) if "loss" in r]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.6 and last > first + gain, rewards


@pytest.mark.slow
def test_grpo_on_the_default_model(default_model, tmp_path):
    """Two steps of 2 prompts on SmolLM2-135M with the default reward: the chat template, EOS and the instruments."""
    data = tmp_path / "prompts.jsonl"
    questions = ["What is the capital of France?", "What is 17 times 3?", "Name a primary colour.", "How many legs has a cat?"]
    data.write_text("\n".join(json.dumps({"prompt": q}) for q in questions))
    cfg = apply_overrides(ProjectConfig(model=default_model), {
        "train.sample_prompts": 0, "train.max_steps": 2, "train.batch_size": 2, "online.max_completion_length": 32})
    run_dir = engine.run(engine.prepare("grpo", cfg, str(data), tmp_path / "runs"), str(data))
    steps = [r for r in records(run_dir) if "loss" in r]
    assert len(steps) == 2
    assert min(r["completions/clipped_ratio"] for r in steps) < 1.0  # some answers end at <|im_end|>
    assert {"reward_parts/heuristic/mean", "reward_parts/length/mean", "reward_parts/diversity/mean"} <= set(steps[0])
    assert steps[1]["kl"] > 0
    assert lora_b_moved(run_dir)


def test_online_prompts_carry_the_project_system_prompt():
    """GRPO/RLOO sample under the system prompt the model is served and scored with (PPO's prompts do too)."""
    from alignlab.train.online import _dataset

    rows = [{"prompt": "Why is the sky blue?"},
            {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]}]
    ds = _dataset(rows, "You are relentlessly snarky.")
    assert ds[0]["prompt"][0] == {"role": "system", "content": "You are relentlessly snarky."}
    assert ds[0]["prompt"][1]["content"] == "Why is the sky blue?"
    assert ds[1]["prompt"][0]["content"] == "Be brief."  # a row's own system turn stands
    assert _dataset(rows)[0]["prompt"][0]["role"] == "user"  # no system prompt set: the model's own


def test_an_extra_column_of_mixed_types_reaches_the_reward_as_written():
    """answer 4 in one row and "Paris" in another: Arrow failed after the model had loaded; then the 4 became "4"."""
    from alignlab.rewards.common import decode_columns
    from alignlab.train.online import _dataset

    ds = _dataset([{"prompt": "What is 2+2?", "answer": 4}, {"prompt": "Capital of France?", "answer": "Paris"}])
    assert decode_columns({k: ds[k] for k in ds.column_names if k != "prompt"}) == {"answer": [4, "Paris"]}


def test_a_reward_that_scores_nothing_stops_the_run_naming_it(tiny_model, tmp_path):
    """Every step logged reward null and grad_norm 0, TRL printed raw rows, and the run ended 'done'."""
    data = write_project(tmp_path, "def never(prompts, completions, **kw):\n    return [None] * len(completions)\n",
                         "components:\n  - {name: never, fn: rew.py:never}\n")
    with pytest.raises(AlignlabError) as err:
        run("grpo", tiny_model, tmp_path, data, **{"train.max_steps": 2})
    assert str(err.value).startswith(f"{tmp_path / 'rewards.yaml'}:2: reward component 'never' (rew.py:never) "
                                     "returned None for all 8 completions of the first batch")
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_beta_zero_still_records_kl_as_trl_computes_it(tiny_model, tmp_path, method):
    """At beta 0 TRL keeps no reference and logged no KL: kl_budget was off without a word. The KL logged at beta 0
    equals TRL's own at a beta too small to move the run (same samples, same steps)."""
    data = write_project(tmp_path, CHARS, "components:\n  - {name: chars, fn: rew.py:chars}\n")
    common = {"train.max_steps": 3, "train.learning_rate": 5e-2, "online.kl_budget": 1e-12}
    zero = run(method, tiny_model, tmp_path, data, **common, **{"online.beta": 0.0})
    tiny = run(method, tiny_model, tmp_path, data, **common, **{"online.beta": 1e-12})
    got, want = ([r for r in records(d) if "loss" in r] for d in (zero, tiny))
    assert [r["reward"] for r in got] == [r["reward"] for r in want]  # the same run
    assert [r["kl"] for r in got] == pytest.approx([r["kl"] for r in want], rel=1e-4, abs=1e-7)
    assert got[0]["kl"] == 0 and got[-1]["kl"] != 0  # the adapter starts as the base, then moves
    assert [r["warning"] for r in records(zero) if "warning" in r] == ["kl_budget"]


def test_beta_zero_records_kl_when_a_generation_serves_several_steps(tiny_model, tmp_path):
    """With num_iterations 2 a generation serves two steps; KL was measured only when the generating step was a
    logging step, so with logging every 2 steps no record held it and kl_budget was off again."""
    data = write_project(tmp_path, CHARS, "components:\n  - {name: chars, fn: rew.py:chars}\n")
    out = run("grpo", tiny_model, tmp_path, data, **{"train.max_steps": 4, "train.logging_steps": 2,
                                                     "train.learning_rate": 5e-2, "online.beta": 0.0,
                                                     "train.trainer_overrides": {"num_iterations": 2}})
    logged = [r for r in records(out) if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4] and all(isinstance(r.get("kl"), float) for r in logged), logged


def test_beta_zero_continued_from_a_run_says_kl_is_not_recorded(tiny_model, tmp_path, capsys):
    """Continued from an adapter, the reference would be that adapter, which TRL copies only at beta > 0."""
    data = write_project(tmp_path, CHARS, "components:\n  - {name: chars, fn: rew.py:chars}\n")
    first = run("grpo", tiny_model, tmp_path, data, **{"train.max_steps": 1})
    capsys.readouterr()
    second = run("grpo", tiny_model, tmp_path, data, init_adapter=str(first), **{"train.max_steps": 1,
                                                                                   "online.beta": 0.0})
    assert "online.beta is 0 and this run is continued from an adapter: no reference model is kept, so KL is not " \
           "recorded and online.kl_budget is off" in " ".join(capsys.readouterr().err.split())
    assert not any("kl" in r for r in records(second))


@pytest.fixture(scope="module")
def kl_warned(one_thread, tiny_model, tmp_path_factory):
    """A 4-step GRPO run with checkpoints at steps 2 and 4 whose KL passes its budget at step 2."""
    d = tmp_path_factory.mktemp("kl_warned")
    data = write_project(d, CHARS, "components:\n  - {name: chars, fn: rew.py:chars}\n")
    return run("grpo", tiny_model, d, data, **{"train.max_steps": 4, "train.save_steps": 2, "online.kl_budget": 1e-12,
                                                "train.learning_rate": 5e-2}), data


def test_a_resumed_run_does_not_warn_twice(kl_warned, tmp_path):
    """Killed after checkpoint-2, resumed: the monitor started from nothing and the KL warning, once per run, came
    again at step 3. It replays the records kept up to the checkpoint."""
    import shutil

    whole, data = kl_warned
    assert [(r["step"], r["warning"]) for r in records(whole) if "warning" in r] == [(2, "kl_budget")]
    cut = tmp_path / "run"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "checkpoint-4")  # as if killed before step 4's checkpoint
    cfg = apply_overrides(ProjectConfig(model=json.loads((whole / "run.json").read_text())["model"]), {
        "train.sample_prompts": 0, "train.batch_size": 2, "train.save_steps": 2, "online.num_generations": 4,
        "online.max_completion_length": 8, "online.rewards": str(data.parent / "rewards.yaml"), "train.max_steps": 4,
        "online.kl_budget": 1e-12, "train.learning_rate": 5e-2})
    engine.run(engine.prepare("grpo", cfg, str(data), tmp_path / "runs", run_dir=cut, resumed=True), str(data),
               resume=True)
    recs = records(cut)
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3, 4]
    assert [(r["step"], r["warning"]) for r in recs if "warning" in r] == [(2, "kl_budget")]


def test_the_end_of_run_line_says_what_moved(kl_warned, capsys):
    """GRPO ended "done: 4 steps; loss 0, tokens_per_s ..." (its loss is about 0 by construction) and `alignlab runs`
    showed "loss 0.000 - -": reward, KL, length and the warnings raised are what tell how it went."""
    from typer.testing import CliRunner

    from alignlab.cli import app
    from alignlab.cli.train import _finished

    run_dir = kl_warned[0]
    steps = [r for r in records(run_dir) if "loss" in r]
    cfg = apply_overrides(ProjectConfig(), {"train.check_per_category": 0})
    _finished(run_dir, "grpo", cfg, None)
    line = " ".join(capsys.readouterr().err.split())
    assert line.startswith(f"done: 4 steps; reward {steps[0]['reward']:.3f} -> {steps[-1]['reward']:.3f}; "
                           f"KL {steps[-1]['kl']:.3g}/token; mean length {steps[0]['completions/mean_length']:.1f} -> "
                           f"{steps[-1]['completions/mean_length']:.1f} tokens; warnings: kl_budget (step 2); "
                           "tokens_per_s "), line
    table = CliRunner().invoke(app, ["runs", "--runs-dir", str(run_dir.parent)]).output
    assert "reward" in table and f"{steps[-1]['reward']:.3f}" in table

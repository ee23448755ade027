"""The online-RL sampler: PEFT's merge, transformers' sampling distribution and greedy decoding, TRL's hook."""

from __future__ import annotations

import json

import pytest
import torch

from alignlab.train.sampler import GenerationCopy, categorical, sample

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


def lora_model(path: str, seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapter a delta
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def test_merged_copy_equals_peft_merge(tiny_arch):
    """The copy's weights are what PEFT's own merge_and_unload produces, and its logits the adapted model's."""
    policy = lora_model(tiny_arch)
    copy = GenerationCopy(policy, dtype=torch.float32)
    x = torch.randint(0, 1000, (2, 7))
    with torch.no_grad():
        adapted = policy(x).logits
        assert torch.allclose(copy.model(x).logits, adapted, atol=1e-4)
        merged = policy.merge_and_unload()
    for name, p in copy.model.named_parameters():
        assert torch.allclose(p, merged.get_parameter(name), atol=1e-6), name


def test_sync_follows_the_trained_adapter(tiny_model):
    policy = lora_model(tiny_model)
    copy = GenerationCopy(policy, dtype=torch.float32)
    x = torch.randint(0, 1000, (1, 5))
    with torch.no_grad():
        before = copy.model(x).logits.clone()
        for name, p in policy.named_parameters():
            if "lora_A" in name:
                p.add_(0.1)
        copy.sync(policy)
        assert not torch.allclose(copy.model(x).logits, before)
        assert torch.allclose(copy.model(x).logits, policy(x).logits, atol=1e-4)


def test_lm_head_runs_in_the_copy_precision_unless_fp32_is_asked(tiny_model):
    """As TRL's generate: the head in the sampling precision by default, in fp32 with cast_lm_head_to_fp32.
    Both copies' logits stay within bf16 rounding of the adapted fp32 model's; the fp32 head's are closer."""
    policy = lora_model(tiny_model)
    low = GenerationCopy(policy, dtype=torch.bfloat16)
    high = GenerationCopy(policy, dtype=torch.bfloat16, fp32_head=True)
    assert low.model.get_output_embeddings().weight.dtype == torch.bfloat16
    assert high.model.get_output_embeddings().weight.dtype == torch.float32
    x = torch.randint(0, 1000, (2, 7))
    with torch.no_grad():
        ref = policy(x).logits
        out_low, out_high = low.model(x).logits, high.model(x).logits
    assert out_low.dtype == torch.bfloat16 and out_high.dtype == torch.float32
    scale = ref.abs().max()
    err_low, err_high = (out_low.float() - ref).abs().max() / scale, (out_high - ref).abs().max() / scale
    assert err_low < 0.05 and err_high < 0.05 and err_high < err_low


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, 1.0), (0.7, None, 1.0), (1.0, 40, 1.0), (1.3, None, 0.8)])
def test_categorical_draws_transformers_distribution(temperature, top_k, top_p):
    """Frequencies over 100k draws match the distribution transformers' own warpers define (600 tokens:
    three blocks of the two-level draw, the last one partial); filtered-out tokens are never drawn."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    torch.manual_seed(0)
    vocab, n = 600, 100_000
    logits = torch.randn(1, vocab) * 3
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1.0:
        expected = TopPLogitsWarper(top_p)(None, expected)
    expected = torch.softmax(expected, -1)[0]
    draws = categorical(logits.expand(n, vocab).contiguous(), temperature, top_k, top_p)
    freq = torch.bincount(draws, minlength=vocab).double() / n
    assert (freq - expected).abs().max() < 0.006  # about 5 standard errors of the largest probability
    assert freq[expected == 0].sum() == 0


def test_greedy_decoding_matches_transformers_generate(tiny_arch):
    """Prompts of different lengths (left padding) and repeated ones (the shared prefill): with the
    temperature near 0 every completion equals transformers' greedy generate, cut after the first EOS."""
    policy = lora_model(tiny_arch, seed=1)
    copy = GenerationCopy(policy, dtype=torch.float32)
    prompts = [[5, 17, 300, 41], [9, 8, 7], [5, 17, 300, 41], [100, 200, 300, 400, 500, 600]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        ref = policy.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0,
                              eos_token_id=None)[:, width:].tolist()
    eos = ref[1][5]  # a token the second prompt produces: its completion must stop there
    ours = sample(copy.model, prompts, 12, [eos], pad_id=0, temperature=1e-6)
    assert ours[0] == ours[2]
    for mine, theirs in zip(ours, ref):
        cut = theirs.index(eos) + 1 if eos in theirs else len(theirs)
        assert mine == theirs[:cut]
    assert ours[1][-1] == eos and len(ours[1]) <= 6


def test_grpo_generates_through_the_sampler(tiny_model, tmp_path):
    """A GRPO run on CPU samples through the merged copy (not TRL's generate), with the LM head in fp32 when
    online.fp32_lm_head asks for it, and trains the adapter."""
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine
    from alignlab.train.online import AlignlabGRPOTrainer

    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Say something about {w}"}) for w in ("cats", "rain", "bread", "maps")))
    (tmp_path / "rew.py").write_text("def n(prompts, completions, **kw):\n    return [len(c[0]['content']) / 40 for c in completions]\n")
    (tmp_path / "rewards.yaml").write_text("components:\n  - {name: n, fn: rew.py:n}\n")
    cfg = apply_overrides(ProjectConfig(model=tiny_model), {
        "train.sample_prompts": 0, "train.batch_size": 2, "train.save_steps": 1000, "train.max_steps": 2,
        "online.num_generations": 4, "online.max_completion_length": 8, "online.rewards": str(tmp_path / "rewards.yaml"),
        "online.fp32_lm_head": True})
    used = []
    original = AlignlabGRPOTrainer._al_sample

    def spy(self, *args):
        out = original(self, *args)
        used.append(out is not None and isinstance(self._al_sampler, GenerationCopy)
                    and self._al_sampler.model.get_output_embeddings().weight.dtype == torch.float32)
        return out

    AlignlabGRPOTrainer._al_sample = spy
    try:
        run_dir = engine.run(engine.prepare("grpo", cfg, str(data), tmp_path / "runs"), str(data))
    finally:
        AlignlabGRPOTrainer._al_sample = original
    assert used and all(used)
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(steps) == 2 and all(0 < r["completions/mean_length"] <= 8 for r in steps)


def test_sliding_window_model_decodes_on_the_dynamic_cache():
    """A model with sliding-window layers (no plain static cache) decodes on a dynamic one, still exactly."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, sliding_window=4)).eval()
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [5, 6, 7, 8, 9, 10]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = (ids != 0).long()
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0,
                             eos_token_id=None)[:, width:].tolist()
    assert sample(model, prompts, 8, [299], pad_id=0, temperature=1e-6) == [r[: r.index(299) + 1] if 299 in r else r for r in ref]

"""GRPO/RLOO advantages and the GRPO token loss: hand-computed cases and parity with TRL.

TRL computes group advantages inline in ``GRPOTrainer._generate_and_score_completions`` and
``RLOOTrainer._generate_and_score_completions`` (no standalone helper), so the advantage parity tests build
real TRL trainers on the tiny model, give them a reward function that returns fixed rewards, and run that
method itself (it generates, scores and returns the advantages). The token loss is compared with
``GRPOTrainer._compute_loss`` itself (``loss_type="grpo"``), called unbound with a namespace as the trainer
and a stub for the model forward.
"""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from alignlab.losses import group_advantages, grpo_token_loss, rloo_advantages


def test_group_advantages_hand_computed():
    """Group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = sqrt(1/3) = 0.577350.

    advantage = +-0.5 / (0.577350 + 1e-4) = +-0.865875...; unscaled: +-0.5. A group of equal rewards gets 0.
    """
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.7, 0.7, 0.7, 0.7])
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert a == pytest.approx(0.8658753, abs=1e-6)
    torch.testing.assert_close(group_advantages(rewards, 4), torch.tensor([a, -a, -a, a, 0, 0, 0, 0]), atol=1e-6,
                               rtol=0)
    torch.testing.assert_close(group_advantages(rewards, 4, scale=False)[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_rloo_advantages_hand_computed():
    """Group [1, 2, 3, 6] (sum 12): baselines 11/3, 10/3, 3, 2 -> advantages -8/3, -4/3, 0, 4."""
    torch.testing.assert_close(rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 4),
                               torch.tensor([-8 / 3, -4 / 3, 0.0, 4.0]), atol=1e-6, rtol=0)


def _trl_advantages(tiny_model, tmp_path, trainer: str, rewards: torch.Tensor, num_generations: int, **config):
    """The advantages TRL's own ``_generate_and_score_completions`` computes for ``rewards`` (one process)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_cls, trainer_cls = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}[trainer]

    def fixed(prompts, completions, **columns):
        assert len(completions) == len(rewards)
        return rewards.tolist()

    prompts = [{"prompt": [{"role": "user", "content": f"Say {i}"}]} for i in range(len(rewards) // num_generations)]
    args = config_cls(output_dir=str(tmp_path), per_device_train_batch_size=len(rewards), num_generations=num_generations,
                      max_completion_length=2, report_to=[], use_cpu=True, save_strategy="no", **config)
    t = trainer_cls(model=tiny_model, reward_funcs=fixed, args=args, train_dataset=Dataset.from_list(prompts))
    t.model.train()
    out = t._generate_and_score_completions([p for p in prompts for _ in range(num_generations)])
    return out["advantages"]


@pytest.mark.parametrize("scale", [True, False])
def test_group_advantages_parity_with_trl(scale, tiny_model, tmp_path):
    """TRL GRPOTrainer (sum_then_normalize, scale_rewards "group" / "none") on fixed rewards: within 1e-5."""
    g = torch.Generator().manual_seed(0)
    num_generations, rewards = 4, torch.randn(4 * 4, generator=g) * 2
    rewards[:4] = 1.0  # one zero-std group
    trl_advantages = _trl_advantages(tiny_model, tmp_path, "grpo", rewards, num_generations,
                                     scale_rewards="group" if scale else "none")
    ours = group_advantages(rewards, num_generations, scale=scale)
    assert ours.abs().max() > 0.5  # a non-trivial comparison
    torch.testing.assert_close(ours, trl_advantages, atol=1e-5, rtol=0)


def test_rloo_advantages_parity_with_trl(tiny_model, tmp_path):
    """TRL RLOOTrainer's leave-one-out advantages (KL off, no normalisation) on fixed rewards: within 1e-5."""
    g = torch.Generator().manual_seed(1)
    num_generations, rewards = 4, torch.randn(4 * 4, generator=g)
    trl_advantages = _trl_advantages(tiny_model, tmp_path, "rloo", rewards, num_generations, beta=0.0,
                                     normalize_advantages=False)
    torch.testing.assert_close(rloo_advantages(rewards, num_generations), trl_advantages, atol=1e-5, rtol=0)


def test_grpo_token_loss_hand_computed():
    """One completion of 2 tokens (+1 pad), advantage 1, clip 0.2, beta 0.5.

    token 1: ratio e^0.5 > 1.2 -> surrogate -1.2; token 2: ratio 1 -> -1.
    k3 KL with log pi_ref - log pi = -0.5 on token 1: e^-0.5 + 0.5 - 1 = 0.106531; token 2: 0.
    loss = ((-1.2 + 0.5 * 0.106531) + (-1 + 0)) / 2 = -1.073367...
    """
    losses, m = grpo_token_loss(
        torch.tensor([[0.5, 0.0, 3.0]]), torch.zeros(1, 3), torch.tensor([1.0]), torch.tensor([[1, 1, 0]]),
        clip_eps=0.2, ref_logprobs=torch.zeros(1, 3), beta=0.5,
    )
    kl = math.exp(-0.5) + 0.5 - 1
    assert losses.item() == pytest.approx((-1.2 + 0.5 * kl - 1.0) / 2, abs=1e-6)
    assert losses.item() == pytest.approx(-1.0733673, abs=1e-6)
    assert m["clip_ratio"].item() == pytest.approx(0.5, abs=1e-6)
    assert m["kl"].item() == pytest.approx(kl / 2, abs=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_grpo_token_loss_parity_with_trl(beta):
    """GRPOTrainer._compute_loss(loss_type="grpo") on random log-probs vs grpo_token_loss(...).mean(): 1e-5."""
    from trl import GRPOTrainer

    g = torch.Generator().manual_seed(2)
    B, P, T = 8, 3, 12
    logprobs = -torch.rand(B, T, generator=g) * 3
    old = logprobs + torch.randn(B, T, generator=g) * 0.3  # ratios well outside [0.8, 1.2] on many tokens
    ref = logprobs + torch.randn(B, T, generator=g) * 0.3
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    advantages = torch.randn(B, generator=g)
    args = SimpleNamespace(delta=None, use_bias_correction_kl=False)
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logprobs, torch.ones(B, T), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta,
        args=args, loss_type="grpo", epsilon_low=0.2, epsilon_high=0.2, use_vllm=False,
        model=SimpleNamespace(training=False), current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False,
        aux_loss_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)),
        accelerator=SimpleNamespace(gather=lambda x: x, reduce=lambda x, reduction: x),
    )
    inputs = {
        "prompt_ids": torch.zeros(B, P, dtype=torch.long), "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask, "advantages": advantages,
        "old_per_token_logps": old, "ref_per_token_logps": ref,
    }
    trl_loss = GRPOTrainer._compute_loss(trainer, None, inputs).item()
    losses, m = grpo_token_loss(logprobs, old, advantages, mask, clip_eps=0.2, ref_logprobs=ref, beta=beta)
    assert m["clip_ratio"].item() > 0.1  # clipping is exercised
    assert losses.mean().item() == pytest.approx(trl_loss, abs=1e-5)
    assert m["clip_ratio"].item() == pytest.approx(trainer._metrics["eval"]["clip_ratio/region_mean"][-1], abs=1e-5)
    if beta:
        assert m["kl"].item() == pytest.approx(trainer._metrics["eval"]["kl"][-1], abs=1e-5)

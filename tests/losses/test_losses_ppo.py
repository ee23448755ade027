"""PPO pieces: GAE, KL-penalised rewards, clipped policy and value losses, against hand-worked examples.

No parity test: TRL 1.16 ships no PPOTrainer (neither in ``trl.trainer`` nor ``trl.experimental``), so there is
no TRL implementation of GAE or the PPO losses to compare with.
"""

import math

import pytest
import torch

from alignlab.losses import gae, kl_penalised_rewards, ppo_policy_loss, ppo_value_loss


def test_gae_hand_worked_three_tokens():
    """rewards [0, 0, 1], values [0.5, 0.6, 0.7], gamma 1, lambda 0.95; the value after the last token is 0.

    deltas: d2 = 1 + 0 - 0.7 = 0.3, d1 = 0 + 0.7 - 0.6 = 0.1, d0 = 0 + 0.6 - 0.5 = 0.1
    advantages: A2 = 0.3, A1 = 0.1 + 0.95 * 0.3 = 0.385, A0 = 0.1 + 0.95 * 0.385 = 0.46575
    returns = A + V = [0.96575, 0.985, 1.0]
    The same sequence right-padded and left-padded (garbage in the padding) gives the same numbers, 0 at padding.
    """
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 9.0], [9.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7, 0.0], [0.5, 0.6, 0.7, 9.0], [9.0, 0.5, 0.6, 0.7]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [0, 1, 1, 1]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    expected_adv, expected_ret = torch.tensor([0.46575, 0.385, 0.3]), torch.tensor([0.96575, 0.985, 1.0])
    for row, cols in [(0, slice(0, 3)), (1, slice(0, 3)), (2, slice(1, 4))]:
        torch.testing.assert_close(adv[row, cols], expected_adv, atol=1e-6, rtol=0)
        torch.testing.assert_close(ret[row, cols], expected_ret, atol=1e-6, rtol=0)
    assert adv[1, 3] == 0 and ret[1, 3] == 0 and adv[2, 0] == 0 and ret[2, 0] == 0


def test_gae_lambda_one_gives_discounted_reward_to_go():
    """gamma 0.9, lambda 1: returns are the discounted reward-to-go whatever the values.

    rewards [1, 0, 2]: R2 = 2, R1 = 0 + 0.9 * 2 = 1.8, R0 = 1 + 0.9 * 1.8 = 2.62.
    """
    rewards, values = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.3, -1.0, 5.0]])
    _, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=1.0)
    torch.testing.assert_close(ret[0], torch.tensor([2.62, 1.8, 2.0]), atol=1e-6, rtol=0)


def test_kl_penalised_rewards_hand_computed():
    """log pi [-1, -2, -3], log pi_ref [-1.5, -2, -2.5], kl_coef 0.1, score 2, one padded slot.

    per-token -0.1 * [0.5, 0, -0.5] = [-0.05, 0, 0.05]; the score lands on the last valid token: 2.05.
    kl (summed) = 0.5 + 0 - 0.5 = 0.
    """
    rewards, m = kl_penalised_rewards(
        torch.tensor([2.0]), torch.tensor([[-1.0, -2.0, -3.0, -7.0]]), torch.tensor([[-1.5, -2.0, -2.5, -1.0]]),
        torch.tensor([[1, 1, 1, 0]]), kl_coef=0.1,
    )
    torch.testing.assert_close(rewards[0], torch.tensor([-0.05, 0.0, 2.05, 0.0]), atol=1e-6, rtol=0)
    assert m["kl"].item() == pytest.approx(0.0, abs=1e-6)


def test_ppo_policy_loss_clips_large_ratio_with_positive_advantage():
    """clip_eps 0.2; log-ratio 0.5 -> ratio e^0.5 = 1.648721 > 1.2.

    Positive advantage 1: loss = -min(1.6487 * 1, 1.2 * 1) = -1.2, clipped, so no gradient.
    Ratio 1.1 (inside the band), advantage 1: loss = -1.1, gradient d(-ratio)/d(log pi) = -1.1.
    Negative advantage -1 with ratio e^0.5: -min(-1.6487, -1.2) = 1.648721, not clipped (pessimistic bound).
    """
    old = torch.zeros(3, 1)
    logprobs = torch.tensor([[0.5], [math.log(1.1)], [0.5]], requires_grad=True)
    advantages = torch.tensor([[1.0], [1.0], [-1.0]])
    losses, m = ppo_policy_loss(logprobs, old, advantages, torch.ones(3, 1), clip_eps=0.2)
    torch.testing.assert_close(losses, torch.tensor([-1.2, -1.1, math.exp(0.5)]), atol=1e-6, rtol=0)
    assert m["clipfrac"].item() == pytest.approx(1 / 3, abs=1e-6)
    losses.sum().backward()
    torch.testing.assert_close(logprobs.grad[:, 0], torch.tensor([0.0, -1.1, math.exp(0.5)]), atol=1e-6, rtol=0)


def test_ppo_policy_loss_is_a_masked_mean_per_sequence():
    """Ratio 1 everywhere: per-token loss -A. Row A = [1, 3, pad 100] -> -(1 + 3) / 2 = -2; approx_kl 0."""
    losses, m = ppo_policy_loss(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([[1.0, 3.0, 100.0]]),
                                torch.tensor([[1, 1, 0]]))
    assert losses.item() == pytest.approx(-2.0, abs=1e-6)
    assert m["approx_kl"].item() == 0.0 and m["clipfrac"].item() == 0.0


def test_ppo_value_loss_hand_computed():
    """old value 0, new value 1, return 2, clip 0.2.

    unclipped error (1 - 2)^2 = 1; clipped value 0 + clip(1, -0.2, 0.2) = 0.2, error (0.2 - 2)^2 = 3.24.
    loss = 0.5 * max(1, 3.24) = 1.62; vf_clipfrac 1. A value inside the band (0.1, return 0.5): 0.5 * 0.16 = 0.08.
    """
    losses, m = ppo_value_loss(torch.tensor([[1.0], [0.1]]), torch.zeros(2, 1), torch.tensor([[2.0], [0.5]]),
                               torch.ones(2, 1), clip=0.2)
    torch.testing.assert_close(losses, torch.tensor([1.62, 0.08]), atol=1e-6, rtol=0)
    assert m["vf_clipfrac"].item() == pytest.approx(0.5, abs=1e-6)

"""ORPO reference loss: a hand-computed case, stability at the extremes, and parity with TRL's
``ORPOTrainer.odds_ratio_loss`` (a standalone method, called unbound with a namespace as the trainer).

TRL's full loss is ``nll - odds_ratio_loss(...)[0].mean()`` with one batch-level NLL; ours with a scalar
``chosen_nll`` averages to the same number.
"""

import math
from types import SimpleNamespace

import pytest
import torch

from alignlab.losses import orpo_loss


def test_orpo_hand_computed():
    """Chosen avg log-prob log 0.5 -> odds 1; rejected log 0.2 -> odds 0.25; odds ratio 4.

    sigmoid(log 4) = 4/5, so L_OR = -log 0.8 = 0.223144...; nll 1.5, beta 0.1:
    loss = 1.5 + 0.1 * 0.223144 = 1.5223144...
    """
    losses, m = orpo_loss(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.2)]), torch.tensor([1.5]), beta=0.1)
    assert losses.item() == pytest.approx(1.5223143551, abs=1e-6)
    assert m["or_loss"].item() == pytest.approx(0.2231435513, abs=1e-6)
    assert m["log_odds_chosen"].item() == pytest.approx(math.log(4), abs=1e-6)  # TRL's name for the log odds ratio
    assert m["log_odds_ratio"].item() == pytest.approx(math.log(0.8), abs=1e-6)  # TRL's name for log sigmoid(.)


def test_orpo_is_finite_at_extremes():
    """p -> 1 (avg log-prob -1e-9) and p -> 0 (-80) must not produce inf/nan values or gradients."""
    chosen = torch.tensor([-1e-9, -80.0, -0.69], requires_grad=True)
    rejected = torch.tensor([-80.0, -1e-9, -0.70], requires_grad=True)
    losses, m = orpo_loss(chosen, rejected, torch.zeros(3))
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    assert losses[0].item() < 1e-6 and losses[1].item() > 1.0  # right order confident, wrong order penalised


def test_orpo_is_finite_when_an_answer_is_certain():
    """A mean log-prob of exactly 0.0 (fp32 log-softmax once each token's logit leads by ~27 nats; a negative zero
    too) and one rounded just above 0: the loss and both gradients stay finite, a certain chosen answer costs nothing
    and a certain rejected one costs a lot. Before, chosen at 0 gave loss -0.0 with a NaN gradient, rejected at 0 an
    inf loss with an -inf gradient."""
    chosen = torch.tensor([0.0, -1.0, -0.0, 3e-8], requires_grad=True)
    rejected = torch.tensor([-1.0, 0.0, -2.0, -1.0], requires_grad=True)
    losses, m = orpo_loss(chosen, rejected, -chosen, beta=0.1)  # the trainer's NLL: minus the chosen mean log-prob
    losses.sum().backward()
    assert torch.isfinite(losses).all(), losses
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all(), (chosen.grad, rejected.grad)
    assert losses[0].item() == pytest.approx(0.0, abs=1e-5) and losses[1].item() > 1.0
    assert torch.isfinite(m["log_odds_chosen"]) and m["log_odds_chosen"].item() > 0
    assert m["logps/chosen"].item() == pytest.approx(chosen.detach().mean().item())  # per token, unclamped


def test_orpo_parity_with_trl():
    """ORPOTrainer.odds_ratio_loss on random average log-probs: total loss and metrics within 1e-5."""
    from trl.experimental.orpo import ORPOTrainer

    g = torch.Generator().manual_seed(0)
    chosen = -torch.rand(256, generator=g) * 4 - 1e-4
    rejected = -torch.rand(256, generator=g) * 4 - 1e-4
    nll = torch.tensor(2.3)
    trainer = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device="cpu"))
    out = ORPOTrainer.odds_ratio_loss(trainer, chosen, rejected)
    trl_losses, trl_chosen, trl_rejected, trl_ratio, trl_log_odds = out
    losses, m = orpo_loss(chosen, rejected, nll, beta=0.25)
    assert losses.mean().item() == pytest.approx((nll - trl_losses.mean()).item(), abs=1e-5)
    torch.testing.assert_close(losses, nll - trl_losses, atol=1e-5, rtol=0)
    assert m["log_odds_ratio"].item() == pytest.approx(trl_ratio.item(), abs=1e-5)
    assert m["log_odds_chosen"].item() == pytest.approx(trl_log_odds.item(), abs=1e-5)
    assert m["rewards/chosen"].item() == pytest.approx(trl_chosen.mean().item(), abs=1e-5)
    assert m["rewards/rejected"].item() == pytest.approx(trl_rejected.mean().item(), abs=1e-5)
    assert m["rewards/margins"].item() == pytest.approx((trl_chosen - trl_rejected).mean().item(), abs=1e-5)

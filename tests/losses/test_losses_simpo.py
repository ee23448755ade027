"""SimPO reference loss: a hand-computed case, and parity with TRL's CPOTrainer.cpo_loss(loss_type="simpo").

``cpo_loss`` is a standalone method, called unbound with a namespace standing in for the trainer. It takes
average log-probs (TRL's CPO averages them for "simpo"), so sums are divided by lengths before the call.
"""

from types import SimpleNamespace

import pytest
import torch

from alignlab.losses import simpo_loss


def test_simpo_hand_computed():
    """Chosen: -6 over 3 tokens -> -2; rejected: -12 over 4 tokens -> -3. beta 2, gamma 0.5.

    rewards -4 and -6, margin 2; loss = -log sigmoid(2 - 0.5) = log(1 + e^-1.5) = 0.201413...
    """
    losses, m = simpo_loss(torch.tensor([-6.0]), torch.tensor([-12.0]), torch.tensor([3]), torch.tensor([4]))
    assert losses.item() == pytest.approx(0.2014132779, abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(-4.0, abs=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(-6.0, abs=1e-6)
    assert m["rewards/margins"].item() == pytest.approx(2.0, abs=1e-6)
    assert m["logps/chosen"].item() == pytest.approx(-2.0, abs=1e-6)


@pytest.mark.parametrize("beta,gamma", [(2.0, 0.5), (2.5, 1.4), (10.0, 3.0)])
def test_simpo_parity_with_trl_cpo(beta, gamma):
    """CPOTrainer.cpo_loss with loss_type "simpo", simpo_gamma = our gamma: losses and rewards within 1e-5."""
    from trl.experimental.cpo import CPOTrainer

    g = torch.Generator().manual_seed(0)
    chosen_len = torch.randint(1, 40, (64,), generator=g)
    rejected_len = torch.randint(1, 40, (64,), generator=g)
    chosen_sum = -torch.rand(64, generator=g) * 3 * chosen_len
    rejected_sum = -torch.rand(64, generator=g) * 3 * rejected_len
    trainer = SimpleNamespace(alpha=0.0, loss_type="simpo", beta=beta, simpo_gamma=gamma, label_smoothing=0.0,
                              accelerator=SimpleNamespace(device="cpu"))
    trl_losses, trl_chosen, trl_rejected = CPOTrainer.cpo_loss(
        trainer, chosen_sum / chosen_len, rejected_sum / rejected_len
    )
    losses, m = simpo_loss(chosen_sum, rejected_sum, chosen_len, rejected_len, beta=beta, gamma=gamma)
    torch.testing.assert_close(losses, trl_losses, atol=1e-5, rtol=0)
    assert m["rewards/chosen"].item() == pytest.approx(trl_chosen.mean().item(), abs=1e-5)
    assert m["rewards/rejected"].item() == pytest.approx(trl_rejected.mean().item(), abs=1e-5)

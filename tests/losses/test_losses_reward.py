"""Bradley-Terry reward-model loss: hand-computed cases, and parity with TRL's ``RewardTrainer.compute_loss``
(called unbound, with a namespace as the trainer and a stub model that returns given scores)."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from alignlab.losses import bradley_terry_loss


def test_bradley_terry_hand_computed():
    """Equal rewards: -log sigmoid(0) = ln 2 = 0.693147 (an untrained reward model's loss).

    r_c - r_r = 2: log(1 + e^-2) = 0.126928...; with margin 1: log(1 + e^-1) = 0.313261...
    Accuracy counts r_c > r_r strictly (1 of 2); the reported margin ignores the required margin: (0 + 2) / 2.
    """
    losses, m = bradley_terry_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.5, 1.0]))
    assert losses[0].item() == pytest.approx(math.log(2), abs=1e-6)
    assert losses[1].item() == pytest.approx(0.1269280110, abs=1e-6)
    assert m["accuracy"].item() == pytest.approx(0.5, abs=1e-6)
    assert m["margin"].item() == pytest.approx(1.0, abs=1e-6)
    losses, _ = bradley_terry_loss(torch.tensor([3.0]), torch.tensor([1.0]), margin=torch.tensor([1.0]))
    assert losses.item() == pytest.approx(0.3132616875, abs=1e-6)


@pytest.mark.parametrize("with_margin", [False, True])
def test_bradley_terry_parity_with_trl(with_margin):
    """RewardTrainer.compute_loss on random scores, with and without a margin column: within 1e-5."""
    from trl import RewardTrainer

    g = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(128, generator=g) * 3, torch.randn(128, generator=g) * 3
    margin = torch.rand(128, generator=g) * 2 if with_margin else None
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=False),
        args=SimpleNamespace(center_rewards_coefficient=None),
        accelerator=SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x),
        _total_train_tokens=0, _tp_size=1, _metrics=defaultdict(lambda: defaultdict(list)),
    )

    def model(**_):
        return SimpleNamespace(logits=torch.cat([chosen, rejected]).unsqueeze(-1))

    inputs = {"input_ids": torch.zeros(256, 1, dtype=torch.long)}
    if with_margin:
        inputs["margin"] = margin
    trl_loss = RewardTrainer.compute_loss(trainer, model, inputs).item()
    losses, m = bradley_terry_loss(chosen, rejected, margin=margin)
    assert losses.mean().item() == pytest.approx(trl_loss, abs=1e-5)
    assert m["accuracy"].item() == pytest.approx(trainer._metrics["eval"]["accuracy"][-1], abs=1e-5)
    assert m["margin"].item() == pytest.approx(trainer._metrics["eval"]["margin"][-1], abs=1e-5)

"""Bradley-Terry pairwise loss for reward models."""

import torch.nn.functional as F


def bradley_terry_loss(chosen_rewards, rejected_rewards, margin=None):
    """Per-pair Bradley-Terry loss -log sigma(r_c - r_r - margin).

    ``chosen_rewards``, ``rejected_rewards`` (B,): scalar scores of each completion; ``margin`` (B,) or None:
    a required gap (Llama 2's margin loss; TRL's RewardTrainer ``margin`` column). Equal rewards give
    ln 2 ~= 0.693, the expected loss of an untrained reward model. Returns ``(losses (B,), metrics)`` with
    detached means ``accuracy`` (fraction r_c > r_r) and ``margin`` (mean r_c - r_r).
    """
    diff = chosen_rewards - rejected_rewards
    logits = diff if margin is None else diff - margin
    losses = -F.logsigmoid(logits)  # P(y_c > y_r) = sigma(r_c - r_r) (Bradley & Terry 1952; Ouyang et al. 2022 eq. 1)
    d = diff.detach()
    return losses, {"accuracy": (d > 0).float().mean(), "margin": d.mean()}

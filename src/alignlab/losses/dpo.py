"""DPO and IPO: preference losses on sequence log-probs against a frozen reference.

Differences from the papers:
- ``dpo_loss(label_smoothing=eps)`` is conservative DPO (cDPO, Mitchell 2023): the label is taken to be
  flipped with probability eps. TRL 1.16 has no smoothing in its default "sigmoid" loss (its "robust" loss is
  a different, unbiased correction); with eps=0 ours equals TRL's "sigmoid".
- ``ipo_loss`` divides each log-ratio by its completion length before taking the margin, as TRL does
  (confirmed with the IPO authors per TRL's comment); the paper's eq. 17 uses unnormalised log-ratios.
"""

import torch.nn.functional as F


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             beta=0.1, label_smoothing=0.0):
    """Per-example DPO loss (Rafailov et al. 2023, eq. 7).

    All four inputs have shape (B,): log pi(y|x) summed over the completion tokens.
    Returns ``(losses (B,), metrics)``; metrics are detached batch means: rewards/chosen, rewards/rejected,
    rewards/margins, rewards/accuracies, logps/chosen, logps/rejected (TRL's names).
    Equal policy and reference give loss ln 2 ~= 0.693.
    """
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # beta log(pi/pi_ref), the implicit reward
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    logits = chosen_rewards - rejected_rewards
    # eq. 7: -log sigma(beta log pi(y_w)/pi_ref(y_w) - beta log pi(y_l)/pi_ref(y_l)); eps>0 is cDPO
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    c, r = chosen_rewards.detach(), rejected_rewards.detach()
    metrics = {
        "rewards/chosen": c.mean(),
        "rewards/rejected": r.mean(),
        "rewards/margins": (c - r).mean(),
        "rewards/accuracies": (c > r).float().mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }
    return losses, metrics


def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
             chosen_lengths, rejected_lengths, beta=0.1):
    """Per-example IPO loss (Azar et al. 2023, eq. 17), length-normalised as in TRL's "ipo" loss.

    Log-prob inputs have shape (B,) (summed over completion tokens); ``*_lengths`` (B,) are completion token
    counts (clamped to >= 1). beta is the paper's tau. Returns ``(losses (B,), metrics)`` with the same metric
    keys as ``dpo_loss`` (rewards are beta times the *unnormalised* log-ratios, as TRL logs them).
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    h = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
    losses = (h - 1 / (2 * beta)) ** 2  # eq. 17: (h_pi(y_w, y_l, x) - 1/(2 tau))^2
    c, r = beta * chosen_logratios.detach(), beta * rejected_logratios.detach()
    metrics = {
        "rewards/chosen": c.mean(),
        "rewards/rejected": r.mean(),
        "rewards/margins": (c - r).mean(),
        "rewards/accuracies": (c > r).float().mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }
    return losses, metrics

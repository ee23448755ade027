"""KTO: Kahneman-Tversky optimisation on unpaired thumbs-up/down examples (Ethayarajh et al. 2024).

The reference point z0 is passed in: estimate it as the batch mean of log pi(y'|x) - log pi_ref(y'|x) over
mismatched (prompt, completion) pairs, as TRL does. This function detaches it and clamps it at 0 (the paper's
max(0, KL estimate); TRL clamps too). Per-example losses come back in input order; TRL concatenates
[desirable..., undesirable...], which changes the order but not the mean.
"""

import torch


def kto_loss(policy_logps, ref_logps, labels, kl_ref_point, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
    """Per-example KTO loss lambda_y - v(x, y) (Ethayarajh et al. 2024, eq. 8).

    ``policy_logps``, ``ref_logps`` (B,): completion log-probs summed over tokens; ``labels`` (B,) bool, True for
    desirable; ``kl_ref_point``: scalar tensor z0. Returns ``(losses (B,), metrics)``; metrics are detached:
    kl (the clamped z0), rewards/chosen, rewards/rejected (means of beta * log-ratio over each class, NaN if the
    class is absent), logps/chosen, logps/rejected.
    """
    labels = labels.bool()
    z0 = kl_ref_point.detach().clamp(min=0)
    logratios = policy_logps - ref_logps  # r_theta(x, y) = log pi/pi_ref
    # eq. 8: v = lambda_D sigma(beta (r - z0)) if desirable, lambda_U sigma(beta (z0 - r)) if undesirable
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (logratios - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - logratios)))
    losses = torch.where(labels, desirable, undesirable)
    rewards, logps = beta * logratios.detach(), policy_logps.detach()
    metrics = {
        "kl": z0,
        "rewards/chosen": rewards[labels].mean(),
        "rewards/rejected": rewards[~labels].mean(),
        "logps/chosen": logps[labels].mean(),
        "logps/rejected": logps[~labels].mean(),
    }
    return losses, metrics

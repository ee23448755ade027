"""SimPO: reference-free, length-normalised preference loss (Meng et al. 2024).

gamma is the target reward margin in reward units (the paper's gamma, default 0.5 with beta 2.0), so the loss
is -log sigma(beta * (avg_c - avg_r) - gamma). Mapping to other implementations:
- TRL ``CPOTrainer`` with ``loss_type="simpo"``: ``simpo_gamma`` is this gamma; TRL internally subtracts
  ``gamma_logratios = simpo_gamma / beta`` from the average log-prob margin before scaling by beta, which is the
  same number. Set ``cpo_alpha=0`` there for pure SimPO (TRL's default 1.0 adds a chosen-NLL term).
- The SimPO authors' trainer takes ``gamma_beta_ratio`` = gamma / beta instead (e.g. beta=2.0, ratio 0.25 ->
  gamma 0.5 here).
"""

import torch.nn.functional as F


def simpo_loss(chosen_logps_sum, rejected_logps_sum, chosen_lengths, rejected_lengths, beta=2.0, gamma=0.5):
    """Per-example SimPO loss (Meng et al. 2024, eq. 6).

    ``*_logps_sum`` (B,): policy log-probs summed over completion tokens; ``*_lengths`` (B,): completion token
    counts (clamped to >= 1). No reference model. Returns ``(losses (B,), metrics)``; metrics are detached means
    of rewards/chosen, rewards/rejected (beta * average log-prob), rewards/margins, rewards/accuracies,
    logps/chosen, logps/rejected (average log-probs).
    """
    chosen_avg = chosen_logps_sum / chosen_lengths.clamp(min=1)  # (1/|y|) log pi(y|x)
    rejected_avg = rejected_logps_sum / rejected_lengths.clamp(min=1)
    chosen_rewards, rejected_rewards = beta * chosen_avg, beta * rejected_avg
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)  # eq. 6
    c, r = chosen_rewards.detach(), rejected_rewards.detach()
    metrics = {
        "rewards/chosen": c.mean(),
        "rewards/rejected": r.mean(),
        "rewards/margins": (c - r).mean(),
        "rewards/accuracies": (c > r).float().mean(),
        "logps/chosen": chosen_avg.detach().mean(),
        "logps/rejected": rejected_avg.detach().mean(),
    }
    return losses, metrics

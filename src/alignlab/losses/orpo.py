"""ORPO: SFT plus an odds-ratio preference term, no reference model (Hong et al. 2024).

Inputs are *average* per-token log-probs (as in the paper and TRL), so odds are per-token odds.
Metric names follow TRL's ORPOTrainer, whose naming is confusing: ``log_odds_ratio`` is the mean of
log sigma(log odds ratio) (the term inside L_OR) and ``log_odds_chosen`` is the mean log odds ratio itself.
``chosen_nll`` may be per example (B,) or a scalar (TRL passes one batch-level cross-entropy).
"""

import math

import torch
import torch.nn.functional as F


def _log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012).

    Each branch sees an input clamped to its own side, so the branch torch.where discards cannot turn the gradient
    into NaN (TRL's ``log1mexp`` gives a NaN gradient for log-probs within ~1e-8 of 0).
    """
    t = -math.log(2)
    return torch.where(x < t, torch.log1p(-torch.exp(x.clamp(max=t))), torch.log(-torch.expm1(x.clamp(min=t))))


# the odds see mean log-probs at most this (1 - p at least ~1e-6): fp32 log-softmax gives exactly 0.0 once every token's
# logit leads by ~27 nats (a short answer memorised in SFT), and log(1 - 1) = -inf made the loss -0.0 with a NaN
# gradient (chosen at 0) or inf (rejected at 0); the finite loss got past the NaN stop while clipping turned the weights
# NaN. Closer to 0 is float rounding anyway: fp32 numbers between 16 and 32, where such logits sit, are 2e-6 apart.
MAX_AVG_LOGP = -1e-6


def orpo_loss(chosen_avg_logps, rejected_avg_logps, chosen_nll, beta=0.1):
    """Per-example ORPO loss L_SFT + beta * L_OR (Hong et al. 2024, eq. 6-7; beta is the paper's lambda).

    ``chosen_avg_logps``, ``rejected_avg_logps`` (B,): mean token log-probs of each completion (<= 0; in the odds,
    clamped to MAX_AVG_LOGP); ``chosen_nll`` (B,) or scalar: the SFT negative log-likelihood of the chosen
    completion. Returns ``(losses (B,), metrics)``; metrics are detached means of or_loss, nll, log_odds_ratio,
    log_odds_chosen, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins (rewards = beta * avg
    log-prob, as TRL), logps/chosen, logps/rejected (average log-probs).
    """
    # log odds(y|x) = log p - log(1 - p)  (eq. 4); their difference is the log odds ratio
    c_log1m = _log1mexp(chosen_avg_logps.clamp(max=MAX_AVG_LOGP))  # log(1 - p)
    r_log1m = _log1mexp(rejected_avg_logps.clamp(max=MAX_AVG_LOGP))
    log_odds = (chosen_avg_logps - c_log1m) - (rejected_avg_logps - r_log1m)
    ratio = F.logsigmoid(log_odds)
    or_loss = -ratio  # eq. 7: L_OR = -log sigma(log odds_theta(y_w|x) / odds_theta(y_l|x))
    losses = chosen_nll + beta * or_loss  # eq. 6: L_ORPO = L_SFT + lambda * L_OR
    c, r = beta * chosen_avg_logps.detach(), beta * rejected_avg_logps.detach()
    metrics = {
        "or_loss": or_loss.detach().mean(),
        "nll": torch.as_tensor(chosen_nll).detach().mean(),
        "log_odds_ratio": ratio.detach().mean(),
        "log_odds_chosen": log_odds.detach().mean(),
        "rewards/chosen": c.mean(),
        "rewards/rejected": r.mean(),
        "rewards/accuracies": (c > r).float().mean(),
        "rewards/margins": (c - r).mean(),  # as TRL logs it; the falling-chosen watch reads it
        "logps/chosen": chosen_avg_logps.detach().mean(),  # per token, as TRL's ORPOTrainer logs them
        "logps/rejected": rejected_avg_logps.detach().mean(),
    }
    return losses, metrics

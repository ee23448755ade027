"""Critic-free advantages from groups of completions per prompt: GRPO and RLOO, and GRPO's clipped token loss.

``rewards`` is flat (N * G,), the G completions of each prompt contiguous, as in TRL. ``group_advantages``
matches TRL's GRPOTrainer with ``scale_rewards="group"`` (unbiased std, eps 1e-4 added to the std); with
``scale=False`` it matches ``scale_rewards="none"`` (Dr. GRPO's advice). ``grpo_token_loss`` reduces per sequence
(token mean within each completion, the paper's 1/|o_i| and TRL's ``loss_type="grpo"``); TRL's default,
``"dapo"``, instead divides the token sum by the batch's token count.
"""

import torch


def group_advantages(rewards, group_size, scale=True, eps=1e-4):
    """GRPO outcome advantages (Shao et al. 2024, sec. 4.1.2): (r_i - mean(r_group)) / (std(r_group) + eps).

    ``rewards`` (N * G,) -> advantages (N * G,). std is unbiased (Bessel), as TRL's ``nanstd``.
    """
    grouped = rewards.view(-1, group_size)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)
    return advantages.view(-1)


def rloo_advantages(rewards, group_size):
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024): r_i - mean of the other G - 1 rewards.

    ``rewards`` (N * G,) -> advantages (N * G,). Matches TRL's RLOOTrainer before its optional normalisation.
    """
    grouped = rewards.view(-1, group_size)
    baseline = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baseline).view(-1)


def grpo_token_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2, ref_logprobs=None, beta=0.0):
    """Per-sequence GRPO loss (Shao et al. 2024, eq. 3) with the k3 KL estimator (eq. 4).

    ``logprobs``, ``old_logprobs``, ``ref_logprobs``, ``mask``: (B, T); ``advantages`` (B,). Returns
    ``(losses (B,), metrics)``; metrics are detached token means: clip_ratio and, if beta != 0, kl.
    """
    mask = mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)  # eq. 3 surrogate
    n = mask.sum().clamp(min=1)
    clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + clip_eps) & (adv > 0))
    metrics = {"clip_ratio": (clipped.float() * mask).sum().detach() / n}
    if beta != 0.0:
        kl = torch.exp(ref_logprobs - logprobs) - (ref_logprobs - logprobs) - 1  # eq. 4: unbiased, always >= 0
        per_token = per_token + beta * kl
        metrics["kl"] = (kl.detach() * mask).sum() / n
    return (per_token * mask).sum(1) / mask.sum(1).clamp(min=1), metrics

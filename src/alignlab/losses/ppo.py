"""PPO pieces for RLHF: KL-penalised per-token rewards, GAE, clipped policy and value losses.

All tensors are (B, T) over completion tokens, with ``mask`` (B, T) marking valid tokens; each row's valid tokens
must be contiguous (left or right padding is fine). Differences from Schulman et al. 2017:
- the reward is the RLHF one (Ziegler et al. 2019; Ouyang et al. 2022 eq. 2): a per-token KL penalty
  -kl_coef * (log pi - log pi_ref) plus the sequence score at the last valid token;
- the value loss is clipped around the old values (OpenAI baselines / TRL's former PPOTrainer), not the paper's
  plain squared error, and carries TRL's factor 1/2;
- losses are reduced to one number per sequence (token mean within the row); TRL's former PPOTrainer took a
  token mean over the whole batch, which weights long sequences more. Advantages are not whitened here.
"""

import torch


def kl_penalised_rewards(scores, logprobs, ref_logprobs, mask, kl_coef):
    """Per-token rewards -kl_coef * (log pi - log pi_ref), plus ``scores`` (B,) at each row's last valid token.

    Returns ``(rewards (B, T), metrics)``; metrics are detached means of kl (summed over tokens per sequence) and
    non_score_reward (the summed KL penalty per sequence).
    """
    mask = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask  # per-token estimate of KL(pi || pi_ref)
    non_score = -kl_coef * kl  # R(x, y) = r(x, y) - beta log(pi/pi_ref) (Ouyang et al. 2022 eq. 2), per token
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & mask.bool()  # one-hot at the last valid token
    rewards = non_score + scores.unsqueeze(1) * last
    return rewards, {"kl": kl.detach().sum(1).mean(), "non_score_reward": non_score.detach().sum(1).mean()}


def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """Generalised advantage estimation per token (Schulman et al. 2017 eq. 11-12; GAE paper 2016).

    ``rewards``, ``values``, ``mask``: (B, T). The value after a row's last valid token is 0 (episode end).
    Returns ``(advantages (B, T), returns (B, T))``, both 0 at masked positions; returns = advantages + values.
    """
    mask = mask.to(values.dtype)
    rewards, values = rewards * mask, values * mask
    zeros = torch.zeros_like(values[:, :1])
    next_mask = torch.cat([mask[:, 1:], zeros], dim=1)  # 0 after each row's last valid token: episode end
    next_values = torch.cat([values[:, 1:], zeros], dim=1) * next_mask
    advantages, last_gae = torch.zeros_like(values), zeros.squeeze(1)
    for t in reversed(range(values.size(1))):
        delta = rewards[:, t] + gamma * next_values[:, t] - values[:, t]  # eq. 12: r_t + gamma V(s_t+1) - V(s_t)
        last_gae = delta + gamma * lam * next_mask[:, t] * last_gae  # eq. 11: A_t = delta_t + gamma lam A_t+1
        advantages[:, t] = last_gae * mask[:, t]
    return advantages, (advantages + values) * mask


def _row_mean(x, mask):
    return (x * mask).sum(1) / mask.sum(1).clamp(min=1)


def ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    """Clipped surrogate loss (Schulman et al. 2017 eq. 7), one value per sequence.

    ``logprobs``, ``old_logprobs``, ``advantages``, ``mask``: (B, T). Returns ``(losses (B,), metrics)``;
    metrics are detached token means over the batch: clipfrac (tokens where the clipped term is active),
    approx_kl (1/2 (log pi - log pi_old)^2, TRL's estimator), ratio.
    """
    mask = mask.to(logprobs.dtype)
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)  # r_t(theta) = pi(a_t|s_t) / pi_old(a_t|s_t)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    per_token = torch.max(unclipped, clipped)  # eq. 7: -min(r A, clip(r, 1-eps, 1+eps) A)
    n = mask.sum().clamp(min=1)
    metrics = {
        "clipfrac": ((clipped > unclipped).float() * mask).sum().detach() / n,
        "approx_kl": (0.5 * log_ratio.detach() ** 2 * mask).sum() / n,
        "ratio": (ratio.detach() * mask).sum() / n,
    }
    return _row_mean(per_token, mask), metrics


def ppo_value_loss(values, old_values, returns, mask, clip=0.2):
    """Clipped value loss 1/2 max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2), one value per sequence.

    All inputs (B, T). Returns ``(losses (B,), metrics)``; metrics: vf_clipfrac (detached token mean of where
    the clipped error is the larger one).
    """
    mask = mask.to(values.dtype)
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    err, err_clipped = (values - returns) ** 2, (clipped_values - returns) ** 2
    per_token = 0.5 * torch.max(err, err_clipped)  # L^VF of eq. 9, clipped like the policy (baselines' PPO2)
    vf_clipfrac = ((err_clipped > err).float() * mask).sum().detach() / mask.sum().clamp(min=1)
    return _row_mean(per_token, mask), {"vf_clipfrac": vf_clipfrac}

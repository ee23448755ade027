"""PPO for LLMs in the RLHF setting: our own compact loop (TRL 1.x no longer ships a PPOTrainer).

Four roles, one network in memory:

- actor: the LoRA policy;
- reference: the same model with the adapter switched off (``model.disable_adapter()``), no second copy;
- reward: any ``fn(prompts, completions, **columns) -> list[float]``: the spec in ``online.rewards``, or the
  default persona reward (``alignlab.rewards.default_reward``);
- critic: a zero-initialised ``nn.Linear(hidden, 1)`` on the policy's last hidden states, trained with it.

One step: sample ``train.batch_size`` prompts; generate one completion each in one batched ``generate`` call
(KV cache); score them; compute old log-probs, reference log-probs and values; fold a per-token KL penalty into
the reward, with the score on the last completion token; GAE; whiten the advantages; then ``ppo.ppo_epochs``
passes of clipped policy loss + ``ppo.vf_coef`` * clipped value loss, AdamW on the adapter and the value head.

What differs from the published algorithm (Schulman et al. 2017; the RLHF setting of Ziegler et al. 2019 and
Ouyang et al. 2022), and why:

- The critic shares the policy's trunk (Schulman et al. do this for Atari) instead of InstructGPT's separate
  value model initialised from the reward model: one model in memory. The value loss also moves the adapter
  (the hidden states are not detached); ``vf_coef`` sets how much.
- The reference is the base model without the adapter. Starting from the base, that is the policy at step 0,
  as in the papers. When continuing from a run's adapter (``--from``, e.g. after SFT) the KL leash
  still points at the base, not at the SFT model the papers use: keeping a second adapter would cost memory
  and code, and the base is the behaviour the leash is meant to protect.
- A fixed KL coefficient (``online.beta``), not Ziegler et al.'s adaptive controller: predictable, and
  ``online.kl_budget`` warns when the mean per-token KL passes the budget. There is no pretraining-loss mix (PPO-ptx).
- Scores are used as the reward function returns them; Ziegler et al. normalise the reward model's output
  first. Our rewards are mostly bounded heuristics, and the advantages are whitened anyway.
- Each epoch is one minibatch of the whole rollout batch (no shuffled minibatches; ``train.grad_accum`` is
  not used): batches of a few prompts on one device are already small.
- Dropout is off (the model stays in eval mode) so the first epoch's ratio is exactly 1, and logits are
  divided by the sampling temperature when scoring (policy and reference alike, so the KL is between the
  tempered distributions), with top-k sampling off, so the old log-probs are those of the distribution that
  was actually sampled (as TRL's former PPOTrainer did). ``online.top_p`` < 1 breaks
  that match, so leave it at 1 unless there is a reason.
- A completion ends at its first end-of-sequence token, which counts as an action (the choice to stop); a
  completion cut at ``online.max_completion_length`` gets its score the same way, at its last token.
- Losses are per-sequence token means averaged over the batch (see ``alignlab.losses.ppo``).
- Sampling is transformers' ``generate`` (alignlab's sampler on CPU), never vLLM, and activations are not
  checkpointed (the model stays in eval mode): ``online.use_vllm`` and ``train.gradient_checkpointing`` are
  ignored, with a note saying so.
- One process only: the loop has no gradient synchronisation, so ``--processes`` > 1 (or any launch with
  WORLD_SIZE > 1) is refused instead of training unsynchronised copies into one run directory.

The instruments are GRPO's (``alignlab.train.monitors``): the reward spec's ``gold:`` rater scored every
``online.gold_steps`` steps on the same completions, per-component reward statistics, distinct-2, and the
same ``HackingMonitor`` warnings under the same names (``kl_budget``, ``length_drift``, ``proxy_up_gold_down``,
``no_signal``; a batch's prompts count as one group).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from alignlab import fsutil
from alignlab.errors import AlignlabError
from alignlab.generate import NO_MODEL_PENALTY, stop_ids as generation_stop_ids
from alignlab.losses import gae, kl_penalised_rewards, ppo_policy_loss, ppo_value_loss
from alignlab.progress import console
from alignlab import rundir
from alignlab.train import sampler
from alignlab.train.monitors import (HackingMonitor, RewardRecorder, check_columns, project_reward, report_alerts,
                                     unscored)


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Rows for ``step``: consecutive slices of a fresh shuffle per pass, so a resumed run sees the same batches."""
    out, perms = [], {}
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch, j = divmod(i, n)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(int(perms[epoch][j]))
    return out


def completion_mask(completion_ids, stop_ids: list[int]):
    """(B, T) long: 1 up to and including each row's first stop token, 0 after it (padding)."""
    is_stop = torch.isin(completion_ids, torch.tensor(stop_ids, device=completion_ids.device)).long()
    return ((is_stop.cumsum(1) - is_stop) == 0).long()  # no stop token strictly before this position


def whiten(x, mask, eps: float = 1e-8):
    """``x`` shifted and scaled to mean 0, std 1 over the valid tokens of the batch; masked positions are 0."""
    m = mask.to(x.dtype)
    n = m.sum()
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / (n - 1).clamp(min=1)
    return (x - mean) * torch.rsqrt(var + eps) * m


def advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef, gamma, lam):
    """Sequence scores (B,) -> per-token rewards (B, T) with the KL penalty -> GAE -> whitened advantages.

    Returns ``(advantages, returns, rewards)``, all (B, T) and 0 at masked positions.
    """
    rewards, _ = kl_penalised_rewards(scores, logprobs, ref_logprobs, mask, kl_coef)
    adv, returns = gae(rewards, values, mask, gamma=gamma, lam=lam)
    return whiten(adv, mask), returns, rewards


def forward(model, value_head, input_ids, attention_mask, n_prompt: int, temperature: float):
    """Log-probs (temperature-scaled) and values of the tokens after the first ``n_prompt`` columns, both (B, T)."""
    t = input_ids.shape[1] - n_prompt
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)  # left padding: positions as generate() saw them
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        output_hidden_states=True,
        use_cache=False,
        logits_to_keep=t + 1,
    )
    logits = out.logits[:, :-1].float() / temperature  # the logits at position i predict token i + 1
    logprobs = torch.log_softmax(logits, -1).gather(-1, input_ids[:, n_prompt:].unsqueeze(-1)).squeeze(-1)
    hidden = out.hidden_states[-1][:, n_prompt - 1 : -1]
    values = value_head(hidden.to(value_head.weight.dtype)).squeeze(-1)
    return logprobs, values


def _left_pad(ids: list[list[int]], pad_id: int):
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x) :] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x) :] = 1
    return input_ids, mask


def encode_prompts(ctx, rows: list[dict]) -> list[list[int]]:
    """The rows' prompts as the policy sees them (chat template, the project's system prompt), whole: a prompt
    over ``train.max_prompt_length`` is refused before the first step (it was cut from the left, system prompt
    first, without a word)."""
    from alignlab.data.formats import to_conversational
    from alignlab.generate import chat_prompt

    tok = ctx.tokenizer
    texts = [chat_prompt(to_conversational(r, "prompts")["prompt"], tok, ctx.cfg.system_prompt) for r in rows]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    limit = ctx.cfg.train.max_prompt_length
    over = [i for i, x in enumerate(ids) if len(x) > limit]
    if over:
        raise AlignlabError(f"{len(over)} prompt(s) over train.max_prompt_length={limit} tokens with the chat "
                            f"template and system prompt (the longest {max(len(ids[i]) for i in over)}), "
                            f"first: {rows[over[0]].get('prompt')!r:.60}",
                            fix="raise it (--set train.max_prompt_length=N), or shorten them or system_prompt")
    return ids


def _generation_copy(ctx, model, fp32_head: bool):
    """The sampler's merged bf16 copy on CPU, as GRPO / RLOO sample; None (transformers' generate) on a GPU and for
    models whose layers the sampler's static key/value cache cannot hold (convolution, linear attention, SSM)."""
    from alignlab.train.logps import kv_cache_only

    if torch.device(ctx.device).type != "cpu" or not kv_cache_only(model):
        return None
    return sampler.GenerationCopy(model, fp32_head=fp32_head)


@torch.no_grad()
def rollout(ctx, model, value_head, reward_fn, rows: list[dict], stop_ids: list[int], gen_copy=None, **extra) -> dict:
    """Generate, score and evaluate one batch of prompts: everything the PPO epochs need, as (B, T) tensors.

    ``gen_copy`` (a ``sampler.GenerationCopy``, on CPU) samples in place of ``model.generate``."""
    from alignlab.data.formats import to_conversational, with_system
    from alignlab.rewards import check_rewards

    tok, o = ctx.tokenizer, ctx.cfg.online
    # the prompts as the policy saw them (system prompt included), as GRPO / RLOO hand them to reward functions
    prompts = [with_system(to_conversational(r, "prompts")["prompt"], ctx.cfg.system_prompt) for r in rows]
    ids = encode_prompts(ctx, rows)
    prompt_ids, prompt_mask = (x.to(ctx.device) for x in _left_pad(ids, tok.pad_token_id))
    if gen_copy is not None:  # CPU: the merged bf16 copy (alignlab.train.sampler), as GRPO / RLOO sample
        gen_copy.sync(model)
        drawn = sampler.sample(gen_copy.model, ids, o.max_completion_length, stop_ids, tok.pad_token_id,
                               o.temperature, None, o.top_p)
        longest = max(map(len, drawn))
        seqs = torch.cat([prompt_ids, torch.tensor([c + [tok.pad_token_id] * (longest - len(c)) for c in drawn],
                                                   device=ctx.device)], dim=1)
    else:
        seqs = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            do_sample=True,
            temperature=o.temperature,
            top_p=o.top_p,
            top_k=0,
            **NO_MODEL_PENALTY,  # the model's generation_config penalty would join the rollout's sampling
            max_new_tokens=o.max_completion_length,
            eos_token_id=stop_ids,
            pad_token_id=tok.pad_token_id,
            use_cache=True,
        )
    n_prompt = prompt_ids.shape[1]
    completion_ids = seqs[:, n_prompt:]
    mask = completion_mask(completion_ids, stop_ids)
    attention_mask = torch.cat([prompt_mask, mask], dim=1)
    logprobs, values = forward(model, value_head, seqs, attention_mask, n_prompt, o.temperature)
    with model.disable_adapter():
        ref_logprobs, _ = forward(model, value_head, seqs, attention_mask, n_prompt, o.temperature)

    completions = [tok.decode(c[m.bool()], skip_special_tokens=True) for c, m in zip(completion_ids, mask)]
    columns = {k: [r.get(k) for r in rows] for k in {k for r in rows for k in r} if k != "prompt"}
    raw = reward_fn(prompts, [[{"role": "assistant", "content": c}] for c in completions], **columns, **extra)
    if isinstance(reward_fn, RewardRecorder) and None in raw:  # PPO has no group to leave an unscored answer out of
        raise unscored(reward_fn.reward, reward_fn.parts, raw.index(None))
    scores = torch.tensor(check_rewards(raw, len(rows), getattr(reward_fn, "__name__", "reward")), device=ctx.device)

    p = ctx.cfg.ppo
    adv, returns, _ = advantages(scores, logprobs, ref_logprobs, values, mask, o.beta, p.gamma, p.lam)
    return {
        "input_ids": seqs,
        "attention_mask": attention_mask,
        "n_prompt": n_prompt,
        "mask": mask,
        "logprobs": logprobs,
        "ref_logprobs": ref_logprobs,
        "values": values,
        "advantages": adv,
        "returns": returns,
        "scores": scores,
    }


def ppo_update(ctx, model, value_head, optimizer, params, batch: dict, step: int) -> dict:
    """``ppo.ppo_epochs`` passes of clipped policy + value loss over one rollout batch; metrics averaged."""
    from alignlab.train.callbacks import NonFiniteLoss

    p, mask, temperature = ctx.cfg.ppo, batch["mask"], ctx.cfg.online.temperature
    sums: dict[str, float] = {}
    for _ in range(p.ppo_epochs):
        inputs = (batch["input_ids"], batch["attention_mask"], batch["n_prompt"])
        logprobs, values = forward(model, value_head, *inputs, temperature)
        pg, pg_metrics = ppo_policy_loss(logprobs, batch["logprobs"], batch["advantages"], mask, p.clip_eps)
        vf, _ = ppo_value_loss(values, batch["values"], batch["returns"], mask, p.value_clip)
        loss = pg.mean() + p.vf_coef * vf.mean()
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"loss became {float(loss)} at step {step}; the run stopped and no adapter was written "
                "(the last checkpoint is intact)",
                fix="lower the learning rate or check the rewards",
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, ctx.cfg.train.max_grad_norm)
        optimizer.step()
        parts = {"loss": loss, "policy_loss": pg.mean(), "value_loss": vf.mean(), **pg_metrics}
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) / p.ppo_epochs
    return {k: sums[k] for k in ("loss", "policy_loss", "value_loss", "clipfrac", "approx_kl")}


def _save_value_head(value_head, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in value_head.state_dict().items()}
    fsutil.write_with(path, lambda name: save_file(tensors, name))


def save_checkpoint(run_dir: Path, step: int, model, value_head, optimizer, scheduler) -> Path:
    """checkpoints/checkpoint-N: adapter, value head, optimizer, scheduler, RNG, step; written aside, then renamed."""
    from alignlab.train.callbacks import _rotate

    root = run_dir / "checkpoints"
    tmp, target = root / f".checkpoint-{step}.tmp", root / f"checkpoint-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
    _save_value_head(value_head, tmp / "value_head.safetensors")
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, tmp / "trainer_state.pt")
    fsutil.replace_dir(tmp, target)  # fsynced, then renamed into place
    _rotate(str(root), keep=2)
    return target


def load_checkpoint(path: Path, model, value_head, optimizer, scheduler) -> int:
    """Restore everything ``save_checkpoint`` wrote; returns the step to continue from."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = str(value_head.weight.device)
    set_peft_model_state_dict(model, load_file(str(path / "adapter" / "adapter_model.safetensors"), device=device))
    value_head.load_state_dict(load_file(str(path / "value_head.safetensors"), device=device))
    state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _one_process() -> None:
    """PPO's loop has no gradient synchronisation: several processes would train unsynchronised copies."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise AlignlabError(
            f"PPO runs in one process, not {os.environ['WORLD_SIZE']}: its loop does not synchronise gradients "
            "between processes", fix="drop --processes / launch one process (grpo and rloo run data-parallel)")


def _build(ctx):
    """The LoRA policy (dropout off), a zero-initialised value head, AdamW over both, the scheduler, total steps."""
    from peft import get_peft_model
    from transformers import get_scheduler

    t = ctx.cfg.train
    model = ctx.model if ctx.init_adapter is not None else get_peft_model(ctx.model, ctx.peft_config())
    model.eval()  # dropout off: the ratio pi/pi_old is exactly 1 on the first epoch
    hidden = model.get_base_model().config.get_text_config().hidden_size
    value_head = nn.Linear(hidden, 1).to(ctx.device)
    nn.init.zeros_(value_head.weight)
    nn.init.zeros_(value_head.bias)
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    total = t.max_steps if t.max_steps > 0 else math.ceil(t.epochs * len(ctx.rows) / t.batch_size)
    scheduler = get_scheduler(t.lr_scheduler, optimizer, num_warmup_steps=int(t.warmup_ratio * total),
                              num_training_steps=total)
    return model, value_head, params, optimizer, scheduler, total


def _resume_step(ctx, model, value_head, optimizer, scheduler) -> int:
    """The step the last checkpoint reached (its state loaded, later log records dropped); 0 without one."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_root = ctx.run_dir / "checkpoints"
    last = get_last_checkpoint(str(ckpt_root)) if ckpt_root.is_dir() else None
    if last is None:
        console.print("[yellow]no checkpoint to resume from; starting from the beginning[/]")
        rundir.resume_logs(ctx.run_dir, -1, "none")  # the killed attempt's records go: every step is logged again
        return 0
    start = load_checkpoint(Path(last), model, value_head, optimizer, scheduler)
    rundir.resume_logs(ctx.run_dir, start, Path(last).name)
    return start


def _step_metrics(m: dict, batch: dict, n_rows: int, seconds: float, recorder) -> dict:
    """The update's losses plus reward, KL, length and speed of the rollout, named as GRPO logs them."""
    mask = batch["mask"].float()
    m.update(
        reward=float(batch["scores"].mean()),
        reward_std=float(batch["scores"].std()) if n_rows > 1 else 0.0,
        kl=float(((batch["logprobs"] - batch["ref_logprobs"]) * mask).sum() / mask.sum()),
        completion_length=float(mask.sum(1).mean()),
        tokens_per_s=float(batch["attention_mask"].sum()) / seconds,
        **recorder.last,  # reward_parts/<name>/mean|std, no_signal_frac, distinct_2, gold on its steps
    )
    m["completions/mean_length"] = m["completion_length"]  # the name GRPO's monitor reads
    return m


def train_loop(ctx, resume: bool = False):
    """Engine hook: train and return ``(model, steps, final_metrics)``; the engine saves the adapter."""
    from rich.progress import TextColumn

    from alignlab.progress import progress_bar
    from alignlab.train.callbacks import SamplesCallback, loss_text

    if not ctx.lora:
        raise AlignlabError(
            "PPO trains a LoRA adapter (the reference is the model with it switched off)", fix="set lora.enabled: true"
        )
    _one_process()
    encode_prompts(ctx, ctx.rows)  # every prompt fits, before the model is touched
    cfg, t = ctx.cfg, ctx.cfg.train
    torch.manual_seed(t.seed)
    model, value_head, params, optimizer, scheduler, total = _build(ctx)
    start = _resume_step(ctx, model, value_head, optimizer, scheduler) if resume else 0
    reward, gold = project_reward(cfg.online)
    if reward.group_size is None:  # one answer per prompt: the batch is the group the diversity penalty compares
        reward.group_size = t.batch_size
    o = cfg.online
    recorder = RewardRecorder(reward, group_size=t.batch_size, gold=gold, gold_steps=o.gold_steps)
    monitor = HackingMonitor(kl_budget=o.kl_budget, length_drift=o.length_drift)
    if start:  # go on with the records up to the checkpoint: no warning twice, windows and baselines kept
        monitor.replay(rundir.read_jsonl(ctx.run_dir / "metrics.jsonl"), start)
    stop_ids = sorted(generation_stop_ids(model, ctx.tokenizer))
    gen_copy = _generation_copy(ctx, model, o.fp32_lm_head)
    samplers = [cb for cb in ctx.callbacks if isinstance(cb, SamplesCallback)]
    pending: list[dict] = []
    final: dict = {}
    bar = progress_bar(TextColumn("loss {task.fields[loss]}"), TextColumn("reward {task.fields[reward]}"),
                       TextColumn("{task.fields[tps]}"))
    with bar:
        task = bar.add_task(ctx.method, total=total, completed=start, loss="-", reward="-", tps="")
        if start == 0:
            for cb in samplers:
                cb.on_train_begin(None, SimpleNamespace(is_world_process_zero=True, global_step=0), None, model=model)
        for step in range(start + 1, total + 1):
            t0 = time.perf_counter()
            rows = [ctx.rows[i] for i in batch_indices(len(ctx.rows), t.batch_size, step - 1, t.seed)]
            # the step as TRL's reward functions see it (global_step before the update): gold on the same steps
            batch = rollout(ctx, model, value_head, recorder, rows, stop_ids, gen_copy,
                            trainer_state=SimpleNamespace(global_step=step - 1))
            m = ppo_update(ctx, model, value_head, optimizer, params, batch, step)
            scheduler.step()
            pending.append(_step_metrics(m, batch, len(rows), time.perf_counter() - t0, recorder))
            bar.update(task, completed=step, loss=loss_text(m["loss"]), reward=f"{m['reward']:.3f}",
                       tps=f"{m['tokens_per_s']:.0f} tok/s")
            if step % t.logging_steps == 0 or step == total:
                keys = dict.fromkeys(k for p in pending for k in p)
                final = {"step": step, **{k: _mean([p[k] for p in pending if k in p]) for k in keys}}
                rundir.append_metrics(ctx.run_dir, final)
                pending = []
                report_alerts(ctx.run_dir, monitor.update(step, final))  # the same monitors and names as GRPO/RLOO
            for cb in samplers:
                cb.on_step_end(None, SimpleNamespace(is_world_process_zero=True, global_step=step), None, model=model)
            if step % t.save_steps == 0 and step < total:
                save_checkpoint(ctx.run_dir, step, model, value_head, optimizer, scheduler)
        for cb in samplers:
            cb.on_train_end(None, SimpleNamespace(is_world_process_zero=True, global_step=total), None, model=model)
    _save_value_head(value_head, ctx.run_dir / "value_head.safetensors")
    return model, total, {k: v for k, v in final.items() if k != "step"}


def args_class(method: str):
    """None: PPO runs its own loop, so no TRL arguments take train.trainer_overrides."""
    return None


def check(ctx) -> None:
    """Fail before the model loads: PPO needs a LoRA policy (the reference is the adapter disabled)."""
    from alignlab.errors import AlignlabError

    if not ctx.cfg.lora.enabled:
        raise AlignlabError("PPO trains a LoRA adapter (its reference is the base with the adapter disabled)",
                            fix="drop --full / set lora.enabled: true")
    _one_process()
    # what its own loop does not read is said, not recorded as if used (a project's settings for other methods
    # may well hold them, so a note rather than a refusal)
    from alignlab.progress import console

    if ctx.cfg.train.grad_accum > 1:
        console.print(f"[yellow]note: PPO does not accumulate gradients (train.grad_accum {ctx.cfg.train.grad_accum} "
                      "is ignored): each epoch is one minibatch of the rollout batch; raise --batch-size instead[/]")
    if ctx.cfg.online.num_generations != type(ctx.cfg.online)().num_generations:
        console.print(f"[yellow]note: PPO draws one answer per prompt (online.num_generations "
                      f"{ctx.cfg.online.num_generations}, for GRPO and RLOO's groups, is ignored)[/]")
    if ctx.cfg.online.use_vllm:
        console.print("[yellow]note: PPO samples with transformers' generate (alignlab's sampler on CPU): "
                      "online.use_vllm, for GRPO and RLOO, is ignored[/]")
    gc = ctx.cfg.train.gradient_checkpointing
    if gc == "on" or (gc == "auto" and ctx.cfg.lora.qlora):  # its model stays in eval mode, where none is done
        console.print(f"[yellow]note: PPO's loop does not checkpoint activations (train.gradient_checkpointing "
                      f"{'on' if gc == 'on' else 'auto, on with --qlora'} is ignored); if memory runs short, lower "
                      "--batch-size or online.max_completion_length[/]")
    check_columns(project_reward(ctx.cfg.online, check_only=True), ctx.rows)  # users' reward files are read here,
    # imported once when training starts

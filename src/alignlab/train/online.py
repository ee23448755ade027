"""GRPO and RLOO: TRL's GRPOTrainer / RLOOTrainer with the composed reward, LoRA, a KL leash and monitors.

Each step samples ``online.num_generations`` completions for each of ``train.batch_size`` prompts (chat
template applied), scores them with the reward spec (``online.rewards``; default below), turns the scores
into group-relative advantages and takes a clipped policy-gradient step. The reference model is the base
with the LoRA adapter switched off, so it costs no extra memory.

Where this differs from the papers (and from TRL's defaults):

- KL is on by default (``online.beta`` 0.04). DeepSeekMath's GRPO used a KL term; TRL now defaults to 0.
  We keep the leash because a persona is shaped with small, gameable rewards, and the monitors watch KL.
  At beta 0 TRL computes no reference; on a new adapter we still log ``kl`` on each generation (two no-grad
  forwards, the policy and the base with the adapter off, by the trainer's own estimate), so the record and
  ``online.kl_budget`` stay on. Continued from an adapter (or a full fine-tune) there is no reference at hand:
  a note says so.
- GRPO uses TRL's ``loss_type="dapo"`` (token losses summed over the batch and divided by its token count)
  and group-std scaling; the paper averages per sequence first (``alignlab.losses.grpo_token_loss``).
  RLOO subtracts the leave-one-out mean (Ahmadian et al. 2024) and, as in that paper and TRL, puts the KL
  into the reward (first-order estimate, summed per sequence) instead of the loss.
- ``train.batch_size`` counts prompts here, so a step holds ``batch_size * num_generations`` completions,
  all sampled in one call (TRL's generation batch = one optimizer step; ``steps_per_generation`` =
  ``grad_accum``): on-policy, one sampling call per step.
- On CPU that call is ``alignlab.train.sampler``, not TRL's ``generate`` on the LoRA model: a plain bf16
  copy of the policy with the adapter merged in (refreshed each step), each distinct prompt prefilled once,
  a static KV cache and inverse-CDF draws (``bench/bench_grpo.py``: README "Speed"). The samples come from
  the bf16 copy and the log-probs from the policy, so they are very slightly off-policy, as with vLLM.
  Repetition penalty, min-p, extra generation kwargs and vision models keep TRL's path.
- On CPU the policy and reference log-probs come from ``group_logps`` (``alignlab.train.logps``): each distinct
  prompt runs once (not ``num_generations`` times) and the LM head scores completion positions only; TRL's
  fused forward scores every position there. Gradient checkpointing stays off and weights stay fp32 (engine
  defaults). GPUs keep TRL's path, and so does a run with gradient checkpointing on (``--qlora`` switches it
  on): transformers turns the KV cache off in training mode then, so there is no prompt cache to share.
- The reward is the composed total (cap and diversity included) as a single TRL reward function;
  per-component statistics, no-signal groups, distinct-2 and the gold rater are recorded by
  ``alignlab.train.monitors``, which also warns about reward hacking, length drift, KL and dead groups.

Default reward when the project names no spec: ``alignlab.rewards.default_reward()`` — persona heuristic
(weight 0.8) minus a length penalty past 60 words (weight 0.2), capped at 1, minus 0.1 x MiniLM similarity
to the rest of the group. It needs no network and no GPU, and every piece of it is visible in the logs.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from alignlab import methods
from alignlab.errors import AlignlabError
from alignlab.progress import console
from alignlab.train import sampler
from alignlab.train.callbacks import AlignlabTrainerMixin, gradient_checkpointing
from alignlab.train.logps import scaled_head, shared_prompt_logps
from alignlab.train.monitors import (HackingMonitor, MonitorCallback, RewardRecorder, check_columns,
                                    project_reward)

logger = logging.getLogger(__name__)


def group_logps(model, input_ids, attention_mask, logits_to_keep, temperature=1.0, compute_entropy=False):
    """Log-probs (and entropies) of the last ``logits_to_keep`` tokens of a GRPO batch, which holds every prompt
    ``num_generations`` times, identically left-padded: each distinct prompt runs once (``alignlab.train.logps``)."""
    k = logits_to_keep
    p_ids, p_mask = input_ids[:, :-k], attention_mask[:, :-k]
    uniq, inverse = torch.unique(torch.cat([p_ids, p_mask], dim=1), dim=0, return_inverse=True)
    return shared_prompt_logps(model, uniq[:, : p_ids.shape[1]], uniq[:, p_ids.shape[1] :], input_ids[:, -k:],
                               attention_mask[:, -k:], inverse, temperature, compute_entropy)


class _OnlineMixin(AlignlabTrainerMixin):
    """Token counting for tokens/s, and the shared-prompt forward on CPU (TRL's fused LM head targets GPUs)."""

    def _prepare_inputs(self, generation_batch):
        inputs = super()._prepare_inputs(generation_batch)
        if self.model.training and isinstance(inputs, dict) and "completion_mask" in inputs:
            self._al_tokens += self._over_processes(int(inputs["prompt_mask"].sum()) + int(inputs["completion_mask"].sum()))
        return inputs

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        unwrapped = self.accelerator.unwrap_model(model)
        if (input_ids.device.type != "cpu" or compute_aux_loss or self.accelerator.num_processes > 1
                or (unwrapped.training and gradient_checkpointing(unwrapped))  # no KV cache to share then
                or any(v is not None for v in multimodal.values())
                or scaled_head(unwrapped)):
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              batch_size, compute_entropy, compute_aux_loss, **multimodal)
        with self.accelerator.autocast():  # the backbone is called directly, past accelerate's forward wrapper
            logps, entropy = group_logps(model, input_ids, attention_mask, logits_to_keep, self.temperature,
                                         compute_entropy)
        return logps, entropy, None


    _al_sampler = None  # a GenerationCopy once built; False when this run stays on TRL's generate
    _al_fp32_head = False  # online.fp32_lm_head
    _al_detached_kl = False  # beta 0 on a new adapter: KL to the base measured on each generation (TRL computes none)

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        # every generation: one may cover several steps (num_iterations, steps_per_generation), and TRL logs the mean
        # of what was appended since its last log, so a generation off a logging step still reaches the record
        if self._al_detached_kl and self.model.training:
            self._metrics["train"]["kl"].append(self._al_kl(out))
        return out

    def _al_kl(self, out: dict) -> float:
        """Mean per-token KL of the sampled completions to the base (the adapter switched off), without gradients and
        by the trainer's own estimate at beta > 0 (``_al_kl_estimate``): the same ``kl`` the monitors read."""
        from trl.models.utils import disable_gradient_checkpointing
        from trl.trainer.utils import use_adapter

        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
        mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
        k = out["completion_ids"].size(1)
        extra = {key: out[key] for key in MULTIMODAL if key in out}
        size = self.args.per_device_train_batch_size
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps = out.get("old_per_token_logps")  # GRPO keeps them only when sampling ran ahead of the policy
            if logps is None:
                logps = self._get_per_token_logps_and_entropies(self.model, ids, mask, k, size, **extra)[0]
            with use_adapter(self.accelerator.unwrap_model(self.model), adapter_name=None):
                ref = self._get_per_token_logps_and_entropies(self.model, ids, mask, k, size, **extra)[0]
        valid = out["completion_mask"] * out["tool_mask"] if "tool_mask" in out else out["completion_mask"]
        kl = self._al_kl_estimate(logps, ref) * valid
        totals = self.accelerator.reduce(torch.stack([kl.sum(), valid.sum().float()]), reduction="sum")
        return (totals[0] / totals[1].clamp(min=1.0)).item()

    def _al_sample(self, prompt_ids, images, multimodal_fields):
        """Completions from ``alignlab.train.sampler`` (merged bf16 copy, shared prefill, static cache), or None
        when the run is one it does not cover; then TRL's own generate runs."""
        if self._al_sampler is False or images or any(v is not None for v in (multimodal_fields or {}).values()):
            return None
        why = sampler.supported(self)
        policy = self.accelerator.unwrap_model(self.model)
        try:
            if why is None and self._al_sampler is None:
                fp32 = self._al_fp32_head or bool(getattr(self.args, "cast_lm_head_to_fp32", False))
                self._al_sampler = sampler.GenerationCopy(policy, fp32_head=fp32)
            elif why is None:
                self._al_sampler.sync(policy)
        except ValueError as exc:
            why = str(exc)
        if why is not None:
            self._al_sampler = False
            logger.info("generation stays on TRL's generate: %s", why)
            return None
        return sampler.sample(self._al_sampler.model, [list(p) for p in prompt_ids], self.max_completion_length,
                             self.eos_token_ids, self._tokenizer.pad_token_id, self.temperature, self.top_k or None,
                             self.top_p if self.top_p is not None else 1.0)


# what a vision model's forward takes besides the ids (TRL hands them on from the generation batch)
MULTIMODAL = ("pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes", "num_tiles",
              "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids")


class AlignlabGRPOTrainer(_OnlineMixin, GRPOTrainer):
    @staticmethod
    def _al_kl_estimate(logps, ref):
        return torch.exp(ref - logps) - (ref - logps) - 1  # TRL's GRPO loss term (Schulman's k3), >= 0

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        out = self._al_sample(prompt_ids, images, multimodal_fields)
        if out is None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        return out, None


class AlignlabRLOOTrainer(_OnlineMixin, RLOOTrainer):
    @staticmethod
    def _al_kl_estimate(logps, ref):
        return logps - ref  # the log-ratio TRL's RLOO folds into the reward

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields):
        out = self._al_sample(prompt_ids, images, multimodal_fields)
        return super()._generate_single_turn(prompt_ids, images, multimodal_fields) if out is None else out


TRAINERS = {methods.GRPO: (GRPOConfig, AlignlabGRPOTrainer), methods.RLOO: (RLOOConfig, AlignlabRLOOTrainer)}


def build_reward(ctx) -> RewardRecorder:
    """The training reward (spec file or default) and the optional gold rater, wrapped for recording."""
    o = ctx.cfg.online
    reward, gold = project_reward(o)
    return RewardRecorder(reward, o.num_generations, gold=gold, gold_steps=o.gold_steps)


def vllm_args(use_vllm: bool) -> dict:
    """TRL's vLLM options (colocated with training on the same GPU), or an error saying what is missing."""
    if not use_vllm:
        return {}
    if importlib.util.find_spec("vllm") is None or not torch.cuda.is_available():
        missing = "the vllm package" if importlib.util.find_spec("vllm") is None else "a CUDA GPU"
        raise AlignlabError(f"online.use_vllm needs a CUDA GPU and vllm; this machine lacks {missing}",
                            fix="set online.use_vllm=false (generation then uses transformers)")
    return {"use_vllm": True, "vllm_mode": "colocate"}


def _dataset(rows: list[dict], system_prompt: str | None = None):
    """The prompts as chats, with the project's ``system_prompt`` where a row has no system turn of its own: the
    policy samples under the system prompt it is served and scored with (as PPO's prompts do). An extra column Arrow
    cannot hold as it is (answer "Paris" here, ["Canberra", "Canberra, ACT"] there) travels as JSON and reaches the
    reward functions decoded (``alignlab.rewards.common.encode_columns``): they see what `reward score` shows."""
    from datasets import Dataset

    from alignlab.data.formats import to_conversational, with_system
    from alignlab.rewards.common import encode_columns

    conv = [to_conversational(r, "prompts") for r in rows]
    conv = [{**r, "prompt": with_system(r["prompt"], system_prompt)} for r in conv]
    return Dataset.from_list(encode_columns(conv))  # every row gets every key: from_list keeps the first row's


def args_class(method: str):
    """The TRL arguments class a run of ``method`` is configured with (train.trainer_overrides are checked on it)."""
    return TRAINERS[method][0]


def check(ctx) -> None:
    """Fail before the model loads: the reward spec (and its gold rater) and the vLLM request."""
    check_columns(project_reward(ctx.cfg.online, check_only=True), ctx.rows)  # users' files read here, imported later
    vllm_args(ctx.cfg.online.use_vllm)


def build_trainer(ctx):
    o, t = ctx.cfg.online, ctx.cfg.train
    config_cls, trainer_cls = TRAINERS[ctx.method]
    recorder = build_reward(ctx)
    args = config_cls(
        **ctx.training_args(
            per_device_train_batch_size=t.batch_size * o.num_generations,
            num_generations=o.num_generations,
            max_completion_length=o.max_completion_length,
            temperature=o.temperature,
            top_p=o.top_p,
            beta=o.beta,
            remove_unused_columns=False,  # extra columns (e.g. "answer") go to the reward functions
            disable_dropout=True,
            log_completions=False,
            **vllm_args(o.use_vllm),
        )
    )
    monitor = HackingMonitor(kl_budget=o.kl_budget, length_drift=o.length_drift)
    trainer = trainer_cls(
        model=ctx.model,
        reward_funcs=[recorder],
        args=args,
        train_dataset=_dataset(ctx.rows, ctx.cfg.system_prompt),
        processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config(),
        callbacks=[*ctx.callbacks, MonitorCallback(ctx.run_dir, monitor)],
    )
    trainer._al_fp32_head = o.fp32_lm_head
    _kl_at_beta_zero(ctx, trainer)
    return trainer


def _kl_at_beta_zero(ctx, trainer) -> None:
    """At beta 0 TRL keeps no reference and logs no KL. A new adapter's reference is the base, there with the adapter
    off, so the KL is measured anyway (``_al_kl``); a run continued from an adapter or a full fine-tune has none at
    hand, and says KL goes unrecorded rather than leave online.kl_budget off without a word."""
    if ctx.cfg.online.beta != 0:
        return
    trainer._al_detached_kl = ctx.lora and ctx.init_adapter is None
    if not trainer._al_detached_kl and trainer.accelerator.is_main_process:
        why = "continued from an adapter" if ctx.lora else "a full fine-tune"
        console.print(f"[yellow]note: online.beta is 0 and this run is {why}: no reference model is kept, so KL "
                      "is not recorded and online.kl_budget is off (set online.beta > 0 to keep one)[/]")

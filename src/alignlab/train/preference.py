"""DPO, IPO, SimPO and ORPO: one recipe over TRL's DPOTrainer, with our losses and a faster forward.

TRL's DPOTrainer prepares the data (chat template, prompt/completion split, the adapter-disabled
reference) and runs the loop. We replace two pieces:

- the loss: ``alignlab.losses`` pure functions for all four methods (TRL's DPO is stable; its ORPO and
  CPO/SimPO live in ``trl.experimental``, so those two are ours and tested against the papers' math); on a batch,
  loss and metrics match TRL's DPOTrainer, CPOTrainer and ORPOTrainer (tests/train/test_preference_parity.py);
- the forward: chosen and rejected share their prompt. We run the prompt once, keep its KV cache, and
  run both completions on top of it, so prompt tokens cost one forward/backward instead of two; the
  LM head only runs on completion positions. Batches are grouped by length to cut padding. The result
  equals the plain forward up to float rounding (tests/train/test_train_preference.py checks it). It is
  the default on a CPU; on a GPU (``train.shared_prompt: auto``) TRL's one concatenated forward runs instead,
  because there a small model's step is bound by kernel launches and sharing doubles them.

Under multi-process data parallelism the model is wrapped by DDP, which must see exactly one forward
per step, so there we use TRL's single concatenated forward instead. With gradient checkpointing on
(``train.gradient_checkpointing``, which ``--qlora`` switches on) transformers turns the KV cache off in
training mode, so there is no prompt cache to share: the same plain forward is used, policy and reference.
"""

from __future__ import annotations

import torch
from trl import DPOConfig, DPOTrainer

from alignlab import losses, methods
from alignlab.train.callbacks import AlignlabTrainerMixin, gradient_checkpointing, sharded
from alignlab.train.logps import shared_prompt_logps

class PrefixCollator:
    """Pairs -> left-padded prompts (B, Lp) and right-padded completions (2B, Lc): chosen rows, then rejected."""

    def __init__(self, pad_token_id: int, max_length: int | None):
        self.pad, self.max_length = pad_token_id, max_length

    def __call__(self, examples: list[dict]) -> dict:
        prompts = [e["prompt_ids"] for e in examples]
        comps = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
        if self.max_length:
            comps = [c[: max(1, self.max_length - len(prompts[i % len(prompts)]))] for i, c in enumerate(comps)]
        lp, lc = max(map(len, prompts)), max(map(len, comps))
        out = {
            "prompt_ids": torch.tensor([[self.pad] * (lp - len(p)) + p for p in prompts]),
            "prompt_mask": torch.tensor([[0] * (lp - len(p)) + [1] * len(p) for p in prompts]),
            "completion_ids": torch.tensor([c + [self.pad] * (lc - len(c)) for c in comps]),
            "completion_mask": torch.tensor([[1] * len(c) + [0] * (lc - len(c)) for c in comps]),
        }
        if "ref_chosen_logps" in examples[0]:
            out["ref_chosen_logps"] = torch.tensor([e["ref_chosen_logps"] for e in examples])
            out["ref_rejected_logps"] = torch.tensor([e["ref_rejected_logps"] for e in examples])
        return out


def completion_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the completions, sharing each prompt's forward between its two completions
    (``alignlab.train.logps``). Returns (logps (2B, Lc), mask (2B, Lc)); padded positions are 0."""
    p_ids = batch["prompt_ids"]
    inverse = torch.arange(p_ids.shape[0], device=p_ids.device).repeat(2)  # chosen rows 0..B-1, rejected B..2B-1
    logps, _ = shared_prompt_logps(model, p_ids, batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"],
                                   inverse)
    return logps, batch["completion_mask"]


def concatenated_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The same quantity through one plain forward over [prompt+chosen; prompt+rejected] (TRL's fused head)."""
    p_ids, p_mask = batch["prompt_ids"], batch["prompt_mask"]
    c_ids, c_mask = batch["completion_ids"], batch["completion_mask"]
    ids = torch.cat([p_ids.repeat(2, 1), c_ids], dim=1)
    attn = torch.cat([p_mask.repeat(2, 1), c_mask], dim=1)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    labels = ids.masked_fill(torch.cat([torch.zeros_like(p_mask.repeat(2, 1)), c_mask], dim=1) == 0, -100)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, labels=labels, fused_lm_head=True, use_cache=False)
    return out.log_probs[:, -c_ids.shape[1] :] * c_mask, c_mask


def shares_prompt(setting: str, device_type: str) -> bool:
    """``train.shared_prompt``: auto shares on a CPU, where a step is bound by arithmetic; on a GPU a small model's
    step is bound by kernel launches, and sharing doubles them (README "Speed": 0.48x TRL on an H200 with sharing)."""
    return setting == "on" or (setting == "auto" and device_type != "cuda")


class PreferenceTrainer(AlignlabTrainerMixin, DPOTrainer):
    """DPOTrainer with alignlab's loss functions and the shared-prompt forward.

    Every method's beta is TRL's ``args.beta`` (``self.beta``), set once from the method's config section."""

    def __init__(self, *args, method: str = methods.DPO, method_cfg=None, shared_prompt: str = "auto", **kwargs):
        self.al_method, self.al_cfg = method, method_cfg
        super().__init__(*args, **kwargs)
        if not methods.get(method).reference and self.ref_model is not None:
            # TRL loads a reference copy for any full fine-tune; SimPO and ORPO never read one: let it go
            self.accelerator._models = [m for m in getattr(self.accelerator, "_models", []) if m is not self.ref_model]
            self.ref_model = None
        self.al_shared = shares_prompt(shared_prompt, self.accelerator.device.type)
        self.data_collator = PrefixCollator(self.processing_class.pad_token_id, self.args.max_length)
        self.train_dataset = self.train_dataset.map(
            lambda e: {"length": len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"]))}
        )

    def _count_tokens(self, inputs) -> int:
        return int(inputs["prompt_mask"].sum()) * 2 + int(inputs["completion_mask"].sum())

    def _plain_forward(self, model) -> bool:
        """TRL's concatenated forward: when prompt sharing is off (``train.shared_prompt``), under DDP (one forward
        per step), FSDP/DeepSpeed (the wrapper gathers the shards), or when gradient checkpointing has switched the
        KV cache off (training mode), which the shared-prompt forward needs."""
        return (not self.al_shared or self.accelerator.num_processes > 1 or sharded(self.accelerator)
                or (model.training and gradient_checkpointing(model)))

    def _logps(self, model, batch):
        if self._plain_forward(self.accelerator.unwrap_model(model)):
            return concatenated_logps(model, batch)  # through DDP's / accelerate's forward, which autocasts itself
        with self.accelerator.autocast():  # we call the backbone directly, past accelerate's forward wrapper
            return completion_logps(model, batch)

    def _reference(self, adapter: bool = False):
        """(the reference model, the context that makes it one): the policy with its adapter off (LoRA; on with
        ``adapter``, for a run continued from one), or the copy TRL loaded for a full fine-tune."""
        from contextlib import nullcontext

        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "disable_adapter"):
            return model, (nullcontext() if adapter else model.disable_adapter())
        return self.accelerator.unwrap_model(self.ref_model), nullcontext()

    def _reference_logps(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if "ref_chosen_logps" in batch:
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        model, off = self._reference()
        if sharded(self.accelerator):  # through the FSDP/DeepSpeed wrapper, which gathers the sharded weights
            wrapped = self.model_wrapped if model is self.accelerator.unwrap_model(self.model) else self.ref_model
            with torch.no_grad(), off:
                logps, _ = concatenated_logps(wrapped, batch)
            return logps.sum(1).chunk(2)
        forward = concatenated_logps if self._plain_forward(model) else completion_logps
        with torch.no_grad(), off, self.accelerator.autocast():
            logps, _ = forward(model, batch)
        return logps.sum(1).chunk(2)

    def precompute_reference(self, batch_size: int = 16, adapter: bool = False) -> None:
        """Reference log-probs for every pair, once, in inference mode (pays off from the second epoch).

        ``adapter=True`` keeps the starting adapter on: the model a run continues from (an SFT run, say)
        becomes the reference instead of the bare base.
        """
        model, off = self._reference(adapter)
        ds = self.train_dataset
        chosen, rejected = [], []
        model.eval()
        with torch.inference_mode(), off, self.accelerator.autocast():
            for i in range(0, len(ds), batch_size):
                batch = self.data_collator([ds[j] for j in range(i, min(i + batch_size, len(ds)))])
                batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                c, r = (completion_logps if self.al_shared else concatenated_logps)(model, batch)[0].sum(1).chunk(2)
                chosen += c.tolist()
                rejected += r.tolist()
        model.train()
        self.train_dataset = ds.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        token_logps, mask = self._logps(model, inputs)
        sums, lengths = token_logps.sum(1), mask.sum(1)
        c_sum, r_sum = sums.chunk(2)
        c_len, r_len = lengths.chunk(2)
        cfg, m = self.al_cfg, self.al_method
        if m == methods.DPO:
            per_pair, metrics = losses.dpo_loss(c_sum, r_sum, *self._reference_logps(inputs), beta=self.beta)
        elif m == methods.IPO:
            ref_c, ref_r = self._reference_logps(inputs)
            per_pair, metrics = losses.ipo_loss(c_sum, r_sum, ref_c, ref_r, c_len, r_len, beta=self.beta)
        elif m == methods.SIMPO:
            per_pair, metrics = losses.simpo_loss(c_sum, r_sum, c_len, r_len, beta=self.beta, gamma=cfg.gamma)
        elif m == methods.ORPO:
            c_avg, r_avg = c_sum / c_len, r_sum / r_len
            per_pair, metrics = losses.orpo_loss(c_avg, r_avg, -c_avg, beta=self.beta)
        else:
            raise ValueError(f"unknown preference method {m}")
        # the chosen answer's mean token NLL: RPO (Pang et al. 2024) for DPO and IPO, CPO's term for SimPO (ORPO's
        # loss has its own, so its section has neither key)
        nll_weight = getattr(cfg, "rpo_alpha", 0.0) or getattr(cfg, "sft_weight", 0.0)
        if nll_weight:
            per_pair = per_pair + nll_weight * (-c_sum / c_len.clamp(min=1))
        # each loss logs logps/chosen and logps/rejected as TRL's trainer for it does: sums for DPO and IPO, per-token
        # means for SimPO and ORPO (sums written over those read ~-400 per answer where TRL's read ~-8 per token)
        for key, value in metrics.items():
            value = value.detach().float().mean() if torch.is_tensor(value) else torch.tensor(float(value))
            self._metrics[mode][key].append(self.accelerator.gather_for_metrics(value.to(self.accelerator.device)).mean().item())
        loss = per_pair.mean()
        return (loss, {}) if return_outputs else loss


def args_class(method: str):
    """The TRL arguments class a run of ``method`` is configured with (train.trainer_overrides are checked on it)."""
    return DPOConfig


def check(ctx) -> None:
    """Nothing beyond the data checks (done by the engine) to verify before the model loads."""


def _rows_the_steps_use(rows: list[dict], args) -> list[dict]:
    """With --max-steps shorter than an epoch, the pairs those steps can reach: a sample (by the run's seed) of
    steps x batch x accumulation x processes of them, as the trainer's own arguments count them, so the
    reference is precomputed only for pairs that train (60 steps of batch 4 over 600 pairs computed 600 where
    240 train; 15 minutes on 2 cores)."""
    import random

    from alignlab.progress import console

    if args.max_steps <= 0:
        return rows
    used = args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    if used >= len(rows):
        return rows
    keep = sorted(random.Random(args.seed).sample(range(len(rows)), used))
    console.print(f"reference log-probs for {used} of {len(rows)} pairs: {args.max_steps} steps use no more "
                  "(a sample by the run's seed)")
    return [rows[i] for i in keep]


def reference_plan(ctx) -> tuple[bool, bool]:
    """(the starting adapter is the reference, reference log-probs are precomputed once before training) for this
    run: a run continued with --from is its own reference and precomputes; DPO's ``precompute_ref`` (auto: from
    the second epoch on) precomputes too. IPO precomputes only for a run continued."""
    spec = methods.get(ctx.method)
    mcfg = getattr(ctx.cfg, spec.section)
    ref_init = bool(spec.reference and ctx.init_adapter is not None and mcfg.reference in ("auto", "init"))
    choice = getattr(mcfg, "precompute_ref", "off")
    precompute = ref_init or bool(spec.reference and (choice == "on" or (choice == "auto" and ctx.cfg.train.epochs > 1)))
    return ref_init, precompute


def build_trainer(ctx):
    from datasets import Dataset

    from alignlab.data.formats import to_conversational

    method, spec = ctx.method, methods.get(ctx.method)
    mcfg = getattr(ctx.cfg, spec.section)
    ref_init, precompute = reference_plan(ctx)
    args = DPOConfig(
        **ctx.training_args(
            max_length=ctx.cfg.train.max_length,
            beta=mcfg.beta,  # the one beta: TRL's config carries it and compute_loss reads it back (self.beta)
            remove_unused_columns=False,
            disable_dropout=True,
        )
    )
    rows = [to_conversational(r, "preference") for r in ctx.rows]
    if precompute and spec.reference:
        rows = _rows_the_steps_use(rows, args)
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    trainer = PreferenceTrainer(
        model=ctx.model,
        args=args,
        train_dataset=dataset,
        processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config(),
        callbacks=ctx.callbacks,
        method=method,
        method_cfg=mcfg,
        shared_prompt=ctx.cfg.train.shared_prompt,
    )
    if precompute and spec.reference:
        trainer.precompute_reference(batch_size=max(8, ctx.cfg.train.batch_size * 2), adapter=ref_init)
    return trainer


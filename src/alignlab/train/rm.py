"""Reward model: a Bradley-Terry scorer over preference pairs, with TRL's RewardTrainer.

The base becomes ``AutoModelForSequenceClassification(num_labels=1)``: a linear ``score`` head reads the
hidden state of the last non-padding token of the chat-formatted prompt + response (decoder models have
no [CLS]; the last token is the only one that has seen the whole text). The loss is TRL's
-log sigma(r_chosen - r_rejected), the Bradley-Terry loss of ``alignlab.losses.bradley_terry_loss``.

Choices that differ from a plain ``RewardTrainer(model=...)``:

- the score head starts at zero, so every reward is 0 at step 0 and the first loss is exactly ln 2 (a coin
  flip), a check that the setup is sound. transformers draws the head from N(0, 0.02): on SmolLM2-135M
  and the bundled pairs that starts every reward near -1.6 and the loss at 0.74;
- LoRA on the backbone with the head in ``modules_to_save``: the adapter directory holds the trained head,
  which is what ``alignlab.rewards.rm.RewardModel`` loads to use the run as a reward;
- a pair longer than ``train.max_length`` is cut at the end (TRL drops it);
- ``rm.eval_fraction`` of the pairs (shuffled by the run's seed) is held out; pair accuracy on them is
  logged as ``eval_accuracy`` (TRL's: chosen strictly above rejected, so the zero head's all-tied start reads 0.0,
  not 0.5) at the start, every ``train.save_steps`` steps and at the end.
"""

from __future__ import annotations

import random

from transformers import TrainerCallback
from trl import RewardConfig, RewardTrainer

from alignlab.train.callbacks import AlignlabTrainerMixin

COLUMNS = ("prompt", "chosen", "rejected")


class AlignlabRewardTrainer(AlignlabTrainerMixin, RewardTrainer):
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "length" not in self._signature_columns:  # kept for the length-grouped sampler
            self._signature_columns.append("length")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss; on held-out pairs the accuracy and margin go in pair by pair, so ``eval_accuracy`` is over all
        pairs (TRL appends each batch's mean: a short last batch weighed as much as a full one)."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if not self.model.training:
            import torch

            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1).detach(), chunks=2)
            metrics = self._metrics["eval"]
            for key, values in (("accuracy", (chosen > rejected).float()), ("margin", chosen - rejected)):
                metrics[key].pop()
                metrics[key].extend(self.accelerator.gather_for_metrics(values).tolist())
        return (loss, outputs) if return_outputs else loss

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Cut over-long pairs at the end instead of TRL's dropping them (what the data check says happens:
        a long answer would otherwise leave training without a word, and an all-long file would leave nothing)."""
        limit, args.max_length = args.max_length, None
        try:
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        finally:
            args.max_length = limit
        if limit is None:
            return dataset
        return dataset.map(lambda e: {"chosen_ids": e["chosen_ids"][:limit], "rejected_ids": e["rejected_ids"][:limit]})


class EvaluateAtEnd(TrainerCallback):
    """Evaluate after the last step too (the step-interval schedule usually misses it)."""

    def on_step_end(self, args, state, control, **kwargs):
        if args.eval_strategy != "no" and state.global_step >= state.max_steps:
            control.should_evaluate = True


def split_pairs(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out): a seeded shuffle, then ``fraction`` of the pairs (at least 1 when > 0) held out."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_eval = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if fraction > 0 and len(rows) > 1 else 0
    return rows[n_eval:], rows[:n_eval]


def zero_score_head(model) -> None:
    """Start every reward at 0 (first loss = ln 2); see the module docstring."""
    import torch

    with torch.no_grad():
        model.score.weight.zero_()
        if model.score.bias is not None:
            model.score.bias.zero_()


def _dataset(rows: list[dict]):
    from datasets import Dataset

    from alignlab.data.formats import to_conversational

    conv = [to_conversational(r, "preference") for r in rows]
    keep = COLUMNS + (("margin",) if all(isinstance(r.get("margin"), (int, float)) for r in rows) else ())
    return Dataset.from_list([{k: r[k] for k in keep} for r in conv])


def _add_length(ds):
    return ds.map(lambda e: {"length": max(len(e["chosen_ids"]), len(e["rejected_ids"]))})


def args_class(method: str):
    """The TRL arguments class a run of ``method`` is configured with (train.trainer_overrides are checked on it)."""
    return RewardConfig


def check(ctx) -> None:
    """Nothing beyond the data checks (done by the engine) to verify before the model loads."""


def build_trainer(ctx):
    cfg = ctx.cfg
    train_rows, eval_rows = split_pairs(ctx.rows, cfg.rm.eval_fraction, cfg.train.seed)
    ctx.eval_rows = eval_rows
    if ctx.init_adapter is None:
        zero_score_head(ctx.model)
    peft = ctx.peft_config("SEQ_CLS")
    if peft is not None:
        peft.modules_to_save = ["score"]
    evaluate = bool(eval_rows)
    args = RewardConfig(
        **ctx.training_args(
            max_length=cfg.train.max_length,
            remove_unused_columns=True,
            disable_dropout=True,
            eval_strategy="steps" if evaluate else "no",
            eval_steps=cfg.train.save_steps,
            eval_on_start=evaluate,
            per_device_eval_batch_size=max(8, cfg.train.batch_size),
        )
    )
    trainer = AlignlabRewardTrainer(
        model=ctx.model,
        args=args,
        train_dataset=_dataset(train_rows),
        eval_dataset=_dataset(eval_rows) if evaluate else None,
        processing_class=ctx.tokenizer,
        peft_config=peft,
        callbacks=[*ctx.callbacks, EvaluateAtEnd()],
    )
    trainer.train_dataset = _add_length(trainer.train_dataset)
    if evaluate:
        trainer.eval_dataset = _add_length(trainer.eval_dataset)
    return trainer

"""SFT: TRL's SFTTrainer on messages or prompt/completion rows, loss on the assistant's tokens only."""

from __future__ import annotations

from trl import SFTConfig, SFTTrainer

from alignlab.train.callbacks import AlignlabTrainerMixin


class AlignlabSFTTrainer(AlignlabTrainerMixin, SFTTrainer):
    pass


def _row(r: dict) -> dict:
    from alignlab.data.formats import to_conversational

    if "messages" in r:
        return {"messages": r["messages"]}
    c = to_conversational(r, "sft")
    return {"prompt": c["prompt"], "completion": c["completion"]}


def check(ctx) -> None:
    """Nothing beyond the data checks (done by the engine) to verify before the model loads."""


def build_trainer(ctx):
    from datasets import Dataset

    rows = [_row(r) for r in ctx.rows]
    args = SFTConfig(
        **ctx.training_args(
            max_length=ctx.cfg.train.max_length,
            completion_only_loss=ctx.cfg.sft.completion_only if "prompt" in rows[0] else None,
            assistant_only_loss=False,
        )
    )
    return AlignlabSFTTrainer(
        model=ctx.model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config(),
        callbacks=ctx.callbacks,
    )

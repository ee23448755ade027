"""KTO on thumbs up/down (prompt, completion, label): TRL's KTOTrainer, reference = adapter disabled."""

from __future__ import annotations

import random

from trl import KTOConfig, KTOTrainer

from alignlab.train.callbacks import AlignlabTrainerMixin


class AlignlabKTOTrainer(AlignlabTrainerMixin, KTOTrainer):
    pass


def check(ctx) -> None:
    """Nothing beyond the data checks (done by the engine) to verify before the model loads."""


def build_trainer(ctx):
    from datasets import Dataset

    from alignlab.data.formats import to_conversational

    k = ctx.cfg.kto
    rows = [to_conversational(r, "unpaired") for r in ctx.rows]
    random.Random(ctx.cfg.train.seed).shuffle(rows)
    args = KTOConfig(
        **ctx.training_args(
            max_length=ctx.cfg.train.max_length,
            beta=k.beta,
            desirable_weight=k.desirable_weight,
            undesirable_weight=k.undesirable_weight,
            # KTO estimates its KL reference point from neighbours in a fixed-order batch: sequential sampling,
            # with the rows shuffled once here by the run's seed instead.
            train_sampling_strategy="sequential",
        )
    )
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"]} for r in rows])
    return AlignlabKTOTrainer(
        model=ctx.model,
        args=args,
        train_dataset=dataset,
        processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config(),
        callbacks=ctx.callbacks,
    )

"""KTO on thumbs up/down (prompt, completion, label): TRL's KTOTrainer.

The reference is the base with the adapter disabled; for a run continued with --from (a PEFT model handed in, no
peft_config), TRL adds a frozen "ref" copy of the starting adapter and that is the reference.
"""

from __future__ import annotations

import random

from trl import KTOConfig, KTOTrainer

from alignlab.errors import AlignlabError
from alignlab.progress import console
from alignlab.train.callbacks import AlignlabTrainerMixin


class AlignlabKTOTrainer(AlignlabTrainerMixin, KTOTrainer):
    pass


def class_weights(labels, desirable: float | None, undesirable: float | None) -> tuple[float, float]:
    """The (desirable, undesirable) loss weights; a weight left unset balances the classes.

    The KTO paper (Ethayarajh et al. 2024, Eq. 8) asks for desirable_weight * n_desirable /
    (undesirable_weight * n_undesirable) in [1, 4/3]. With both unset, the rarer class gets the count ratio and
    the other 1, which puts the product at 1; with one set, the other is chosen against it the same way.
    """
    n_up = sum(1 for x in labels if x)
    n_down = len(labels) - n_up
    if not n_up or not n_down:
        return desirable or 1.0, undesirable or 1.0
    if desirable is None and undesirable is None:
        return (n_down / n_up, 1.0) if n_up < n_down else (1.0, n_up / n_down)
    if desirable is None:
        return undesirable * n_down / n_up, undesirable
    if undesirable is None:
        return desirable, desirable * n_up / n_down
    return desirable, undesirable


def args_class(method: str):
    """The TRL arguments class a run of ``method`` is configured with (train.trainer_overrides are checked on it)."""
    return KTOConfig


def check(ctx) -> None:
    """Before the model loads: TRL refuses a per-device batch of one for KTO only once the model has loaded (the run
    then failed, leaving its name taken)."""
    estimates_kl = ctx.cfg.train.trainer_overrides.get("loss_type") != "apo_zero_unpaired"  # TRL's rule
    if estimates_kl and ctx.cfg.train.batch_size < 2:
        raise AlignlabError(f"train.batch_size (--batch-size) is {ctx.cfg.train.batch_size}; it must be at least 2 "
                            "for KTO (its KL baseline needs mismatched pairs in one batch)",
                            fix="use --batch-size 2 or more; --grad-accum gives a larger effective batch")


def build_trainer(ctx):
    from datasets import Dataset

    from alignlab.data.formats import to_conversational

    k = ctx.cfg.kto
    rows = [to_conversational(r, "unpaired") for r in ctx.rows]
    random.Random(ctx.cfg.train.seed).shuffle(rows)
    up, down = class_weights([r["label"] for r in rows], k.desirable_weight, k.undesirable_weight)
    if (up, down) != (k.desirable_weight, k.undesirable_weight):
        n_up = sum(1 for r in rows if r["label"])
        console.print(f"kto: {n_up} thumbs up, {len(rows) - n_up} down: desirable_weight {up:.3g}, undesirable_weight {down:.3g} "
                "(balanced; set kto.desirable_weight / kto.undesirable_weight to choose)")
    args = KTOConfig(
        **ctx.training_args(
            max_length=ctx.cfg.train.max_length,
            beta=k.beta,
            desirable_weight=up,
            undesirable_weight=down,
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

"""SFT: TRL's SFTTrainer on messages or prompt/completion rows, loss on the assistant's tokens only.

One change to TRL's loss computation, for speed (bench/bench_sft.py): on a single process, the trunk runs as
usual and the LM head runs only on the positions that carry a label (the completion), in the autocast
precision (bf16 where the CPU or GPU has it), through a plain log-softmax. TRL's own path runs the head through
its chunked fp32 log-prob kernel, which on the default model spent about half of each step there (head and its
backward, a weight gradient for the frozen head included). The loss is the same token-mean negative
log-likelihood; the logged entropy and mean token accuracy are the same quantities. Under DDP, FSDP or DeepSpeed
(the wrapper's forward must run), with logit soft-capping or scaling, or a head with a bias, TRL's path runs unchanged.
"""

from __future__ import annotations

import torch
from trl import SFTConfig, SFTTrainer

from alignlab.train.callbacks import AlignlabTrainerMixin, sharded
from alignlab.train.logps import head_logps, scaled_head


class AlignlabSFTTrainer(AlignlabTrainerMixin, SFTTrainer):
    def _own_head(self, model, inputs) -> bool:
        """Whether this batch can take alignlab's head path (``model``: the PEFT model or its base)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        return (self.accelerator.num_processes == 1 and not sharded(self.accelerator)
                and "labels" in inputs and "attention_mask" in inputs and self.args.loss_type == "nll"
                and self.compute_loss_func is None and self.label_smoother is None and not self.aux_loss_enabled
                and isinstance(head, torch.nn.Linear) and head.bias is None and hasattr(base, "get_decoder")
                and not scaled_head(base))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        unwrapped = self.accelerator.unwrap_model(model)
        base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
        if return_outputs or not self._own_head(base, inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with self.accelerator.autocast():  # the trunk is called directly, past accelerate's forward wrapper
            hidden = base.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                        position_ids=inputs.get("position_ids"), use_cache=False).last_hidden_state
            labels = inputs["labels"][:, 1:]
            sel = labels != -100
            logps, entropy, top1 = head_logps(base.get_output_embeddings().weight, hidden[:, :-1][sel], labels[sel],
                                              stats=True)
        count = sel.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -logps.sum() / torch.as_tensor(count, device=logps.device).clamp(min=1)  # one process (see _own_head)
        mode = "train" if self.model.training else "eval"
        valid = int(sel.sum())
        self._metrics[mode]["entropy"].append(float(entropy.sum()) / valid if valid else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append(float(top1.sum()) / valid if valid else 0.0)
        if mode == "train":
            self._total_train_tokens += int(inputs["attention_mask"].sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss


def _row(r: dict, completion_only: bool = True) -> dict:
    """A training row for TRL. With ``sft.completion_only`` a chat (``messages``) becomes a conversational
    prompt/completion row split at its last assistant turn, so the loss falls on that answer alone, as it does
    for prompt/completion rows (earlier turns, the assistant's included, are context; turns after it, which a
    completion-only loss would not train, are left out, as the data check's length count does)."""
    from alignlab.data.formats import last_answer, to_conversational

    if "messages" in r:
        msgs = r["messages"]
        if not completion_only:
            return {"messages": msgs}
        last = last_answer(msgs)
        return {"prompt": msgs[:last], "completion": [msgs[last]]}
    c = to_conversational(r, "sft")
    return {"prompt": c["prompt"], "completion": c["completion"]}


def args_class(method: str):
    """The TRL arguments class a run of ``method`` is configured with (train.trainer_overrides are checked on it)."""
    return SFTConfig


def check(ctx) -> None:
    """Nothing beyond the data checks (done by the engine) to verify before the model loads."""


def build_trainer(ctx):
    from datasets import Dataset

    rows = [_row(r, ctx.cfg.sft.completion_only) for r in ctx.rows]
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

"""The implicit reward on held-out labelled pairs: an instrument that lives outside the training loop.

DPO's implicit reward of an answer is ``beta * (log pi(answer) - log ref(answer))``. On the training pairs
its accuracy (chosen above rejected) rises whatever the labels say: the loss teaches exactly that. On pairs
labelled independently and never trained on, it says whether the run learned the preference a person holds
or its opposite. ``HeldoutRewardAccuracy`` computes the reference log-probs once (adapter off) when training
begins, then every ``every`` steps and at the end logs to metrics.jsonl:

- ``heldout/reward_accuracy``: share of held-out pairs whose chosen answer gets the higher implicit reward;
- ``heldout/margin``: mean implicit-reward margin, chosen minus rejected.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import TrainerCallback

from alignlab import rundir

BATCH = 8  # pairs per forward


def _chat_ids(tokenizer, messages: list[dict], **kwargs) -> list[int]:
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"]


def encode_pairs(tokenizer, pairs: list[dict], max_length: int) -> list[dict]:
    """Token ids of each pair as DPO training takes them: TRL's DPOTrainer templates the prompt alone and the prompt
    with each answer, and the answer is what follows their common prefix, so it ends with the template's end of turn
    (for ChatML ``<|im_end|>`` and a newline; tokenising the answer and adding EOS left the newline out)."""
    from trl.data_utils import common_prefix_length

    from alignlab.data.formats import to_conversational

    out = []
    for p in pairs:
        chat = to_conversational(p, "preference")
        prompt = _chat_ids(tokenizer, chat["prompt"], add_generation_prompt=True)
        full = {k: _chat_ids(tokenizer, chat["prompt"] + chat[k]) for k in ("chosen", "rejected")}
        n = min(common_prefix_length(prompt, ids) for ids in full.values())
        room = max(1, max_length - n)  # as PrefixCollator cuts them
        out.append({"prompt_ids": prompt[:n], "chosen_ids": full["chosen"][n:][:room],
                    "rejected_ids": full["rejected"][n:][:room]})
    return out


def pair_logps(model, encoded: list[dict], pad: int, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the chosen and of the rejected answers, (N,) each."""
    from alignlab.train.preference import PrefixCollator, completion_logps

    collate = PrefixCollator(pad, None)
    device = next(model.parameters()).device
    chosen, rejected = [], []
    cast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with torch.no_grad(), cast:
        for i in range(0, len(encoded), BATCH):
            batch = {k: v.to(device) for k, v in collate(encoded[i : i + BATCH]).items()}
            logps, _ = completion_logps(model, batch)
            sums = logps.float().sum(1)
            n = len(sums) // 2
            chosen.append(sums[:n].cpu())
            rejected.append(sums[n:].cpu())
    return torch.cat(chosen), torch.cat(rejected)


def implicit_reward_stats(pc, pr, rc, rr, beta: float) -> dict:
    """Accuracy and mean margin of ``beta * ((pc - rc) - (pr - rr))`` (policy / reference, chosen / rejected)."""
    margin = beta * ((pc - rc) - (pr - rr))
    return {"heldout/reward_accuracy": float((margin > 0).float().mean()), "heldout/margin": float(margin.mean())}


class HeldoutRewardAccuracy(TrainerCallback):
    """Every ``every`` steps and at the end: the implicit reward's accuracy on held-out labelled pairs."""

    def __init__(self, pairs: list[dict], beta: float, every: int, run_dir: Path, max_length: int = 256):
        self.pairs, self.beta, self.every, self.max_length = pairs, beta, every, max_length
        self.run_dir = Path(run_dir)
        self.encoded: list[dict] = []
        self.ref = None
        self.pad = 0
        self.done: set[int] = set()

    def _logps(self, model, args):
        was = model.training
        model.eval()
        try:
            return pair_logps(model, self.encoded, self.pad, bf16=bool(args.bf16))
        finally:
            model.train(was)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        tok = processing_class
        self.encoded = encode_pairs(tok, self.pairs, self.max_length)
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext():
            self.ref = self._logps(model, args)

    def _record(self, args, state, model) -> None:
        step = state.global_step
        if step in self.done or not state.is_world_process_zero:
            return
        self.done.add(step)
        pc, pr = self._logps(model, args)
        stats = implicit_reward_stats(pc, pr, *self.ref, beta=self.beta)
        rundir.append_metrics(self.run_dir, {"step": step, **stats})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._record(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._record(args, state, model)

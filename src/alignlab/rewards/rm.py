"""A trained reward model run as a reward function.

The run directory holds ``run.json`` (key ``model``: the base model name) and ``adapter/``: a PEFT adapter over
``AutoModelForSequenceClassification(num_labels=1)`` whose trained score head is saved with it
(``modules_to_save``), or, for a full fine-tune (``train rm --full``), the whole classifier (``config.json`` and
its weights). The score of a completion is the head's logit at the last non-pad token of the
chat-formatted prompt + completion, which is how transformers pools sequence classifiers and how TRL's
RewardTrainer trains them (right padding, ``pad_token_id`` set on the config).
"""

from __future__ import annotations

import json
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.rewards.common import as_messages, completion_text, prompt_text


def _check_run(run_dir: Path) -> tuple[str, Path, bool]:
    """(base model name, adapter dir, whether it holds a whole fine-tuned model) of a reward-model run, or a one-line
    error saying what is missing."""
    if not run_dir.is_dir():
        raise AlignlabError(f"reward model run '{run_dir}' does not exist", fix="pass a directory under runs/")
    meta, adapter = run_dir / "run.json", run_dir / "adapter"
    if not meta.is_file():
        raise AlignlabError(
            f"'{run_dir}' is not an alignlab run (no run.json)", fix="pass a reward-model run directory"
        )
    try:
        info = json.loads(meta.read_text())
        base = info["model"]
    except (ValueError, KeyError, TypeError) as err:
        raise AlignlabError(f"{meta} has no \"model\" key", fix="was this run written by `alignlab train rm`?") from err
    if (adapter / "adapter_config.json").is_file():
        return base, adapter, False
    if (adapter / "config.json").is_file():  # `train rm --full`: the whole classifier
        if info.get("method") != "rm":  # another method's full fine-tune has no trained score head
            raise AlignlabError(f"'{run_dir}' is a {info.get('method')} run, not a reward model",
                                fix="pass a run of `alignlab train rm`")
        return base, adapter, True
    raise AlignlabError(f"'{run_dir}' has no adapter/adapter_config.json (LoRA) or adapter/config.json (--full)",
                        fix="pass a finished reward-model run")


def _has_score_head(adapter: Path) -> bool:
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        return True  # a .bin adapter: trust it
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return any(".score." in k or ".classifier." in k for k in f.keys())


class RewardModel:
    """Reward function: the reward model's scalar score (an unbounded logit) per completion."""

    __name__ = "reward_model"

    def __init__(self, run: str | Path, device: str = "auto", batch_size: int = 8, max_length: int = 1024):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification

        from alignlab.models.loading import (_from_pretrained, _safetensors_only, has_tokenizer, load_tokenizer,
                                             pick_device, trusts_remote_code)
        from alignlab.models.registry import resolve_model

        self.run_dir = Path(run)
        base, adapter, full = _check_run(self.run_dir)
        if not full and not _has_score_head(adapter):
            raise AlignlabError(
                f"the adapter in '{self.run_dir}' has no trained score head",
                fix="train the reward model with a SEQ_CLS LoRA (the head goes in modules_to_save)",
            )
        self.base, self.device = base, pick_device(device)
        self.batch_size, self.max_length = batch_size, max_length
        trust = trusts_remote_code(self.run_dir)  # as the run was trained
        # train and eval's loaders: a padding token where the tokenizer has none (the model's eos, not a None that
        # failed the first batch), and a base that lacks weights refused, not loaded with random ones
        tok_from = str(adapter) if full and has_tokenizer(adapter) else base  # a LoRA run saves no tokenizer
        self.tokenizer = load_tokenizer(tok_from, trust_remote_code=trust)
        self.tokenizer.padding_side = "right"
        weights, name = (str(adapter), str(adapter)) if full else (resolve_model(base), base)
        model = _from_pretrained(AutoModelForSequenceClassification, weights, name, new=() if full else ("score.",),
                                 num_labels=1, dtype=torch.float32, trust_remote_code=trust,
                                 **_safetensors_only(weights, name))  # a LoRA run's adapter brings the score head
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = (model if full else PeftModel.from_pretrained(model, str(adapter))).to(self.device).eval()

    def format(self, prompt, completion) -> str:
        """prompt + completion as the model's chat template renders them (plain concatenation without one)."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = as_messages(prompt) + [{"role": "assistant", "content": completion_text(completion)}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return prompt_text(prompt) + completion_text(completion)

    def score_texts(self, texts: list[str]) -> list[float]:
        import torch

        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                out += self.model(**batch).logits[:, 0].float().tolist()
        return out

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        return self.score_texts([self.format(p, c) for p, c in zip(prompts, completions)])

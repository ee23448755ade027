"""What every recipe shares: atomic checkpoints, a NaN stop, token counting, metrics, samples, progress.

``AlignlabTrainerMixin`` goes in front of a TRL trainer class (``class X(AlignlabTrainerMixin, DPOTrainer)``);
the callbacks are plain ``TrainerCallback``s.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from alignlab import fsutil, rundir
from alignlab.config import PROGRESS_MAX_NEW_TOKENS
from alignlab.errors import AlignlabError
from alignlab.progress import console, progress_bar


COUNTS_FILE = "alignlab.json"  # in each checkpoint: the running counts a resume goes on from


class NonFiniteLoss(AlignlabError):
    pass


def sharded(accelerator) -> bool:
    """FSDP or DeepSpeed: parameters may live in shards, so saving and extra forwards go through accelerate."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def gradient_checkpointing(model) -> bool:
    """Whether transformers' gradient checkpointing is on for this (possibly PEFT-wrapped) model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") else "is_gradient_checkpointing"
    return bool(getattr(base, name, False))


class AlignlabTrainerMixin:
    """Adds to a transformers/TRL trainer: NaN stop, non-padding token counting, atomic checkpoints."""

    _al_tokens = 0
    _al_last = (0, None)  # (tokens, time) at the previous log

    def training_step(self, model, inputs, *args, **kwargs):
        self._al_tokens += self._over_processes(self._count_tokens(inputs))
        loss = super().training_step(model, inputs, *args, **kwargs)
        if not torch.isfinite(loss).all():
            raise NonFiniteLoss(
                f"loss became {float(loss)} at step {self.state.global_step + 1}; the run stopped and no adapter "
                "was written (the last checkpoint is intact)",
                fix="lower the learning rate or check the data and rewards",
            )
        return loss

    def _over_processes(self, count: int) -> int:
        """A count summed over the run's processes: every process trains every step, so the collective is safe here
        (rank 0's count alone put tokens/s at 1/N of the run's with --processes N)."""
        if self.accelerator.num_processes == 1:
            return count
        return int(self.accelerator.reduce(torch.tensor(count, device=self.accelerator.device), reduction="sum"))

    def _count_tokens(self, inputs) -> int:
        """Non-padding tokens in a batch (recipes with other batch layouts override this)."""
        if not isinstance(inputs, dict):
            return 0
        total = 0
        for key in ("attention_mask", "prompt_mask", "completion_mask"):
            if key == "attention_mask" and key in inputs:
                return int(inputs[key].sum())
            if key in inputs:
                total += int(inputs[key].sum())
        return total

    def log(self, logs: dict, *args, **kwargs):
        now = time.perf_counter()
        last_tokens, last_time = self._al_last
        if last_time is not None and "loss" in logs:
            dt = now - last_time
            logs["tokens_per_s"] = round((self._al_tokens - last_tokens) / dt, 2) if dt > 0 else 0.0
        if "loss" in logs or last_time is None:
            self._al_last = (self._al_tokens, now)
        logs["tokens"] = self._al_tokens
        return super().log(logs, *args, **kwargs)

    # running counts a checkpoint carries (alignlab.json): a resume went on from 0, so `tokens` (and SFT's num_tokens)
    # read 779 where an uninterrupted run read 5522
    COUNTS = {"tokens": "_al_tokens", "num_tokens": "_total_train_tokens"}

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if isinstance(resume_from_checkpoint, (str, os.PathLike)):
            self._restore_counts(Path(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _restore_counts(self, checkpoint: Path) -> None:
        """The counts at ``checkpoint``: its alignlab.json, else (a checkpoint written before it) the last value
        its log history holds."""
        import json

        try:
            saved = json.loads((checkpoint / COUNTS_FILE).read_text())
        except (OSError, ValueError):
            saved = {}
            try:
                history = json.loads((checkpoint / "trainer_state.json").read_text()).get("log_history") or []
            except (OSError, ValueError, AttributeError):
                history = []
            for key in self.COUNTS:
                saved[key] = next((h[key] for h in reversed(history) if isinstance(h, dict) and key in h), None)
        for key, attr in self.COUNTS.items():
            if isinstance(saved.get(key), (int, float)) and (key == "tokens" or hasattr(self, attr)):
                setattr(self, attr, int(saved[key]))

    def _get_train_sampler(self, *args, **kwargs):
        """transformers' length-grouped sampler, but drawn per epoch from (data seed + epoch) (see below)."""
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = super()._get_train_sampler(*args, **kwargs)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler

    def _save_checkpoint(self, model, trial):
        """Write checkpoint-N under checkpoints/.staging, then rename it into place (a kill never leaves half)."""
        final_root = self.args.output_dir
        staging = os.path.join(final_root, ".staging")
        name = f"checkpoint-{self.state.global_step}"
        shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
        self.args.output_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = final_root
        if self.args.should_save:
            counts = {key: getattr(self, attr) for key, attr in self.COUNTS.items() if hasattr(self, attr)}
            fsutil.write_json(Path(staging, name, COUNTS_FILE), counts)
            fsutil.replace_dir(os.path.join(staging, name), os.path.join(final_root, name))  # fsynced, then renamed
            _rotate(final_root, keep=2)


class EpochSeededLengthGroupedSampler(torch.utils.data.Sampler):
    """Length-grouped order whose epoch-k permutation comes from a generator seeded with ``seed + k``.

    transformers' ``LengthGroupedSampler`` draws from the global RNG, so a run resumed inside epoch 2 or later
    skipped the first batches of epoch 1's order instead of its own (the adapter ended 0.002-0.006 away from an
    uninterrupted run). accelerate's ``DataLoaderShard.set_epoch`` reaches this ``set_epoch``, also through the
    skip wrapper a resume puts around the batch sampler.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        self.batch_size, self.lengths, self.seed, self.epoch = batch_size, list(lengths), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def _rotate(root: str, keep: int) -> None:
    ckpts = sorted(
        (p for p in Path(root).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for old in ckpts[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


class MetricsCallback(TrainerCallback):
    """Appends every log to metrics.jsonl; watches for the falling-chosen-log-prob failure (DPO family)."""

    def __init__(self, run_dir: Path, watch_chosen: bool = False, window: int = 5, beta: float = 0.1,
                 per_token: bool = False):
        self.run_dir = Path(run_dir)
        self.watch_chosen = watch_chosen
        self.window = window
        self.beta = beta or 1.0
        # the fall that counts, in nats of the chosen answer's log-prob: per answer against the reference (DPO,
        # IPO) or per token (SimPO and ORPO, whose rewards/chosen is beta times the mean log-prob per token)
        self.fall = 0.1 if per_token else 1.0
        self.history: list[tuple[float, float]] = []
        self.warned = False
        self.last: dict = {}

    def _write(self, record: dict) -> None:
        rundir.append_metrics(self.run_dir, record)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **logs}
        record = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in record.items()}
        if "loss" in logs:
            self.last = record
        self._write(record)
        if self.watch_chosen and "rewards/chosen" in logs and "rewards/margins" in logs:
            self._check_chosen(state.global_step, logs["rewards/chosen"] / self.beta, logs["rewards/margins"])

    def _check_chosen(self, step: int, chosen: float, margin: float) -> None:
        """Warn when the chosen answers' log-prob falls (against the reference, or per token) while the margin grows:
        both sides are being pushed down. Not the summed log-prob itself: batches of different lengths (length
        grouping runs from long to short) move it by hundreds of nats with no learning at all."""
        self.history.append((chosen, margin))
        if self.warned or len(self.history) < 2 * self.window:
            return
        early = self.history[: self.window]
        late = self.history[-self.window :]
        c0 = sum(c for c, _ in early) / self.window
        c1 = sum(c for c, _ in late) / self.window
        m0 = sum(m for _, m in early) / self.window
        m1 = sum(m for _, m in late) / self.window
        if c1 < c0 - self.fall and c1 < 0 and m1 > m0:
            self.warned = True
            unit = "per token" if self.fall < 1 else "against the reference"
            msg = (
                f"the chosen answers' log-prob is falling ({c0:+.2f} -> {c1:+.2f} nats {unit}) while the margin grows "
                f"({m0:.2f} -> {m1:.2f}): both responses are being pushed down (try a larger beta, fewer steps, or an "
                "SFT term)"
            )
            console.print(f"[yellow]warning (step {step}): {msg}[/]")
            self._write({"step": step, "warning": "chosen_logps_falling", "message": msg})


class SamplesCallback(TrainerCallback):
    """Greedy generations on fixed held-out prompts at the start, every N steps, and at the end."""

    def __init__(self, run_dir: Path, prompts: list[str], every: int, tokenizer, max_new_tokens: int = PROGRESS_MAX_NEW_TOKENS):
        self.run_dir = Path(run_dir)
        self.prompts, self.every, self.tok, self.max_new = prompts, every, tokenizer, max_new_tokens
        self.done_steps: set[int] = set()

    def _sample(self, model, step: int) -> None:
        if not self.prompts or step in self.done_steps:
            return
        self.done_steps.add(step)
        from alignlab.generate import generate

        model = getattr(model, "module", model)
        was_training = model.training
        model.eval()
        outs = generate(model, self.tok, self.prompts, max_new_tokens=self.max_new, temperature=0.0)
        if was_training:
            model.train()
        rundir.append_samples(self.run_dir, *({"step": step, "prompt": p, "completion": o} for p, o in zip(self.prompts, outs)))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and state.global_step == 0:
            self._sample(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and state.global_step % self.every == 0:
            self._sample(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self._sample(model, state.global_step)


class RichProgressCallback(TrainerCallback):
    """Progress bar with step, loss, tokens/s and time left (replaces transformers' tqdm bar).

    The loss shown is the last logged step's ("loss -" until the first one), updated when that step logs.
    """

    def __init__(self, description: str):
        self.description = description
        self.bar = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.progress import TextColumn

        self.bar = progress_bar(TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]}"))
        self.bar.start()
        self.task = self.bar.add_task(
            self.description, total=state.max_steps, completed=state.global_step, loss="-", tps=""
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            fields = {"loss": loss_text(logs["loss"])}
            if logs.get("tokens_per_s") is not None:
                fields["tps"] = f"{logs['tokens_per_s']:.0f} tok/s"
            self.bar.update(self.task, completed=state.global_step, **fields)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def loss_text(loss) -> str:
    """A loss for the progress bar: 4 decimals, or the plain word when it is not a number."""
    try:
        value = float(loss)
    except (TypeError, ValueError):
        return "-"
    return f"{value:.4f}" if value == value else "nan"

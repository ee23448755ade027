"""Every training run is a calibration point: the plan before it starts, the measurement after it ends.

``alignlab train`` calls :func:`before_training` (prints the estimate, returns the record) and
:func:`after_training` (adds peak memory and seconds per step). Both land in ``run.json`` under
``plan``: ``{"workload", "device", "estimate", "measured"}``. The workload is stored, not only the
estimate, so ``alignlab plan --calibrate`` can re-estimate old runs with the current arithmetic.
"""

from __future__ import annotations

import os

import resource
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

from transformers import TrainerCallback

from alignlab.plan.estimate import GIB, ONLINE, Device, Workload, estimate
from alignlab.plan.report import hours_text
from alignlab.plan.shapes import MINILM_PARAMS, from_config


class PlanRecorder(TrainerCallback):
    """Prints the plan when training begins, times each optimizer step, writes run.json ``plan`` at the end.

    Step time runs from ``on_step_begin`` to ``on_step_end`` (generation included for online methods;
    checkpoints and logging excluded). It goes first in the callback list so the other callbacks'
    step-end work (samples) is not counted.
    """

    def __init__(self, ctx):
        self.ctx = ctx
        self.record: dict | None = None
        self.durations: list[float] = []
        self.cpu_durations: list[float] = []
        self._t0: float | None = None
        self._c0 = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.record = before_training(self.ctx)
            if self.record is not None:  # what the process holds before the first step: runtime + weights
                self.record["rss_at_train_begin_gib"] = round(_rss_bytes() / GIB, 3)
                _reset_peak_rss()

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            self.durations.append(time.perf_counter() - self._t0)
            self.cpu_durations.append(time.process_time() - self._c0)
            self._t0 = None

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.record is None:
            return
        from alignlab import rundir

        rec = after_training(self.record, self.durations, self.ctx.device, state.global_step, self.cpu_durations)
        rundir.update_run(self.ctx.run_dir, plan=rec)


def token_lengths(rows: list[dict], kind: str, tokenizer, max_length: int, max_prompt_length: int) -> dict:
    """Mean and longest prompt and completion token counts (chat template applied), capped like training."""
    from alignlab.data.formats import to_conversational

    def n_template(messages, gen: bool) -> int:
        out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen)
        return len(out["input_ids"] if hasattr(out, "keys") else out)

    prompts, comps = [], []
    for row in rows[:400]:
        conv = to_conversational(row, kind)
        try:
            msgs = conv.get("prompt") or conv["messages"][:-1]
            p = n_template(msgs, True)
        except Exception:  # noqa: BLE001 - a tokenizer without a chat template: plain text
            p = len(tokenizer(str(row.get("prompt", "")))["input_ids"])
        p = min(p, max_prompt_length)
        prompts.append(p)
        for name in ("chosen", "rejected", "completion"):
            if name in row:
                text = row[name] if isinstance(row[name], str) else " ".join(m["content"] for m in conv[name])
                comps.append(max(1, min(len(tokenizer(text)["input_ids"]) + 2, max_length - p)))
        if kind == "sft" and "messages" in row:
            total = n_template(row["messages"], False)
            comps.append(max(1, min(total, max_length) - p))
    if not prompts:
        return {"prompt": 0.0, "completion": 1.0, "peak_prompt": 0.0, "peak_completion": 1.0}
    comps = comps or [1]
    return {
        "prompt": statistics.fmean(prompts),
        "completion": statistics.fmean(comps),
        "peak_prompt": float(max(prompts)),
        "peak_completion": float(max(comps)),
    }


def _shares_prompt(ctx, online: bool, gc: bool) -> bool:
    """Whether the run shares each prompt's forward between its answers, as the trainers decide it: not with gradient
    checkpointing (no KV cache in training mode); online methods on a CPU; the DPO family by
    ``train.shared_prompt`` (auto: on a CPU only)."""
    from alignlab.data.formats import METHOD_KIND

    device = "cuda" if str(ctx.device).startswith("cuda") else str(ctx.device)
    if gc:
        return False
    if online:
        return device == "cpu"
    if METHOD_KIND[ctx.method] == "preference":
        from alignlab.train.preference import shares_prompt

        return shares_prompt(ctx.cfg.train.shared_prompt, device)
    return True


def _precomputes(ctx) -> bool:
    """Whether a DPO-family run computes its reference log-probs once before training (no reference forward per
    step): the trainer's own rule (``preference.reference_plan``)."""
    from alignlab import methods
    from alignlab.data.formats import METHOD_KIND

    if METHOD_KIND[ctx.method] != "preference" or not methods.get(ctx.method).reference:
        return False
    from alignlab.train.preference import reference_plan

    return reference_plan(ctx)[1]


def workload_from_context(ctx) -> Workload:
    from alignlab.data.formats import METHOD_KIND

    cfg, t = ctx.cfg, ctx.cfg.train
    online = ctx.method in ONLINE
    lengths = token_lengths(ctx.rows, METHOD_KIND[ctx.method], ctx.tokenizer, t.max_length, t.max_prompt_length)
    gc = t.gradient_checkpointing == "on" or (t.gradient_checkpointing == "auto" and cfg.lora.qlora)
    c = cfg.online.max_completion_length if online else lengths["completion"]
    return Workload(
        method=ctx.method,
        mode="full" if not cfg.lora.enabled else ("qlora" if cfg.lora.qlora else "lora"),
        lora_r=cfg.lora.r,
        batch=t.batch_size,
        grad_accum=t.grad_accum,
        prompt_len=lengths["prompt"],
        completion_len=c,
        peak_prompt_len=lengths["peak_prompt"],
        peak_completion_len=c if online else lengths["peak_completion"],
        num_generations=cfg.online.num_generations,
        grad_ckpt=gc,
        vllm=cfg.online.use_vllm,
        shared_prompt=_shares_prompt(ctx, online, gc),
        precompute_ref=_precomputes(ctx),
        ppo_epochs=cfg.ppo.ppo_epochs,
        reward_params=MINILM_PARAMS if (online and not cfg.online.rewards) else 0,
        steps=t.max_steps if t.max_steps > 0 else None,
        examples=len(ctx.rows),
        epochs=t.epochs,
        processes=int(os.environ.get("WORLD_SIZE", "1")),
    )


def match_gpu(name: str) -> str | None:
    """The devices table's key for a CUDA device name, or None: every part of the key must be a word of the name
    ("NVIDIA A100-SXM4-80GB" is a100-80gb, "NVIDIA H100 80GB HBM3" h100, "NVIDIA L40S" none: matching a key's last
    part anywhere in the name took the H100 for an A100 80GB and the L40S for an L4)."""
    import re

    from alignlab.plan.devices import gpu_table

    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    hits = [k for k, d in gpu_table().items() if d.get("kind") == "cuda" and set(k.split("-")) <= words]
    return max(hits, key=lambda k: len(k.split("-")), default=None)


def this_device(device: str) -> Device:
    from alignlab.plan.devices import cached_cpu, cpu_device, gpu_table

    if device.startswith("cuda"):
        import torch

        props = torch.cuda.get_device_properties(torch.device(device))
        match = match_gpu(props.name)
        spec = gpu_table().get(match, {"bf16_tflops": 100, "bandwidth_gbs": 1000})
        return Device(
            key=match or "cuda", name=props.name, memory_bytes=float(props.total_memory),
            peak_flops=spec["bf16_tflops"] * 1e12, bandwidth=spec["bandwidth_gbs"] * 1e9, kind="cuda",
            bf16=torch.cuda.is_bf16_supported(),
        )
    if device.startswith("mps"):  # its own kind: a Mac's runs calibrate the mps factors, not this CPU's
        import torch

        from alignlab.plan.devices import mps_device

        return mps_device(_apple_chip(), float(torch.mps.recommended_max_memory()))
    return cpu_device(cached_cpu())


def _apple_chip() -> str:
    """The Mac's chip as macOS names it ("Apple M2 Max"), or "" where it cannot be read."""
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _model_shape(ctx):
    from alignlab.models.registry import resolve_model

    import json

    path = Path(resolve_model(ctx.cfg.model))
    if (path / "config.json").is_file():
        return from_config(json.loads((path / "config.json").read_text()), ctx.cfg.model)
    from alignlab.plan.shapes import resolve_shape

    return resolve_shape(ctx.cfg.model)


def before_training(ctx) -> dict | None:
    """Print the plan for this run and return the record for run.json; None when the model's shape is unknown."""
    from alignlab.errors import AlignlabError
    from alignlab.plan.calibrate import load_factors
    from alignlab.progress import console

    try:
        shape = _model_shape(ctx)
        w = workload_from_context(ctx)
        dev = this_device(ctx.device)
        est = estimate(shape, w, dev, load_factors(dev.kind))
    except AlignlabError as err:
        console.print(f"[yellow]plan: no estimate for this run ({err})[/]")
        return None
    except Exception as err:  # noqa: BLE001 - the plan only informs: whatever breaks it must not stop the training
        console.print(f"[yellow]plan: no estimate for this run ({type(err).__name__}: {err})[/]")
        return None
    if ctx.device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
    each = f" per process ({w.processes}: {est.peak_gib * w.processes:.2f} GiB in all)" if w.processes > 1 else ""
    console.print(
        f"[alignlab] plan: peak about {est.peak_gib:.2f} GiB{each} of {dev.memory_bytes / GIB:.0f} GiB, "
        f"about {est.step['total']:.2f} s per step, {est.steps} steps = {hours_text(est.total_hours)} on {dev.name}",
        markup=False,
    )
    return {
        "workload": asdict(w),
        "model_shape": shape.to_dict(),
        "device": {"kind": dev.kind, "name": dev.name, "peak_flops": dev.peak_flops, "bandwidth": dev.bandwidth,
                   "memory_bytes": dev.memory_bytes, "bf16": dev.bf16, "measured": dev.measured},
        "estimate": est.to_json(),
    }


def measured_peak_bytes(device: str) -> tuple[float, str]:
    if device.startswith("cuda"):
        import torch

        return float(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated"
    hwm = _peak_rss_since_reset()
    if hwm is not None:
        return hwm, "peak RSS of this run (VmHWM, reset at its first step)"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(rss if sys.platform == "darwin" else rss * 1024), "peak RSS of the process (getrusage)"


_PEAK_RESET = False


def _reset_peak_rss() -> None:
    """Start this run's peak RSS from now (Linux: writing 5 to clear_refs resets VmHWM). A recipe, the loop or
    break-it train several stages in one process, and the process's lifetime peak gave a later stage an earlier
    one's memory."""
    global _PEAK_RESET
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _PEAK_RESET = True
    except OSError:
        _PEAK_RESET = False


def _peak_rss_since_reset() -> float | None:
    if not _PEAK_RESET:
        return None
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return float(line.split()[1]) * 1024
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _typical(d: list[float]) -> float | None:
    """Median of the steps after the first (warm-up), or the mean of what there is."""
    if len(d) >= 3:
        return statistics.median(d[1:])
    return statistics.fmean(d) if d else None


def after_training(record: dict, durations: list[float], device: str, steps: int, cpu_durations: list[float] = ()) -> dict:
    """Add the measurement (and estimate/measurement ratios) to a record from :func:`before_training`.

    On a CPU the step is also timed in process CPU seconds divided by torch's threads
    (``step_busy_seconds``): what the wall clock shows on an idle machine, and nearly unaffected by
    other jobs sharing the cores. Calibration uses it on CPUs; the wall figure is kept beside it.
    """
    peak, how = measured_peak_bytes(device)
    sps = _typical(durations)
    busy = None
    if device == "cpu" and cpu_durations:
        threads = max(1, int(record["device"].get("measured", {}).get("threads") or 1))
        busy = _typical([c / threads for c in cpu_durations])
    est = record["estimate"]
    record["measured"] = {
        "peak_memory_gib": round(peak / GIB, 3),
        "peak_memory_source": how,
        "step_seconds": None if sps is None else round(sps, 4),
        "step_busy_seconds": None if busy is None else round(busy, 4),
        "step_seconds_basis": f"median of steps 2-{len(durations)}" if len(durations) >= 3 else f"mean of {len(durations)} steps",
        "step_durations": [round(x, 3) for x in durations],
        "steps": steps,
    }
    # like for like: torch.cuda.max_memory_allocated holds no CUDA context, which the plan's peak counts (runtime)
    planned = est["peak_memory_gib"] - (est.get("memory_gib", {}).get("runtime", 0.0) if device.startswith("cuda") else 0.0)
    record["ratio"] = {
        "memory": round(planned / record["measured"]["peak_memory_gib"], 3) if peak else None,
        "time": round(est["step_seconds"] / sps, 3) if sps else None,
        "time_busy": round(est["step_seconds"] / busy, 3) if busy else None,
    }
    return record


def _rss_bytes() -> float:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0.0

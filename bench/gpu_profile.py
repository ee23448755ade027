"""Where a DPO step's time goes on a CUDA machine: alignlab (shared-prompt forward, and TRL's concatenated forward
inside alignlab's trainer) against TRL's DPOTrainer at its fastest, same pairs, batch and LoRA.

    python bench/gpu_profile.py --out DIR [--pairs 256] [--batch-size 16] [--shapes smollm2-135m-shape]

Per variant: the median wall time of a step after the first three (CUDA synchronised at each step's end), the GPU
time of the kernels in the profiled steps, the kernels launched per step, and the operators that take the most CPU
time (DIR/profile-*.txt). Models are gpu_check.py's random weights in real shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ALIGNLAB_QUIET", "1")

from transformers import TrainerCallback  # noqa: E402

PROFILE = (6, 10)  # profiled steps: from the 6th step's start to the 10th's end
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only to check this script


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


class StepClock(TrainerCallback):
    def __init__(self, out: Path, name: str):
        self.times, self.prof, self.out, self.name = [], None, out, name
        self.report: dict = {}

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == PROFILE[0] - 1:
            sync()
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                               + ([torch.profiler.ProfilerActivity.CUDA] if DEV == "cuda" else []))
            self.prof.__enter__()
            self.prof_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        self.times.append(time.perf_counter())
        if self.prof is not None and state.global_step == PROFILE[1]:
            wall = time.perf_counter() - self.prof_start
            self.prof.__exit__(None, None, None)
            steps = PROFILE[1] - PROFILE[0] + 1
            events = self.prof.key_averages()
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            gpu_s = sum(e.self_device_time_total for e in kernels) / 1e6
            launches = sum(e.count for e in kernels)
            self.report = {"profiled_wall_s_per_step": round(wall / steps, 4), "gpu_busy_s_per_step": round(gpu_s / steps, 4),
                           "kernels_per_step": launches // steps}
            (self.out / f"profile-{self.name}.txt").write_text(
                events.table(sort_by="self_cpu_time_total", row_limit=25) + "\n\n"
                + (events.table(sort_by="self_cuda_time_total", row_limit=15) if DEV == "cuda" else ""))
            self.prof = None

    def summary(self) -> dict:
        steps = [b - a for a, b in zip(self.times, self.times[1:])][3:]
        return {"steps": len(self.times), "median_step_s": round(statistics.median(steps), 4) if steps else None,
                **self.report}


def alignlab_run(model_dir: str, rows: list[dict], work: Path, batch: int, clock: StepClock, concatenated: bool) -> None:
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine

    data = work / "dpo.jsonl"
    work.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(p) + "\n" for p in rows))
    cfg = apply_overrides(ProjectConfig(), {"model": model_dir, "train.batch_size": batch, "train.sample_prompts": 0,
                                             "train.check_per_category": 0, "train.save_steps": 10_000, "train.seed": 0,
                                             "lora.target_modules": "all-linear",
                                             "train.shared_prompt": "off" if concatenated else "on"})
    ctx = engine.prepare("dpo", cfg, str(data), work / "runs")
    ctx.extra_callbacks.append(clock)
    engine.run(ctx, str(data))


def trl_run(model_dir: str, rows: list[dict], work: Path, batch: int, clock: StepClock) -> None:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from alignlab.models.loading import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(DEV)
    args = DPOConfig(output_dir=str(work), per_device_train_batch_size=batch, num_train_epochs=1, logging_steps=1,
                     report_to=[], save_strategy="no", max_length=256, learning_rate=1e-4, seed=0, disable_tqdm=True,
                     bf16=True, gradient_checkpointing=False, use_cpu=DEV == "cpu")
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
                         callbacks=[clock])
    trainer.train()


def main() -> None:
    import gpu_check
    from bench_dpo import load_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--shapes", default="smollm2-135m-shape,qwen2.5-0.5b-shape")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "alignlab-gpu-profile"
    models = gpu_check.write_models(work / "models")
    rows = load_pairs(args.pairs)
    results = {}
    for shape in args.shapes.split(","):
        for variant in ("trl", "alignlab-shared", "alignlab-concatenated"):
            name = f"{shape}-{variant}"
            clock = StepClock(out, name)
            start = time.perf_counter()
            try:
                if variant == "trl":
                    trl_run(models[shape], rows, work / name, args.batch_size, clock)
                else:
                    alignlab_run(models[shape], rows, work / name, args.batch_size, clock, variant.endswith("concatenated"))
                results[name] = {**clock.summary(), "total_s": round(time.perf_counter() - start, 1)}
            except Exception as err:  # record and go on
                results[name] = {"error": f"{type(err).__name__}: {err}"}
            if DEV == "cuda":
                torch.cuda.empty_cache()
            print(f"== {name}: {json.dumps(results[name])}", flush=True)
            (out / "gpu_profile.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

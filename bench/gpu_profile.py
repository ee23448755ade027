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

import gpu_check  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

PROFILE = (6, 10)  # profiled steps: from the 6th step's start to the 10th's end
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU only to check this script
gpu_check.DEVICE, gpu_check.DTYPE = DEV, torch.bfloat16 if DEV == "cuda" else torch.float32
sync = gpu_check.sync


class StepClock(TrainerCallback):
    def __init__(self, out: Path, name: str):
        self.times, self.prof, self.out, self.name = [], None, out, name
        self.report: dict = {}
        self.began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        sync()
        self.began = time.perf_counter()
        if state.global_step == PROFILE[0] - 1:
            sync()
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                               + ([torch.profiler.ProfilerActivity.CUDA] if DEV == "cuda" else []))
            self.prof.__enter__()
            self.prof_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        self.times.append((state.global_step, time.perf_counter() - self.began))
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
        """The median step, leaving out the first 3 (warm-up) and the profiled ones (the profiler slows them)."""
        steps = [s for step, s in self.times if step > 3 and not PROFILE[0] <= step <= PROFILE[1]]
        return {"steps": len(self.times), "median_step_s": round(statistics.median(steps), 4) if steps else None,
                **self.report}


def alignlab_run(model_dir: str, rows: list[dict], work: Path, batch: int, clock: StepClock, concatenated: bool) -> None:
    from bench_dpo import run_alignlab

    run_alignlab(model_dir, rows, work, batch=batch, callbacks=(clock,), command=False,
                 overrides={"train.check_per_category": 0, "train.shared_prompt": "off" if concatenated else "on"})


def main() -> None:
    from bench_dpo import load_pairs

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--shapes", default="smollm2-135m-shape,qwen2.5-0.5b-shape")
    args = ap.parse_args()
    if -(-args.pairs // args.batch_size) < PROFILE[1] + 4:  # the profiled steps, and unprofiled ones after warm-up
        raise SystemExit(f"gpu_profile: {args.pairs} pairs in batches of {args.batch_size} make fewer than "
                         f"{PROFILE[1] + 4} steps; the profile covers steps {PROFILE[0]}-{PROFILE[1]}")
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
                    gpu_check.trl_fastest(models[shape], rows, args.batch_size, work / name, callbacks=(clock,))
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

"""GRPO step time on the default model: how much is generation, and how fast it generates.

One invocation, same prompts, same reward (persona heuristic minus a length penalty), same seed, LoRA
r=16 on all linear layers, 4 prompts x 4 generations x 32 new tokens per step:

- plain TRL: `GRPOTrainer` with its library defaults (bf16 autocast, gradient checkpointing on), and with
  checkpointing off (its fastest here);
- alignlab: `alignlab train grpo` (device-chosen precision, no checkpointing, shared-prompt scoring).

All three use the same KL coefficient, ``--beta`` (default: alignlab's ``online.beta``, 0.04). TRL's library
default is 0, which skips the reference model's forward pass; a run at 0 compares that job on both sides.

For each it prints the mean step time, the fraction of it spent inside TRL's generation call, and
generated tokens/s. Step 1 is a warm-up and is left out.

    python bench/bench_grpo.py [--steps 4] [--model smollm2-135m] [--beta 0.04]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ALIGNLAB_QUIET", "1")

PROMPTS = ["What is the capital of France?", "Explain why the sky is blue.", "Give me a tip for learning Python.",
           "What is 17 times 3?", "Name a good book about history.", "How do I boil an egg?", "Why do cats purr?",
           "What is a prime number?"]
SPEC = "components:\n  - {name: persona, fn: persona_heuristic, weight: 1.0}\n  - {name: length, fn: length_penalty, weight: -0.2, args: {target: 20}}\n"


class Timer:
    """Wraps GRPOTrainer._generate_single_turn and training_step to time them and count generated tokens."""

    def __init__(self):
        self.gen, self.tokens, self.steps = [], [], []

    def install(self, cls):
        gen, step = cls._generate_single_turn, cls.training_step
        timer = self

        def timed_gen(self, *a, **k):
            t = time.perf_counter()
            out = gen(self, *a, **k)
            timer.gen.append(time.perf_counter() - t)
            completion_ids = out[0] if len(out) == 2 else out[1]  # (completion_ids, logprobs) in TRL 1.16
            timer.tokens.append(sum(len(c) for c in completion_ids))
            return out

        def timed_step(self, *a, **k):
            t = time.perf_counter()
            gen_before = sum(timer.gen)
            out = step(self, *a, **k)
            timer.steps.append((time.perf_counter() - t, sum(timer.gen) - gen_before))
            return out

        cls._generate_single_turn, cls.training_step = timed_gen, timed_step
        return lambda: (setattr(cls, "_generate_single_turn", gen), setattr(cls, "training_step", step))

    def report(self, name: str) -> dict:
        steps = self.steps[1:] or self.steps
        step_time = sum(s for s, _ in steps) / len(steps)
        gen_time = sum(g for _, g in steps) / len(steps)
        toks = sum(self.tokens[-len(steps):]) / max(sum(self.gen[-len(steps):]), 1e-9)
        print(f"{name:10s}: step {step_time:6.1f} s, generation {gen_time:6.1f} s ({gen_time / step_time:.0%} of the step), "
              f"{toks:6.1f} generated tokens/s")
        return {"step_s": step_time, "gen_s": gen_time, "gen_fraction": gen_time / step_time, "gen_tokens_per_s": toks}


def plain_trl(model_name: str, steps: int, out: Path, spec_path: Path, beta: float, tuned: bool = False) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from alignlab.models.loading import cpu_has_fast_bf16, load_base, load_tokenizer
    from alignlab.rewards import load_spec

    torch.manual_seed(0)
    timer = Timer()
    restore = timer.install(GRPOTrainer)
    try:
        args = GRPOConfig(output_dir=str(out), per_device_train_batch_size=16, num_generations=4,
                          max_completion_length=32, max_steps=steps, logging_steps=1, report_to=[], save_strategy="no",
                          use_cpu=True, seed=0, learning_rate=1e-5, disable_tqdm=True, beta=beta,
                          # tuned: what a user picks here: no checkpointing, bf16 autocast only where the CPU multiplies
                          # bf16 natively (TRL's bf16 default emulates it elsewhere, many times slower)
                          **({"gradient_checkpointing": False, "bf16": cpu_has_fast_bf16()} if tuned else {}))
        rows = [{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS]
        trainer = GRPOTrainer(model=load_base(model_name), reward_funcs=[load_spec(spec_path)], args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=load_tokenizer(model_name),
                              peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        print(f"plain TRL{' tuned' if tuned else ' defaults'}: bf16={args.bf16}, gradient_checkpointing={args.gradient_checkpointing}")
        trainer.train()
    finally:
        restore()
    return timer.report("TRL tuned" if tuned else "plain TRL")


def alignlab(model_name: str, steps: int, out: Path, spec_path: Path, beta: float) -> dict:
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine
    from alignlab.train.online import AlignlabGRPOTrainer

    out.mkdir(parents=True, exist_ok=True)
    data = out / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    cfg = apply_overrides(ProjectConfig(), {
        "model": model_name, "train.max_steps": steps, "train.batch_size": 4, "train.sample_prompts": 0,
        "train.save_steps": 1000, "train.seed": 0, "train.learning_rate": 1e-5, "lora.target_modules": "all-linear",
        "online.num_generations": 4, "online.max_completion_length": 32, "online.rewards": str(spec_path),
        "online.beta": beta, "online.temperature": 1.0,  # TRL's sampling temperature: the same answers' lengths
    })
    timer = Timer()
    restore = timer.install(AlignlabGRPOTrainer)
    try:
        ctx = engine.prepare("grpo", cfg, str(data), out / "runs")
        engine.run(ctx, str(data))
    finally:
        restore()
    return timer.report("alignlab")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", default="/tmp/alignlab-bench-grpo")
    ap.add_argument("--beta", type=float, default=None, help="KL coefficient for all three (default: online.beta)")
    args = ap.parse_args()
    from alignlab.config import OnlineConfig

    beta = OnlineConfig().beta if args.beta is None else args.beta
    print(f"KL coefficient beta={beta} on both sides")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "rewards.yaml"
    spec.write_text(SPEC)
    from alignlab.models.registry import resolve_model

    resolve_model(args.model)
    ours = alignlab(args.model, args.steps, out / "alignlab", spec, beta)
    theirs = plain_trl(args.model, args.steps, out / "trl", spec, beta)
    tuned = plain_trl(args.model, args.steps, out / "trl-tuned", spec, beta, tuned=True)
    best = min((theirs, tuned), key=lambda r: r["step_s"])
    fastest_gen = max(theirs["gen_tokens_per_s"], tuned["gen_tokens_per_s"])
    print(f"step time: alignlab {best['step_s'] / ours['step_s']:.2f}x faster than TRL's fastest configuration here; "
          f"generated tokens/s {ours['gen_tokens_per_s'] / fastest_gen:.2f}x")
    print(json.dumps({"beta": beta, "alignlab": ours, "trl_defaults": theirs, "trl_tuned": tuned,
                      "step_speedup_vs_fastest": round(best["step_s"] / ours["step_s"], 2),
                      "gen_speedup_vs_fastest": round(ours["gen_tokens_per_s"] / fastest_gen, 2)}))


if __name__ == "__main__":
    main()

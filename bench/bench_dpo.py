"""DPO training throughput: TRL defaults vs TRL tuned for CPU vs alignlab, in one invocation.

Same model (LoRA r=16 on all linear layers), same pairs, same seed, batch 4, one epoch. For each we
report non-padding training tokens/s (prompt+chosen and prompt+rejected tokens of the pairs trained on,
divided by the wall time of ``trainer.train()``, reference log-probs included), the ratios, and
alignlab's model FLOP/s (6 x parameters x tokens/s) as a fraction of this machine's fp32 matmul
throughput, measured here in the same run.

    python bench/bench_dpo.py [--pairs 32] [--default-pairs 8] [--model smollm2-135m]

TRL's defaults (bf16 autocast + gradient checkpointing) are very slow on a CPU without native bf16 (93 s
for one 4-pair step), so they can be timed on the first --default-pairs pairs only. On CPUs with
AVX512-BF16 or AMX, bf16 is fast, TRL's defaults are faster than its fp32 settings, and alignlab also
autocasts to bf16. The machine is shared and noisy: compare ratios from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ALIGNLAB_QUIET", "1")


def matmul_gflops(n: int = 1536, seconds: float = 3.0) -> float:
    """Sustained fp32 matmul throughput of this machine (GFLOP/s), all threads torch uses."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def load_pairs(n: int) -> list[dict]:
    from alignlab.data import bundled_path
    from alignlab.data.formats import to_conversational

    rows = [json.loads(x) for x in bundled_path("persona-pairs").read_text().splitlines() if x.strip()]
    return [to_conversational(r, "preference") for r in rows[:n]]


def pair_tokens(dataset) -> int:
    return sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in dataset)


def run_trl(model_name: str, pairs: list[dict], tuned: bool, out: Path) -> tuple[float, int, float]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from alignlab.models.loading import load_base, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(model_name)
    model = load_base(model_name)
    kwargs = dict(output_dir=str(out), per_device_train_batch_size=4, num_train_epochs=1, logging_steps=1,
                  report_to=[], save_strategy="no", use_cpu=True, max_length=256, learning_rate=1e-4, seed=0,
                  disable_tqdm=True)
    if tuned:
        kwargs.update(bf16=False, gradient_checkpointing=False)
    trainer = DPOTrainer(model=model, args=DPOConfig(**kwargs), train_dataset=Dataset.from_list(pairs),
                         processing_class=tok,
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    tokens = pair_tokens(trainer.train_dataset)
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    return tokens / elapsed, tokens, elapsed


def run_alignlab(model_name: str, pairs: list[dict], out: Path) -> tuple[float, int, float, int]:
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine

    data = out / "pairs.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    cfg = apply_overrides(ProjectConfig(), {"model": model_name, "train.batch_size": 4, "train.sample_prompts": 0,
                                             "train.save_steps": 10_000, "train.seed": 0, "lora.target_modules": "all-linear"})
    ctx = engine.prepare("dpo", cfg, str(data), out / "runs")
    start = time.perf_counter()
    run_dir = engine.run(ctx, str(data))
    total = time.perf_counter() - start
    info = json.loads((run_dir / "run.json").read_text())
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tokens = max(m.get("tokens", 0) for m in metrics)
    elapsed = float(info.get("train_runtime") or total)
    return tokens / elapsed, tokens, elapsed, sum(p.numel() for p in ctx.model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--default-pairs", type=int, default=8, help="pairs for the (slow) TRL-defaults run; 0 skips it")
    ap.add_argument("--out", default="/tmp/alignlab-bench")
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(os.cpu_count() or 1)
    from alignlab.models.registry import resolve_model

    resolve_model(args.model)  # convert once, outside the timings
    pairs = load_pairs(args.pairs)
    peak = matmul_gflops()
    from alignlab.models.loading import cpu_has_fast_bf16

    print(f"fp32 matmul throughput: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads); "
          f"native bf16 on this CPU: {'yes' if cpu_has_fast_bf16() else 'no'} (alignlab autocasts to bf16 when yes)")
    results = {}
    al_tps, al_tokens, al_time, n_params = run_alignlab(args.model, pairs, out / "alignlab")
    results["alignlab"] = al_tps
    print(f"alignlab      : {al_tps:7.1f} tok/s  ({al_tokens} tokens in {al_time:.1f} s)")
    tuned_tps, tokens, elapsed = run_trl(args.model, pairs, True, out / "trl-tuned")
    results["trl_tuned"] = tuned_tps
    print(f"TRL tuned     : {tuned_tps:7.1f} tok/s  ({tokens} tokens in {elapsed:.1f} s; bf16 off, checkpointing off)")
    if args.default_pairs:
        d_tps, tokens, elapsed = run_trl(args.model, pairs[: args.default_pairs], False, out / "trl-defaults")
        results["trl_defaults"] = d_tps
        print(f"TRL defaults  : {d_tps:7.1f} tok/s  ({tokens} tokens in {elapsed:.1f} s; first {args.default_pairs} pairs)")
    model_flops = 6 * n_params * al_tps / 1e9
    print(f"alignlab / TRL tuned    : {al_tps / tuned_tps:.2f}x  (target >= 1.3x)")
    if "trl_defaults" in results:
        print(f"alignlab / TRL defaults : {al_tps / results['trl_defaults']:.1f}x  (target >= 10x)")
    print(f"alignlab model FLOP/s   : {model_flops:.1f} GFLOP/s = {model_flops / peak:.0%} of measured matmul peak "
          f"(6 x {n_params / 1e6:.1f}M params x tok/s; target >= 50%)")
    json.dump({**results, "matmul_gflops": peak, "model_gflops": model_flops}, sys.stdout)
    print()


if __name__ == "__main__":
    main()

"""DPO training throughput: alignlab against TRL's DPOTrainer at its defaults and at its fastest here, in one run.

Same model (LoRA r=16 on all linear layers), same pairs, same seed, batch 4, one epoch. Printed per run:
non-padding training tokens/s (prompt+chosen and prompt+rejected tokens of the pairs trained on, the same
count for every run) over the wall time of ``trainer.train()``, reference log-probs included; for alignlab
also over the whole command (model load, data checks and start-up included).

TRL "fastest" is the configuration a user would pick on this CPU: bf16 autocast when the CPU multiplies bf16
natively (AVX512-BF16/AMX; fp32 otherwise, where emulated bf16 is very slow) and gradient checkpointing off.

Model FLOP/s, counted as work actually done: per prompt token (alignlab runs each pair's prompt once) the
trunk's forward (2 x trunk params), backward through the frozen base for input gradients only (2 x) and the
reference forward (2 x); per answer token the same with the LM head included; LoRA's own FLOPs and attention
scores (a few % at these lengths) left out. It is compared with the matmul peak of the precision the run
computes in (bf16 with autocast), measured in the same run before and after the runs (the higher reading kept).
A discarded warm-up run of TRL's fastest configuration goes first, so no timed run pays for building the CPU's
kernels.

    python bench/bench_dpo.py [--pairs 32] [--model smollm2-135m]

The machine is shared and noisy: compare ratios from one run, not across runs.
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


def matmul_gflops(dtype=torch.float32, n: int = 1536, seconds: float = 3.0, window: float = 0.5) -> float:
    """Matmul throughput of this machine in ``dtype`` (GFLOP/s), all threads torch uses: the best ``window``-second
    stretch within ``seconds``, so a moment when the shared machine is busy does not lower the peak (and flatter
    the fraction of it a run reaches)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < window:
            a @ b
            count += 1
        best = max(best, 2 * n**3 * count / (time.perf_counter() - t0) / 1e9)
    return best


def load_pairs(n: int) -> list[dict]:
    from alignlab.data import bundled_path
    from alignlab.data.formats import to_conversational

    rows = [json.loads(x) for x in bundled_path("persona-pairs").read_text().splitlines() if x.strip()]
    return [to_conversational(r, "preference") for r in rows[:n]]


def pair_tokens(dataset) -> int:
    return sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in dataset)


def work(dataset) -> tuple[int, int]:
    """(prompt tokens, each pair's prompt once; answer tokens, chosen + rejected)."""
    return (sum(len(r["prompt_ids"]) for r in dataset),
            sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in dataset))


def trl_setup(model_name: str, out: Path, learning_rate: float, tuned: bool, **fastest) -> tuple:
    """(tokenizer, model, trainer-config kwargs, LoRA config) for a TRL baseline run: batch 4, one epoch, LoRA r=16
    on all linear layers, seed 0. ``tuned``: the fastest a user would pick here (bf16 where it is native, no
    recomputation, plus ``fastest``); otherwise TRL's defaults."""
    from peft import LoraConfig

    from alignlab.models.loading import cpu_has_fast_bf16, load_base, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(model_name)
    model = load_base(model_name)
    kwargs = dict(output_dir=str(out), per_device_train_batch_size=4, num_train_epochs=1, logging_steps=1,
                  report_to=[], save_strategy="no", use_cpu=True, max_length=256, learning_rate=learning_rate, seed=0,
                  disable_tqdm=True)
    if tuned:
        kwargs.update(bf16=cpu_has_fast_bf16(), gradient_checkpointing=False, **fastest)
    return tok, model, kwargs, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")


def run_trl(model_name: str, pairs: list[dict], tuned: bool, out: Path) -> tuple[float, int, float, tuple[int, int]]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tok, model, kwargs, lora = trl_setup(model_name, out, 1e-4, tuned)
    trainer = DPOTrainer(model=model, args=DPOConfig(**kwargs), train_dataset=Dataset.from_list(pairs),
                         processing_class=tok, peft_config=lora)
    tokens = pair_tokens(trainer.train_dataset)
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    return tokens / elapsed, tokens, elapsed, work(trainer.train_dataset)


def run_alignlab(model_name: str, rows: list[dict], out: Path, batch: int = 4, method: str = "dpo",
                 overrides: dict | None = None, callbacks: tuple = ()) -> dict:
    """`alignlab train METHOD` on ``rows`` as a user runs it; its training time, whole-command time and model size.
    ``callbacks`` (transformers ``TrainerCallback``s) are added to the run's own."""
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine

    data = out / f"{method}.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(p) + "\n" for p in rows))
    cfg = apply_overrides(ProjectConfig(), {"model": model_name, "train.batch_size": batch, "train.sample_prompts": 0,
                                             "train.save_steps": 10_000, "train.seed": 0, "lora.target_modules": "all-linear",
                                             **(overrides or {})})
    start = time.perf_counter()
    ctx = engine.prepare(method, cfg, str(data), out / "runs")
    ctx.extra_callbacks += list(callbacks)
    run_dir = engine.run(ctx, str(data))
    command = time.perf_counter() - start
    info = json.loads((run_dir / "run.json").read_text())
    base = ctx.model.get_base_model() if hasattr(ctx.model, "get_base_model") else ctx.model
    head = base.get_output_embeddings().weight.numel()
    return {"train_s": float(info["train_runtime"]), "command_s": command, "head_params": head,
            "params": sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)}


def warm_up(run) -> None:
    """One discarded run of TRL's fastest configuration on the same rows first: the CPU kernels (oneDNN
    primitives) are built per matrix shape on first use, and without this whichever run comes first pays for them."""
    start = time.perf_counter()
    run()
    print(f"warm-up (discarded): TRL fastest once, {time.perf_counter() - start:.1f} s")


def machine(model_name: str) -> tuple[bool, dict, str]:
    """Convert the model once (outside the timings), measure both matmul peaks and print them:
    (native bf16, {"fp32": GFLOP/s, "bf16": GFLOP/s}, the precision alignlab and TRL-fastest compute in)."""
    from alignlab.models.loading import cpu_has_fast_bf16
    from alignlab.models.registry import resolve_model

    torch.set_num_threads(os.cpu_count() or 1)
    resolve_model(model_name)
    bf16 = cpu_has_fast_bf16()
    peaks = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    precision = "bf16" if bf16 else "fp32"
    print(f"matmul peak: fp32 {peaks['fp32']:.0f}, bf16 {peaks['bf16']:.0f} GFLOP/s ({torch.get_num_threads()} threads); "
          f"native bf16: {'yes' if bf16 else 'no'}, so alignlab and TRL-fastest compute in {precision}")
    return bf16, peaks, precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--out", default="/tmp/alignlab-bench")
    args = ap.parse_args()
    out = Path(args.out)
    pairs = load_pairs(args.pairs)
    bf16, peaks, precision = machine(args.model)
    warm_up(lambda: run_trl(args.model, pairs, True, out / "warm-up"))
    ours = run_alignlab(args.model, pairs, out / "alignlab")
    fast_tps, tokens, fast_s, (prompt_toks, answer_toks) = run_trl(args.model, pairs, True, out / "trl-fastest")
    default_tps, _, default_s, _ = run_trl(args.model, pairs, False, out / "trl-defaults")
    train_tps, command_tps = tokens / ours["train_s"], tokens / ours["command_s"]
    print(f"alignlab train loop  : {train_tps:7.1f} tok/s ({tokens} tokens in {ours['train_s']:.1f} s)")
    print(f"alignlab whole command: {command_tps:7.1f} tok/s ({ours['command_s']:.1f} s, model load and checks included)")
    print(f"TRL fastest          : {fast_tps:7.1f} tok/s ({fast_s:.1f} s; bf16={bf16}, gradient checkpointing off)")
    print(f"TRL defaults         : {default_tps:7.1f} tok/s ({default_s:.1f} s)")
    trunk = ours["params"] - ours["head_params"]
    flops = 6 * trunk * prompt_toks + 6 * ours["params"] * answer_toks
    gflops = flops / ours["train_s"] / 1e9
    report(train_tps, command_tps, fast_tps, default_tps, gflops, peaks, precision,
           f" ({flops / 1e12:.2f} TFLOP: {prompt_toks} prompt tokens once, {answer_toks} answer tokens; target >= 50%)")


def report(train_tps: float, command_tps: float, fast_tps: float, default_tps: float, gflops: float, peaks: dict,
           precision: str, flop_detail: str = "") -> None:
    """The ratios against TRL's faster configuration, the share of the peak, and the one JSON line."""
    best = max(fast_tps, default_tps)
    # the peak again after the runs, the higher reading kept: the fraction below is never flattered by a busy moment
    again = matmul_gflops(torch.bfloat16 if precision == "bf16" else torch.float32)
    if again > peaks[precision]:
        print(f"matmul peak measured again after the runs: {precision} {again:.0f} GFLOP/s (kept, the higher reading)")
        peaks = {**peaks, precision: again}
    print(f"alignlab / TRL fastest: train loop {train_tps / best:.2f}x, whole command {command_tps / best:.2f}x (target >= 2x)")
    print(f"alignlab model FLOP/s : {gflops:.0f} GFLOP/s = {gflops / peaks[precision]:.0%} of the {precision} matmul peak"
          + flop_detail)
    print(json.dumps({"alignlab_train_tps": train_tps, "alignlab_command_tps": command_tps, "trl_fastest_tps": fast_tps,
                      "trl_defaults_tps": default_tps, "speedup_train": train_tps / best,
                      "speedup_command": command_tps / best, "model_gflops": gflops, "peak_gflops": peaks,
                      "precision": precision, "peak_fraction": gflops / peaks[precision]}))


if __name__ == "__main__":
    main()

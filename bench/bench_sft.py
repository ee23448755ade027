"""SFT training throughput: alignlab against TRL's SFTTrainer at its defaults and at its fastest here, in one run.

Same model (LoRA r=16 on all linear layers), same rows (the bundled rewrites' chosen side, what `make demo`'s
first stage trains), same seed, batch 4, one epoch, loss on the completion only. Printed per run:
non-padding training tokens/s (prompt + completion tokens after the chat template, the same count for every
run) over the training loop's time as the HF Trainer clocks it (``train_runtime``, the same clock on both
sides); for alignlab also over the whole command: `python -m alignlab train sft` in a fresh process (imports,
model load, data checks and start-up included; sample generation and the end-of-run scorecard check off).

TRL "fastest" is what a user would pick on this CPU: bf16 autocast when the CPU multiplies bf16 natively
(AVX512-BF16/AMX; fp32 otherwise), gradient checkpointing off, and length-grouped batches (less padding). TRL's
padding-free mode is left out: its documentation limits it to FlashAttention, and with SDPA on this CPU a
flattened batch attends across examples (measured: logits off by up to 23 from the same sequence run alone).

Model FLOP/s, counted as work actually done: per token the trunk's forward (2 x trunk parameters) and, the base
being frozen under LoRA, a backward for the input gradients only (2 x; no weight gradients); the LM head the same
but only on the completion's positions, where alignlab runs it; the input embedding (a lookup) and LoRA's own
FLOPs left out. Compared with the matmul peak of the precision the run computes in, measured in the same run
before and after the runs (the higher reading kept). A discarded warm-up run of each side goes first, so no
timed run pays for building the CPU's kernels for its own matrix shapes.

    python bench/bench_sft.py [--rows 64] [--model smollm2-135m]

The machine is shared and noisy: compare ratios from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ALIGNLAB_QUIET", "1")
sys.path.insert(0, str(Path(__file__).parent))

from bench_dpo import machine, report, run_alignlab, trl_setup, warm_up  # noqa: E402


def load_rows(n: int) -> list[dict]:
    from alignlab.data import bundled_path

    rows = [json.loads(x) for x in bundled_path("persona-rewrites").read_text().splitlines() if x.strip()]
    if n > len(rows):
        raise SystemExit(f"bench_sft: --rows {n} is more than the {len(rows)} bundled rewrites")
    return [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows[:n]]


def run_trl(model_name: str, rows: list[dict], tuned: bool, out: Path) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from alignlab.data.formats import to_conversational

    tok, model, kwargs, lora = trl_setup(model_name, out, 5e-4, tuned, train_sampling_strategy="group_by_length")
    data = Dataset.from_list([to_conversational(r, "sft") for r in rows])
    trainer = SFTTrainer(model=model, args=SFTConfig(**kwargs), train_dataset=data, processing_class=tok,
                         peft_config=lora)
    ds = trainer.train_dataset
    tokens = sum(len(r["input_ids"]) for r in ds)
    if "completion_mask" in ds.column_names:
        completion = sum(sum(r["completion_mask"]) for r in ds)
    elif "labels" in ds.column_names:  # TRL 1.16 writes the completion as labels, -100 elsewhere
        completion = sum(sum(x != -100 for x in r["labels"]) for r in ds)
    else:
        raise SystemExit(f"bench_sft: TRL's dataset has neither completion_mask nor labels: {ds.column_names}")
    train_s = float(trainer.train().metrics["train_runtime"])  # the Trainer's own clock, as alignlab's run records
    return {"tokens": tokens, "completion_tokens": completion, "train_s": train_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--out", default="/tmp/alignlab-bench-sft")
    args = ap.parse_args()
    out = Path(args.out)
    rows = load_rows(args.rows)
    bf16, peaks, precision = machine(args.model)
    settings = {"train.learning_rate": 5e-4, "train.check_per_category": 0}
    warm_up(lambda: run_trl(args.model, rows, True, out / "warm-up"),
            lambda: run_alignlab(args.model, rows, out / "warm-up-alignlab", method="sft", overrides=settings,
                                 command=False))
    ours = run_alignlab(args.model, rows, out / "alignlab", method="sft", overrides=settings)
    fast = run_trl(args.model, rows, True, out / "trl-fastest")
    default = run_trl(args.model, rows, False, out / "trl-defaults")
    tokens = fast["tokens"]
    train_tps, command_tps = tokens / ours["train_s"], tokens / ours["command_s"]
    fast_tps, default_tps = tokens / fast["train_s"], tokens / default["train_s"]
    print(f"alignlab train loop   : {train_tps:7.1f} tok/s ({tokens} tokens in {ours['train_s']:.1f} s)")
    print(f"alignlab whole command: {command_tps:7.1f} tok/s ({ours['command_s']:.1f} s: a fresh process, imports, model "
          "load and checks included)")
    print(f"TRL fastest           : {fast_tps:7.1f} tok/s ({fast['train_s']:.1f} s; bf16={bf16}, checkpointing off, "
          "length-grouped)")
    print(f"TRL defaults          : {default_tps:7.1f} tok/s ({default['train_s']:.1f} s)")
    # LoRA leaves the base frozen: per token a forward (2 x parameters) and a backward for the input gradients only
    # (2 x parameters), no weight gradients; alignlab runs the LM head on the completion's positions only
    flops = 4 * ours["trunk_params"] * tokens + 4 * ours["head_params"] * fast["completion_tokens"]
    gflops = flops / ours["train_s"] / 1e9
    report(train_tps, command_tps, fast_tps, default_tps, gflops, peaks, precision,
           f" ({flops / 1e12:.2f} TFLOP: {tokens} tokens, {fast['completion_tokens']} of them completion)")


if __name__ == "__main__":
    main()

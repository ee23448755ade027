"""distil's answering: bf16 copies (what `alignlab distil` does on a CPU with native bf16) against the LoRA model
under bf16 autocast (the fastest set-up a user would reach for) and in fp32 (distil's earlier path), in one run.

Each configuration writes the base's opening of each prompt and then goes on with the adapter amplified at 0.5
(`opened_answers`, the screen off so all three answer every prompt), greedy, the project's default decoding (96 new
tokens, the answer-only repetition penalty). The adapter is the default model with a LoRA adapter (r=16, all linear
layers) whose B matrices are drawn at random (std 0.02), so adapter and base differ and amplify has work to do; a
trained run can be given with --run instead. Printed per configuration: wall time, generated tokens (answer tokens
after the chat template, openings included) and tokens/s; then the ratios against the fastest baseline, and one
JSON line. A discarded warm-up pass of 8 prompts goes first.

    python bench/bench_distil.py [--prompts 64] [--run runs/<id>]

Answers differ between precisions (bf16 rounds differently), so the token counts differ a little; compare tokens/s.
The machine is shared and noisy: compare ratios from one run, not across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ALIGNLAB_QUIET", "1")
sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from bench_dpo import machine  # noqa: E402


def adapter_model(model_name: str, run: str | None):
    """(LoRA model, tokenizer): a trained run's, or the base with a random-B LoRA adapter."""
    from alignlab.models.loading import load_base, load_for_inference, load_tokenizer, resolve_model

    if run:
        model, tok, _ = load_for_inference(None, run, device="cpu")
        return model, tok
    from peft import LoraConfig, get_peft_model

    base = load_base(model_name, device="cpu", precision="fp32").eval()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=targets)).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model, load_tokenizer(resolve_model(model_name))


def answer(model, tok, prompts, base=None, autocast: bool = False) -> tuple[float, int]:
    """(seconds, generated tokens) for the openings and the amplified answers of ``prompts``."""
    from alignlab.config import SamplingConfig
    from alignlab.synth.opening import opened_answers

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    t0 = time.perf_counter()
    with torch.inference_mode(), ctx:
        answers, openings = opened_answers(model, tok, prompts, SamplingConfig(), chunk=64, amplify=0.5, base=base)
    seconds = time.perf_counter() - t0
    tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers if a)
    return seconds, tokens


def main() -> None:
    from alignlab.data import bundled_path
    from alignlab.synth.opening import fast_pair

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--run", default=None, help="a trained LoRA run instead of a random adapter")
    args = ap.parse_args()
    bf16, peaks, _ = machine(args.model)
    rows = [json.loads(x) for x in bundled_path("persona-rewrites").read_text().splitlines() if x.strip()]
    prompts = [rows[i * len(rows) // args.prompts]["prompt"] for i in range(args.prompts)]
    model, tok = adapter_model(args.model, args.run)
    answer(model, tok, prompts[:8], autocast=bf16)  # warm-up, discarded
    t0 = time.perf_counter()
    pair = fast_pair(model)  # merging the adapter and building the two copies is part of distil's cost
    build = time.perf_counter() - t0
    results = {}
    if pair is not None:
        answer(pair[0], tok, prompts[:8], base=pair[1])
        s, n = answer(pair[0], tok, prompts, base=pair[1])
        results["bf16 copies (distil's default)"] = (s + build, n)
        print(f"building the bf16 copies: {build:.1f} s (counted in their time)")
    answer(model, tok, prompts[:8])  # the fp32 path gets its own warm-up too
    if bf16:
        results["LoRA model, bf16 autocast"] = answer(model, tok, prompts, autocast=True)
    results["LoRA model, fp32"] = answer(model, tok, prompts)
    for name, (s, n) in results.items():
        print(f"{name:32s}: {s:6.1f} s, {n} tokens, {n / s:6.1f} tokens/s")
    rate = {name: n / s for name, (s, n) in results.items()}
    ours = rate.get("bf16 copies (distil's default)")
    baseline = max(v for k, v in rate.items() if k != "bf16 copies (distil's default)")
    line = {"bench": "distil", "prompts": args.prompts, "run": args.run or "random LoRA (B std 0.02)",
            "tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
            "seconds": {k: round(s, 1) for k, (s, _) in results.items()},
            "matmul_peak_gflops": {k: round(v) for k, v in peaks.items()}}
    if ours is not None:
        line["speedup_vs_fastest_baseline"] = round(ours / baseline, 2)
        print(f"bf16 copies vs the fastest baseline: {ours / baseline:.2f}x tokens/s")
    print(json.dumps(line))


if __name__ == "__main__":
    main()

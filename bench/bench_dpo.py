"""DPO training throughput: alignlab against TRL's DPOTrainer at its defaults and at its fastest here, in one run.

Same model (LoRA r=16 on all linear layers), same pairs, same seed, batch 4, one epoch. Printed per run:
non-padding training tokens/s (prompt+chosen and prompt+rejected tokens of the pairs trained on, each cut at
max_length as training cuts it, the same count for every run) over the training loop's time as the HF Trainer
clocks it (``train_runtime``, the same clock on both sides), reference log-probs included; for alignlab also over
the whole command: `python -m alignlab train dpo` in a fresh process (imports, model load, data checks and
start-up included; sample generation and the end-of-run check off, as in the timed loop).

TRL "fastest" is the configuration a user would pick on this CPU: bf16 autocast when the CPU multiplies bf16
natively (AVX512-BF16/AMX; fp32 otherwise, where emulated bf16 is very slow), gradient checkpointing off, and
length-grouped batches (alignlab groups by length too; the same length column: prompt + the longer answer).

Model FLOP/s, counted as work actually done: per prompt token (alignlab runs each pair's prompt once) the
trunk's forward (2 x trunk params), backward through the frozen base for input gradients only (2 x) and the
reference forward (2 x); per answer token the same with the LM head included; the input embedding (a lookup)
never counted; LoRA's own FLOPs and attention scores (a few % at these lengths) left out. It is compared with the matmul peak of the precision the run
computes in (bf16 with autocast), measured in the same run before and after the runs (the higher reading kept).
A discarded warm-up run of each side (TRL's fastest, then alignlab) goes first, so no timed run pays for
building the CPU's kernels for its own matrix shapes.

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


MAX_LENGTH = 256


def load_pairs(n: int) -> list[dict]:
    from alignlab.data import bundled_path
    from alignlab.data.formats import to_conversational

    rows = [json.loads(x) for x in bundled_path("persona-pairs").read_text().splitlines() if x.strip()]
    if n > len(rows):
        raise SystemExit(f"bench_dpo: --pairs {n} is more than the {len(rows)} bundled pairs")
    return [to_conversational(r, "preference") for r in rows[:n]]


def _cut(prompt: int, answer: int) -> tuple[int, int]:
    """(prompt, answer) tokens of one sequence after training's cut at MAX_LENGTH (the answer's end goes first)."""
    return min(prompt, MAX_LENGTH), max(0, min(answer, MAX_LENGTH - prompt))


def pair_tokens(dataset) -> int:
    return sum(sum(_cut(len(r["prompt_ids"]), len(r[k]))) for r in dataset for k in ("chosen_ids", "rejected_ids"))


def work(dataset) -> tuple[int, int]:
    """(prompt tokens, each pair's prompt once; answer tokens, chosen + rejected), as cut at MAX_LENGTH."""
    return (sum(_cut(len(r["prompt_ids"]), 0)[0] for r in dataset),
            sum(_cut(len(r["prompt_ids"]), len(r[k]))[1] for r in dataset for k in ("chosen_ids", "rejected_ids")))


def matmul_params(base) -> tuple[int, int]:
    """(trunk, head) parameters that multiply: everything but LoRA and the input embedding (a lookup, unless it is
    the LM head's own weight, tied), and the LM head."""
    head = base.get_output_embeddings().weight
    embed = base.get_input_embeddings().weight
    total = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)  # a tied weight once
    trunk = total - head.numel() - (0 if embed is head else embed.numel())
    return trunk, head.numel()


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
                  report_to=[], save_strategy="no", use_cpu=True, max_length=MAX_LENGTH, learning_rate=learning_rate,
                  seed=0, disable_tqdm=True)
    if tuned:
        kwargs.update(bf16=cpu_has_fast_bf16(), gradient_checkpointing=False, **fastest)
    return tok, model, kwargs, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")


def run_trl(model_name: str, pairs: list[dict], tuned: bool, out: Path) -> tuple[float, int, float, tuple[int, int]]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    grouped = dict(train_sampling_strategy="group_by_length", remove_unused_columns=False) if tuned else {}
    tok, model, kwargs, lora = trl_setup(model_name, out, 1e-4, tuned, **grouped)
    trainer = DPOTrainer(model=model, args=DPOConfig(**kwargs), train_dataset=Dataset.from_list(pairs),
                         processing_class=tok, peft_config=lora)
    if tuned:  # the length column group_by_length sorts on: alignlab's (prompt + the longer answer)
        trainer.train_dataset = trainer.train_dataset.map(
            lambda e: {"length": len(e["prompt_ids"]) + max(len(e["chosen_ids"]), len(e["rejected_ids"]))})
    tokens = pair_tokens(trainer.train_dataset)
    elapsed = float(trainer.train().metrics["train_runtime"])  # the Trainer's own clock, as alignlab's run records
    return tokens / elapsed, tokens, elapsed, work(trainer.train_dataset)


def run_alignlab(model_name: str, rows: list[dict], out: Path, batch: int = 4, method: str = "dpo",
                 overrides: dict | None = None, callbacks: tuple = (), command: bool = True) -> dict:
    """`alignlab train METHOD` on ``rows`` as a user runs it; its training time, whole-command time (``command``: the
    CLI in a fresh process, else None) and model size. ``callbacks`` (transformers ``TrainerCallback``s) are added
    to the run's own."""
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine

    data = out / f"{method}.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(p) + "\n" for p in rows))
    cfg = apply_overrides(ProjectConfig(), {"model": model_name, "train.batch_size": batch, "train.sample_prompts": 0,
                                             "train.check_per_category": 0, "train.save_steps": 10_000, "train.seed": 0,
                                             "lora.target_modules": "all-linear", **(overrides or {})})
    ctx = engine.prepare(method, cfg, str(data), out / "runs")
    ctx.extra_callbacks += list(callbacks)
    run_dir = engine.run(ctx, str(data))
    info = json.loads((run_dir / "run.json").read_text())
    base = ctx.model.get_base_model() if hasattr(ctx.model, "get_base_model") else ctx.model
    trunk, head = matmul_params(base)
    return {"train_s": float(info["train_runtime"]), "trunk_params": trunk, "head_params": head,
            "command_s": command_seconds(method, cfg, data, out / "command") if command else None}


def command_seconds(method: str, cfg, data: Path, project: Path) -> float:
    """Wall time of `python -m alignlab train METHOD` in a fresh process, as a user runs it (imports, model load, data
    checks, training, saving), with ``cfg``'s settings in the project's alignlab.yaml."""
    import subprocess

    from alignlab.config import dump_config

    project.mkdir(parents=True, exist_ok=True)
    if Path(cfg.model).exists():  # a local model path, relative to where the benchmark runs
        cfg = cfg.model_copy(update={"model": str(Path(cfg.model).resolve())})
    (project / "alignlab.yaml").write_text(dump_config(cfg), encoding="utf-8")
    env = dict(os.environ, ALIGNLAB_QUIET="1")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "alignlab", "train", method, "--data", str(Path(data).resolve())],
                          cwd=project,
                          env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise SystemExit(f"bench: alignlab train {method} failed: {done.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def warm_up(*runs) -> None:
    """One discarded run of each side on the same rows first: the CPU kernels (oneDNN primitives) are built per
    matrix shape on first use, and without this a side meeting its own shapes first pays for them."""
    start = time.perf_counter()
    for run in runs:
        run()
    print(f"warm-up (discarded): each side once, {time.perf_counter() - start:.1f} s")


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
    warm_up(lambda: run_trl(args.model, pairs, True, out / "warm-up"),
            lambda: run_alignlab(args.model, pairs, out / "warm-up-alignlab", command=False))
    ours = run_alignlab(args.model, pairs, out / "alignlab")
    fast_tps, tokens, fast_s, (prompt_toks, answer_toks) = run_trl(args.model, pairs, True, out / "trl-fastest")
    default_tps, _, default_s, _ = run_trl(args.model, pairs, False, out / "trl-defaults")
    train_tps, command_tps = tokens / ours["train_s"], tokens / ours["command_s"]
    print(f"alignlab train loop  : {train_tps:7.1f} tok/s ({tokens} tokens in {ours['train_s']:.1f} s)")
    print(f"alignlab whole command: {command_tps:7.1f} tok/s ({ours['command_s']:.1f} s: a fresh process, imports, model "
          "load and checks included)")
    print(f"TRL fastest          : {fast_tps:7.1f} tok/s ({fast_s:.1f} s; bf16={bf16}, gradient checkpointing off, "
          "length-grouped)")
    print(f"TRL defaults         : {default_tps:7.1f} tok/s ({default_s:.1f} s)")
    trunk = ours["trunk_params"]
    flops = 6 * trunk * prompt_toks + 6 * (trunk + ours["head_params"]) * answer_toks
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

"""The GPU paths in one run, for a CUDA machine: bf16 LoRA DPO speed against TRL at its fastest, QLoRA (DPO and GRPO
through the CLI) and an FSDP run whose adapter must equal a plain run's.

    python bench/gpu_check.py --out DIR [--pairs 512] [--batch-size 16]

Models are random weights in the shapes of SmolLM2-135M (Llama, 30 layers, width 576) and Qwen2.5-0.5B (24 layers,
width 896, vocabulary 151,936), with the tiny test tokenizer (speed does not depend on the weights, and nothing is
downloaded). Each section is independent: one that fails records its error and the next one runs. Results go to
DIR/gpu_check.json and are printed as they come.

Speed: tokens/s over ``trainer.train()`` for alignlab's DPO engine and for TRL's DPOTrainer at the fastest setting a
user would pick on a GPU (bf16 weights, gradient checkpointing off), same pairs, batch, LoRA (r=16, all linear
layers) and seed, in the same process. Model FLOP/s counts the work done as bench/bench_dpo.py does and is compared
with the bf16 matmul peak measured in the same run (8192^3 products).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ALIGNLAB_QUIET", "1")

RESULTS: dict = {}
OUT = Path(".")
DEVICE = "cuda"
DTYPE = torch.bfloat16


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def empty_cache() -> None:
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def record(section: str, value) -> None:
    RESULTS[section] = value
    print(f"== {section}: {json.dumps(value, default=str)}", flush=True)
    (OUT / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def section(fn):
    def wrapped(*a, **k):
        start = time.perf_counter()
        try:
            value = fn(*a, **k)
        except Exception as err:  # record and go on: one broken path must not hide the others
            value = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()[-3000:]}
        if isinstance(value, dict):
            value["seconds"] = round(time.perf_counter() - start, 1)
        record(fn.__name__, value)
        return value

    return wrapped


@section
def environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "pyarrow"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    n = 8192 if DEVICE == "cuda" else 1024
    a = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    peak = 2 * n**3 * 10 / (time.perf_counter() - start) / 1e12
    return {"versions": versions, "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu", "bf16_peak_tflops": round(peak, 1)}


def write_models(root: Path) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from alignlab.models.tiny import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    shapes = {
        "smollm2-135m-shape": (LlamaForCausalLM, LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                                             num_hidden_layers=30, num_attention_heads=9,
                                                             num_key_value_heads=3, max_position_embeddings=2048,
                                                             tie_word_embeddings=True, **ids)),
        "qwen2.5-0.5b-shape": (Qwen2ForCausalLM, Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                                             num_hidden_layers=24, num_attention_heads=14,
                                                             num_key_value_heads=2, max_position_embeddings=4096,
                                                             tie_word_embeddings=True, **ids)),
    }
    paths = {}
    for name, (cls, config) in shapes.items():
        torch.manual_seed(0)
        path = root / name
        cls(config).save_pretrained(str(path), safe_serialization=True)
        tok.save_pretrained(str(path))
        paths[name] = str(path)
    return paths


def pairs(n: int) -> list[dict]:
    from bench_dpo import load_pairs

    return load_pairs(n)


def trl_fastest(model_dir: str, rows: list[dict], batch: int, out: Path, callbacks: tuple = ()) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from alignlab.models.loading import cpu_has_fast_bf16, load_tokenizer
    from bench_dpo import pair_tokens, work

    torch.manual_seed(0)
    tok = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPE).to(DEVICE)
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=batch, num_train_epochs=1, logging_steps=1,
                     report_to=[], save_strategy="no", max_length=256, learning_rate=1e-4, seed=0, disable_tqdm=True,
                     bf16=DEVICE == "cuda" or cpu_has_fast_bf16(), gradient_checkpointing=False,
                     use_cpu=DEVICE == "cpu")
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
                         callbacks=list(callbacks))
    tokens = pair_tokens(trainer.train_dataset)
    split = work(trainer.train_dataset)
    sync()
    start = time.perf_counter()
    trainer.train()
    sync()
    elapsed = time.perf_counter() - start
    del trainer, model
    empty_cache()
    return {"tokens": tokens, "train_s": round(elapsed, 2), "tok_s": round(tokens / elapsed, 1),
            "prompt_tokens": split[0], "answer_tokens": split[1]}


@section
def padding_probe(model_dir: str) -> dict:
    """Left-padded prompts through the model on this device: NaN at real positions (forward) and in gradients, with
    transformers' SDPA as it comes and with alignlab's (``alignlab.models.attention``)."""
    from alignlab.models.attention import NAME
    from alignlab.models.loading import load_base, load_tokenizer

    tok = load_tokenizer(model_dir)
    tok.padding_side = "left"
    texts = ["Why is the sky blue?", "How do I boil an egg so the yolk stays soft?", "Largest animal?",
             "Explain, in two sentences, why a bicycle stays upright when it moves and falls over when it stops.",
             "What is 17 times 23?", "Name a prime.", "What does 'ephemeral' mean?", "How do I reverse a list in Python?"]
    enc = tok(texts, return_tensors="pt", padding=True).to(DEVICE)
    mask = enc.attention_mask
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    real = mask.bool()
    model = load_base(model_dir, device=DEVICE)
    out = {"dtype": str(model.dtype), "rows": len(texts), "padded_rows": int((mask == 0).any(1).sum()),
           "real_positions": int(real.sum())}
    logits = {}
    for impl in ("sdpa", NAME):
        model.set_attn_implementation(impl)
        model.zero_grad()
        lg = model(input_ids=enc.input_ids, attention_mask=mask, position_ids=pos).logits
        lg[real].float().logsumexp(-1).mean().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        logits[impl] = lg.detach()[real].float()
        out[impl] = {"real_positions_nan": int(torch.isnan(logits[impl]).any(-1).sum()),
                     "params_with_nan_grad": sum(int(torch.isnan(g).any()) for g in grads), "params_with_grad": len(grads)}
    both = torch.isfinite(logits["sdpa"]).all(-1) & torch.isfinite(logits[NAME]).all(-1)
    if both.any():
        out["max_abs_diff_where_both_finite"] = float((logits["sdpa"][both] - logits[NAME][both]).abs().max())
    del model
    empty_cache()
    return out


@section
def dpo_speed(models: dict, rows: list[dict], batch: int, peak_tflops: float, work_dir: Path) -> dict:
    from bench_dpo import run_alignlab

    result = {}
    for name, path in models.items():
        entry = result[name] = {}
        try:
            ours = run_alignlab(path, rows, work_dir / f"al-{name}", batch=batch, command=False)
        except Exception as err:
            ours = None
            entry["alignlab_error"] = f"{type(err).__name__}: {err}"
            entry["alignlab_trace"] = traceback.format_exc()[-2000:]
        empty_cache()
        try:
            theirs = entry["trl_fastest"] = trl_fastest(path, rows, batch, work_dir / f"trl-{name}")
        except Exception as err:
            theirs = None
            entry["trl_error"] = f"{type(err).__name__}: {err}"
            entry["trl_trace"] = traceback.format_exc()[-2000:]
        empty_cache()
        if ours and theirs:
            # the work both did, from TRL's tokenization of the same rows: each pair's prompt once (alignlab) and
            # chosen + rejected answers; TRL forwards the prompt twice, so this favours neither
            prompt_toks, answer_toks = theirs["prompt_tokens"], theirs["answer_tokens"]
            trunk = ours["trunk_params"]  # the input embedding (a lookup) left out unless tied to the head
            flops = 6 * trunk * prompt_toks + 6 * (trunk + ours["head_params"]) * answer_toks
            tflops = flops / ours["train_s"] / 1e12
            ours_tps = theirs["tokens"] / ours["train_s"]
            entry.update({"alignlab_tok_s": round(ours_tps, 1), "alignlab_train_s": round(ours["train_s"], 2),
                          "speedup_vs_trl_fastest": round(ours_tps / theirs["tok_s"], 2),
                          "model_tflops": round(tflops, 1), "mfu_vs_measured_bf16_peak": round(tflops / peak_tflops, 3),
                          "matmul_params": trunk + ours["head_params"], "prompt_tokens": prompt_toks,
                          "answer_tokens": answer_toks})
        print(f"   {name}: {json.dumps(entry, default=str)[:600]}", flush=True)
    return result


def cli(*args: str, cwd: Path, timeout: int = 240) -> dict:
    start = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "alignlab", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ))
    return {"rc": p.returncode, "s": round(time.perf_counter() - start, 1), "stderr_tail": p.stderr[-1500:],
            "stdout_tail": p.stdout[-800:]}


def adapter_summary(run: Path) -> dict:
    from safetensors.torch import load_file

    f = run / "adapter" / "adapter_model.safetensors"
    if not f.is_file():
        return {"adapter": False}
    sd = load_file(str(f))
    b = [v for k, v in sd.items() if "lora_B" in k]
    return {"adapter": True, "tensors": len(sd), "lora_B_nonzero": sum(int(v.abs().sum() > 0) for v in b),
            "lora_B": len(b), "finite": all(bool(torch.isfinite(v).all()) for v in sd.values())}


COMMON = ("--set", "train.sample_prompts=0", "--set", "train.check_per_category=0")


@section
def qlora(model_dir: str, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    out = {}
    out["dpo"] = cli("train", "dpo", "--model", model_dir, "--qlora", "--max-steps", "8", "--batch-size", "8",
                     "--name", "qlora-dpo", *COMMON, cwd=work)
    out["dpo"].update(adapter_summary(work / "runs" / "qlora-dpo"))
    # the default reward's diversity term needs the MiniLM package (83 MB, too big to carry to a lent machine)
    spec = work / "rewards.yaml"
    spec.write_text("components:\n  - {name: heuristic, fn: persona_heuristic, weight: 1.0}\n"
                    "  - {name: length, fn: length_penalty, weight: -0.1, args: {target: 60}}\ncap: 1.0\n")
    out["grpo"] = cli("train", "grpo", "--model", model_dir, "--qlora", "--max-steps", "3", "--batch-size", "8",
                      "--rewards", str(spec),
                      "--set", "online.num_generations=4", "--set", "online.max_completion_length=32",
                      "--name", "qlora-grpo", *COMMON, cwd=work)
    out["grpo"].update(adapter_summary(work / "runs" / "qlora-grpo"))
    return out


@section
def fsdp(model_dir: str, work: Path) -> dict:
    from safetensors.torch import load_file

    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "fsdp.yaml"
    cfg.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_machines: 1\nnum_processes: 1\n"
                   "mixed_precision: 'no'\nmachine_rank: 0\nmain_training_function: main\nuse_cpu: false\n"
                   "fsdp_config:\n  fsdp_version: 2\n  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n"
                   "  fsdp_state_dict_type: FULL_STATE_DICT\n  fsdp_cpu_ram_efficient_loading: false\n"
                   "  fsdp_reshard_after_forward: true\n")
    common = ("--model", model_dir, "--max-steps", "6", "--batch-size", "4", "--lr", "5e-4", "--seed", "0", *COMMON)
    out = {"fsdp": cli("train", "dpo", *common, "--accelerate-config", str(cfg), "--name", "fsdp", cwd=work),
           "plain": cli("train", "dpo", *common, "--name", "plain", cwd=work)}
    out["fsdp"].update(adapter_summary(work / "runs" / "fsdp"))
    out["plain"].update(adapter_summary(work / "runs" / "plain"))
    a, b = work / "runs" / "fsdp" / "adapter" / "adapter_model.safetensors", work / "runs" / "plain" / "adapter" / "adapter_model.safetensors"
    if a.is_file() and b.is_file():
        x, y = load_file(str(a)), load_file(str(b))
        out["same_keys_and_shapes"] = x.keys() == y.keys() and all(x[k].shape == y[k].shape for k in x)
        if out["same_keys_and_shapes"]:
            out["max_abs_diff"] = max(float((x[k].float() - y[k].float()).abs().max()) for k in x)
            out["max_abs_value"] = max(float(y[k].float().abs().max()) for k in y)
    return out


def main() -> None:
    global OUT, DEVICE, DTYPE
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--only", default="probe,speed,qlora,fsdp")
    ap.add_argument("--dry", action="store_true", help="no GPU: run the speed section on the CPU in fp32 (a check of this script)")
    args = ap.parse_args()
    OUT = Path(args.out)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.dry:
        DEVICE, DTYPE = "cpu", torch.float32
    elif not torch.cuda.is_available():
        sys.exit("gpu_check: this machine has no CUDA GPU (--dry checks the script on the CPU)")
    env = environment()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "alignlab-gpu"
    models = write_models(work / "models")
    only = set(args.only.split(","))
    if "probe" in only:
        padding_probe(models["smollm2-135m-shape"])
    if "speed" in only:
        dpo_speed(models, pairs(args.pairs), args.batch_size, env.get("bf16_peak_tflops") or 790.0, work / "speed")
    if "qlora" in only:
        qlora(models["smollm2-135m-shape"], work / "qlora")
    if "fsdp" in only:
        fsdp(models["smollm2-135m-shape"], work / "fsdp")


if __name__ == "__main__":
    main()

"""The planner's arithmetic on hand-computed cases.

The tiny shape used throughout: 2 layers, hidden 4, intermediate 8, 2 heads and 1 KV head of width 2,
vocabulary 10, tied embeddings. By hand:

- one layer's projections: q 4x4=16, k and v 2 x 4x2=16, o 4x4=16, gate/up/down 3 x 4x8=96 -> 144;
  two layers 288; embeddings 10x4=40; norms (2x2+1)x4=20; total 348 parameters;
- LoRA r=1 per layer: q (4+4) + k,v 2x(4+2) + o (4+4) + gate,up 2x(4+8) + down (8+4) = 64; two layers 128;
- activations per token per layer: 6x4 + 6x4 (q_dim 4) + 4x2 (kv_dim 2) + 4x8 = 88 elements.
"""

from __future__ import annotations

import pytest

from alignlab.errors import AlignlabError
from alignlab.plan.estimate import (
    CPU_RUNTIME_BYTES,
    CUDA_CONTEXT_BYTES,
    NF4_BYTES,
    Device,
    Workload,
    estimate,
    flops,
    memory,
    peak_bytes,
    step_seconds,
)
from alignlab.plan.shapes import ModelShape, resolve_shape

TINY = ModelShape(name="tiny", layers=2, hidden=4, intermediate=8, heads=2, kv_heads=1, head_dim=2, vocab=10, tied=True)
CPU = Device(key="cpu", name="test cpu", memory_bytes=1e9, peak_flops=1e9, bandwidth=1e9, kind="cpu")
GPU = Device(key="gpu", name="test gpu", memory_bytes=1e9, peak_flops=1e12, bandwidth=1e11, kind="cuda", usd_per_hour=2.0)


def test_parameter_counts_by_hand():
    assert TINY.linear_params == 288
    assert TINY.total_params == 348
    assert TINY.lora_params(1) == 128


def test_published_parameter_counts():
    """SmolLM2-135M by hand: embeddings 49152x576 = 28,311,552; a layer 576x576x2 + 576x192x2 + 3x576x1536
    = 3,538,944, x30 = 106,168,320; norms 61x576 = 35,136 -> 134,515,008; LoRA r16 162,816 per layer."""
    s = resolve_shape("smollm2-135m")
    assert s.total_params == 134_515_008
    assert s.lora_params(16) == 30 * 162_816
    # the bundled facts reproduce the published totals of the larger models to 1%
    for name, billions in [("qwen2.5-0.5b", 0.494), ("qwen2.5-7b", 7.62), ("llama-3.1-8b", 8.03), ("mistral-7b", 7.25)]:
        assert abs(resolve_shape(name).total_params / 1e9 - billions) / billions < 0.01, name


def test_sft_lora_on_cpu_by_hand():
    w = Workload(method="sft", mode="lora", lora_r=1, batch=1, prompt_len=2, completion_len=3)
    m = memory(TINY, w, CPU)
    assert m["weights"] == 348 * 4  # fp32 on CPUs
    assert m["lora"] == 128 * 4 and m["gradients"] == 128 * 4 and m["optimizer"] == 128 * 8
    assert m["reference"] == 0
    assert m["activations"] == 5 * 2 * 88 * 4  # 5 tokens x 2 layers x 88 elements x fp32
    assert m["logits"] == 3 * 10 * 4 * 3  # the 3 completion positions scored, three fp32 copies
    assert m["runtime"] == CPU_RUNTIME_BYTES
    assert peak_bytes(m) == 1392 + 512 + 512 + 1024 + 3520 + 360 + CPU_RUNTIME_BYTES


def test_dpo_shares_the_prompt_and_scores_completions_only():
    w = Workload(method="dpo", mode="lora", lora_r=1, batch=1, prompt_len=2, completion_len=3)
    m = memory(TINY, w, CPU)
    # prompt once (2) + chosen and rejected (2 x 3) = 8 tokens; each completion keeps a copy of the prompt's K/V
    assert m["activations"] == 8 * 2 * 88 * 4 + 2 * 1 * 2 * 2 * 2 * 2 * 4
    assert m["logits"] == 6 * 10 * 4 * 3  # head_logps holds logits, log-softmax and its gradient in fp32 (it said 2)


def test_full_fine_tuning_and_qlora_on_a_gpu():
    full = memory(TINY, Workload(method="dpo", mode="full", batch=1, prompt_len=2, completion_len=3), GPU)
    assert full["weights"] == 348 * 2 and full["gradients"] == 348 * 2 and full["optimizer"] == 348 * 4
    assert full["reference"] == 348 * 2  # full fine-tuning keeps a second copy of the base as reference
    assert full["runtime"] == CUDA_CONTEXT_BYTES
    simpo = memory(TINY, Workload(method="simpo", mode="full", batch=1, prompt_len=2, completion_len=3), GPU)
    assert simpo["reference"] == 0
    q = memory(TINY, Workload(method="dpo", mode="qlora", lora_r=1, batch=1, prompt_len=2, completion_len=3), GPU)
    assert q["weights"] == pytest.approx(288 * NF4_BYTES + (40 + 20) * 2)


def test_gradient_checkpointing_keeps_layer_inputs_only():
    w = Workload(method="sft", lora_r=1, batch=1, prompt_len=2, completion_len=3, grad_ckpt=True)
    m = memory(TINY, w, CPU)
    assert m["activations"] == 5 * 2 * 4 * 4 + 5 * 88 * 4  # inputs of both layers + one layer recomputed in full


def test_grpo_generation_and_training_do_not_overlap():
    w = Workload(method="grpo", lora_r=1, batch=1, num_generations=2, prompt_len=2, completion_len=3)
    m = memory(TINY, w, CPU)
    assert m["activations"] == (2 + 2 * 3) * 2 * 88 * 4
    # KV cache: 2 sequences x 5 tokens x 2 layers x (K and V) x kv_dim 2, plus one step's logits; the sampler's copy
    # decodes in bf16 on a CPU that multiplies it natively (this one), in fp32 on one that does not
    assert m["generation"] == 2 * 5 * 2 * 2 * 2 * 2 + 2 * 10 * 4 * 2
    fp32_cpu = Device(key="cpu", name="no bf16", memory_bytes=1e9, peak_flops=1e9, bandwidth=1e9, kind="cpu", bf16=False)
    assert memory(TINY, w, fp32_cpu)["generation"] == 2 * 5 * 2 * 2 * 2 * 4 + 2 * 10 * 4 * 2
    rest = sum(v for k, v in m.items() if k not in ("generation", "activations", "logits"))
    assert peak_bytes(m) == rest + max(m["activations"] + m["logits"], m["generation"])
    vllm = memory(TINY, Workload(method="grpo", vllm=True, batch=1, prompt_len=2, completion_len=3), GPU)
    assert vllm["vllm"] == 0.3 * GPU.memory_bytes and "generation" not in vllm
    # colocated vLLM holds its share for the whole run: it adds to training's peak (it was left out of it)
    assert peak_bytes(vllm) == pytest.approx(sum(vllm.values()))


def test_online_methods_on_a_cpu_hold_the_samplers_copy():
    """train/sampler.GenerationCopy keeps a merged, untied copy of the policy for the whole run (bf16 here)."""
    w = Workload(method="grpo", lora_r=1, batch=1, num_generations=2, prompt_len=2, completion_len=3)
    m = memory(TINY, w, CPU)
    assert m["generation_copy"] == (TINY.total_params + 10 * 4) * 2.0  # plus the untied head's vocab x hidden
    assert "generation_copy" not in memory(TINY, w, GPU)


def test_ppo_is_planned_as_it_trains():
    """train/ppo.py draws one answer per prompt and does not accumulate; --full is refused there."""
    w = Workload(method="ppo", batch=4, num_generations=4, grad_accum=8, prompt_len=2, completion_len=3)
    assert (w.num_generations, w.grad_accum) == (1, 1)
    with pytest.raises(AlignlabError, match="PPO trains a LoRA adapter"):
        Workload(method="ppo", mode="full")


def test_a_mixture_of_experts_config_is_refused():
    from alignlab.plan.shapes import from_config

    config = {"num_attention_heads": 32, "hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336,
              "vocab_size": 32000, "num_local_experts": 8}
    with pytest.raises(AlignlabError, match="mixture-of-experts model \\(8 experts\\)"):
        from_config(config, "mixtral")


def test_training_flops_by_hand():
    """SFT, 5 tokens, mean context 2.5: forward 2x288 + 4x2x4x2.5 = 656 per token; LoRA backward (activation
    gradients only) 2x288 + 2x80 = 736; LM head 2x4x10 = 80 forward and 80 backward per scored (completion) token."""
    w = Workload(method="sft", lora_r=1, batch=1, prompt_len=2, completion_len=3)
    f = flops(TINY, w)
    assert f["train"] == 5 * (656 + 736) + 3 * (80 + 80)
    t = step_seconds(TINY, w, CPU, {"train": 0.5, "decode_bw": 0.5, "layer_overhead_s": 0.0, "pass_layer_overhead_s": 0.01})
    assert t["total"] == pytest.approx(7440 / (1e9 * 0.5) + 1 * 2 * 0.01)  # one pass through 2 layers
    full = flops(TINY, Workload(method="sft", mode="full", lora_r=1, batch=1, prompt_len=2, completion_len=3))
    assert full["train"] == 5 * (656 + 736 + 576) + 3 * (80 + 160)


def test_decoding_is_bandwidth_or_compute_bound_plus_overhead():
    w = Workload(method="grpo", lora_r=1, batch=1, num_generations=2, prompt_len=2, completion_len=3)
    f = {"train": 1.0, "decode_bw": 1.0, "layer_overhead_s": 0.001, "pass_layer_overhead_s": 0.0}
    t = step_seconds(TINY, w, CPU, f)
    weights = (288 + 40) * 4
    kv = 2 * (2 + 1.5) * 2 * 2 * 2 * 4
    per_step = max((weights + kv) / 1e9, flops(TINY, w)["decode"] / 3 / 1e9)
    assert t["generate"] == pytest.approx(3 * (per_step + 2 * 0.001))


def test_estimate_totals_and_cost():
    w = Workload(method="dpo", batch=2, grad_accum=2, examples=100, epochs=2)
    e = estimate(resolve_shape("qwen2.5-0.5b"), w, GPU)
    assert e.steps == 50  # 100 pairs x 2 epochs / (2 x 2)
    assert e.total_hours == pytest.approx(e.step["total"] * 50 / 3600)
    assert e.cost_usd == pytest.approx(2.0 * e.total_hours)
    j = e.to_json()
    assert j["peak_memory_gib"] == pytest.approx(e.peak_bytes / 2**30, abs=1e-3)


def test_a_precomputed_reference_is_one_forward_over_an_epochs_pairs_before_training():
    shape = resolve_shape("qwen2.5-0.5b")
    live = Workload(method="dpo", batch=2, grad_accum=2, examples=100, epochs=3)
    pre = Workload(method="dpo", batch=2, grad_accum=2, examples=100, epochs=3, precompute_ref=True)
    e_live, e_pre = estimate(shape, live, GPU), estimate(shape, pre, GPU)
    ref_per_step = flops(shape, live)["train"] - flops(shape, pre)["train"]
    assert ref_per_step > 0
    # 100 pairs are 25 steps' worth; the forward runs once over them, not once per epoch
    assert e_pre.once_s == pytest.approx(ref_per_step * 25 / (GPU.peak_flops * e_pre.factors["train"]))
    assert e_pre.total_hours == pytest.approx((e_pre.step["total"] * 75 + e_pre.once_s) / 3600)
    assert e_pre.cost_usd == pytest.approx(2.0 * e_pre.total_hours)
    assert e_pre.total_hours < e_live.total_hours  # once instead of every step
    assert e_pre.to_json()["before_training_seconds"] == pytest.approx(e_pre.once_s, abs=1e-3)
    assert estimate(shape, Workload(method="simpo", precompute_ref=True), GPU).once_s == 0  # no reference at all


def test_bad_input_is_one_clear_error():
    with pytest.raises(AlignlabError, match="unknown method"):
        Workload(method="dpo2")
    with pytest.raises(AlignlabError, match="QLoRA needs a CUDA GPU"):
        estimate(TINY, Workload(method="dpo", mode="qlora"), CPU)
    with pytest.raises(AlignlabError, match="unknown model"):
        resolve_shape("no-such-model")


def test_a_cpu_step_is_capped_by_the_fp32_rate_until_calibrated():
    """A bf16 matrix unit with 8x the fp32 peak does not make a CPU step 8x faster: the step is capped at
    train_fp32 x the fp32 peak; a calibrated factor set (train_fp32 0) uses the fitted share alone."""
    w = Workload(method="sft", lora_r=1, batch=1, prompt_len=2, completion_len=3)
    amx = Device(key="cpu", name="amx", memory_bytes=1e9, peak_flops=8e9, bandwidth=1e9, kind="cpu",
                 measured={"fp32_gflops": 1.0})
    f = {"train": 0.5, "train_fp32": 0.7, "decode_bw": 0.5, "layer_overhead_s": 0.0, "pass_layer_overhead_s": 0.0}
    assert step_seconds(TINY, w, amx, f)["total"] == pytest.approx(7440 / (1e9 * 0.7))  # not 7440 / 4e9
    assert step_seconds(TINY, w, amx, {**f, "train_fp32": 0.0})["total"] == pytest.approx(7440 / 4e9)
    gpu = Device(key="gpu", name="g", memory_bytes=1e9, peak_flops=8e9, bandwidth=1e9, kind="cuda",
                 measured={"fp32_gflops": 1.0})
    assert step_seconds(TINY, w, gpu, f)["total"] == pytest.approx(7440 / 4e9)  # GPUs: no cap


def test_planned_steps_count_the_last_short_batch_of_every_epoch():
    """14 rows in batches of 4 for 3 epochs is 4 steps an epoch, 12 in all, as the trainer runs them (the plan said
    11: 14 x 3 / 4 rounded up once)."""
    w = Workload(method="sft", mode="lora", batch=4, prompt_len=2, completion_len=3, examples=14, epochs=3)
    assert w.total_steps == 12
    assert Workload(method="sft", mode="lora", batch=4, grad_accum=2, prompt_len=2, completion_len=3,
                    examples=14, epochs=1).total_steps == 2


def test_processes_split_the_examples_and_each_rents_a_card():
    """--processes 2: 16 pairs in batches of 2 per process are 4 steps, not 8 (DistributedSampler gives each
    process ceil(16 / 2) = 8 rows); 15 pairs are still 4 (8 rows and a padded 8th). The memory is per process, the
    rental cost is two cards' for the same time."""
    one = Workload(method="dpo", batch=2, prompt_len=8, completion_len=8, examples=16)
    two = Workload(method="dpo", batch=2, prompt_len=8, completion_len=8, examples=16, processes=2)
    assert (one.total_steps, two.total_steps) == (8, 4)
    assert Workload(method="dpo", batch=2, prompt_len=8, completion_len=8, examples=15, processes=2).total_steps == 4
    gpu = Device(key="gpu", name="g", memory_bytes=80e9, peak_flops=1e14, bandwidth=1e12, kind="cuda", usd_per_hour=2.0)
    a, b = estimate(TINY, one, gpu), estimate(TINY, two, gpu)
    assert b.peak_bytes == a.peak_bytes
    assert b.cost_usd == pytest.approx(2 * 2.0 * (b.step["total"] * 4 + b.once_s) / 3600)
    # every process precomputes the reference over the whole dataset, so that one-off time does not shrink
    pre = dict(method="dpo", batch=2, prompt_len=8, completion_len=8, examples=16, epochs=2, precompute_ref=True)
    assert estimate(TINY, Workload(**pre, processes=4), gpu).once_s == pytest.approx(estimate(TINY, Workload(**pre), gpu).once_s)
    with pytest.raises(AlignlabError, match="processes must be at least 1"):
        Workload(method="dpo", processes=0)


def test_a_cuda_device_name_finds_its_own_row():
    """Matching a key's last part anywhere took an H100 ('NVIDIA H100 80GB HBM3') for an A100 80GB and an L40S for
    an L4: every part of the key must be a word of the name."""
    from alignlab.plan.record import match_gpu

    assert match_gpu("NVIDIA H100 80GB HBM3") == "h100" and match_gpu("NVIDIA H100 PCIe") == "h100-pcie"  # not SXM figures
    assert match_gpu("NVIDIA A100-SXM4-80GB") == "a100-80gb" and match_gpu("NVIDIA A100-PCIE-40GB") == "a100-40gb"
    assert match_gpu("NVIDIA GeForce RTX 4090") == "rtx-4090" and match_gpu("Tesla T4") == "t4"
    assert match_gpu("NVIDIA H100 NVL") == "h100-nvl" and match_gpu("NVIDIA H200 NVL") == "h200-nvl"
    assert match_gpu("NVIDIA H200") == "h200"
    assert match_gpu("NVIDIA L40S") is None and match_gpu("NVIDIA GH200 480GB") is None


def test_the_recorded_workload_is_what_the_run_does(tiny_model, tmp_path):
    """A DPO run that precomputes its reference log-probs (two epochs here; a run continued with --from always) was
    charged a reference forward every step; one with train.shared_prompt off was counted as sharing its prompts."""
    from helpers import cfg_for, write_pairs

    from alignlab.plan.record import workload_from_context
    from alignlab.train import engine

    data = write_pairs(tmp_path / "pairs.jsonl")
    one = workload_from_context(engine.prepare("dpo", cfg_for(tiny_model, **{"train.device": "cpu"}), str(data), tmp_path / "r"))
    assert one.shared_prompt and not one.precompute_ref
    two = cfg_for(tiny_model, **{"train.device": "cpu", "train.epochs": 2, "train.shared_prompt": "off"})
    w = workload_from_context(engine.prepare("dpo", two, str(data), tmp_path / "r"))
    assert w.precompute_ref and not w.shared_prompt


def test_a_runs_measured_peak_memory_starts_at_its_own_first_step():
    """A recipe's later stage reported the whole process's peak (an earlier stage's): the peak now restarts when a
    run's training begins (Linux VmHWM, reset through clear_refs)."""
    import sys

    import pytest

    from alignlab.plan import record

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    big = bytearray(300 << 20)  # an earlier stage's 300 MiB, freed before this run
    del big
    before, _ = record.measured_peak_bytes("cpu")
    record._reset_peak_rss()
    after, how = record.measured_peak_bytes("cpu")
    assert "this run" in how and after < before - (200 << 20)


_HEAD_PEAK = """
import sys, torch
N, V, W, kind = int(sys.argv[1]), int(sys.argv[2]), 32, sys.argv[3]
torch.manual_seed(0)
w, h = torch.randn(V, W) * 0.02, torch.randn(N, W, requires_grad=True)
labels = torch.randint(0, V, (N,))
if kind == "head":
    from alignlab.train.logps import head_logps
    run = lambda: head_logps(w, h, labels)[0].sum()
else:  # TRL's fused kernel as its LM-head forward calls it, folded by torch (no Triton on a CPU)
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction
    run = lambda: ChunkedLogProbFunction.apply(h, w, None, labels, 1.0, 32768, None, 1.0, ("log_probs", "entropy"))[0].sum()
def status(key):  # kB from /proc/self/status
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith(key + ":"))
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark starts again from here
run().backward()
print((status("VmHWM") - base) * 1024)
"""


def _measured_head_bytes(tmp_path, tokens: int, vocab: int, kind: str) -> float:
    """Peak RSS over one forward and backward of the LM head path, in a fresh process (bytes; Linux's VmHWM)."""
    import os
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")

    script = tmp_path / "head_peak.py"
    script.write_text(_HEAD_PEAK)
    r = subprocess.run([sys.executable, str(script), str(tokens), str(vocab), kind], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    return float(r.stdout.strip().splitlines()[-1])


def test_the_logits_term_is_what_the_lm_head_holds(tmp_path):
    """SFT's head (train.logps.head_logps) runs past HEAD_BUDGET logits in checkpointed chunks, TRL's fused kernel in
    tiles of 4096 tokens x 32768 columns; the plan counted every scored token x vocabulary x 4 bytes x 2-3 copies
    (2.25 GiB where 0.82 was measured). Measured on this CPU against the plan's term for the same tokens."""
    from alignlab.plan.estimate import logits_bytes

    shape = ModelShape(name="v16k", layers=2, hidden=32, intermediate=64, heads=2, kv_heads=1, head_dim=16, vocab=16384,
                       tied=True)
    sft = Workload(method="sft", batch=1, prompt_len=0, completion_len=8192)  # 8192 scored tokens
    planned = memory(shape, sft, CPU)["logits"]
    measured = _measured_head_bytes(tmp_path, 8192, 16384, "head")
    assert 0.75 < planned / measured < 1.35, (planned / 2**30, measured / 2**30)
    # below the budget the three fp32 copies are all alive: 1024 tokens
    small = memory(shape, Workload(method="sft", batch=1, prompt_len=0, completion_len=1024), CPU)["logits"]
    assert 0.75 < small / _measured_head_bytes(tmp_path, 1024, 16384, "head") < 1.35
    # TRL's kernel off CUDA (KTO here, every position of its 8192 tokens scored): about ten fp32 tiles of 4096 tokens
    kto = Workload(method="kto", batch=1, prompt_len=4096, completion_len=4096)
    tp = {"grad": 8192.0, "scored": 8192.0}
    small_vocab = ModelShape(name="v4k", layers=2, hidden=32, intermediate=64, heads=2, kv_heads=1, head_dim=16,
                             vocab=4096, tied=True)
    planned = logits_bytes(small_vocab, kto, tp, CPU)
    assert 0.75 < planned / _measured_head_bytes(tmp_path, 8192, 4096, "kernel") < 1.35


def test_on_cuda_the_fused_kernel_holds_one_bf16_tile():
    """The DPO family's concatenated forward, KTO and GRPO on CUDA run TRL's Triton kernel: one (4096 tokens x 32768
    columns) buffer in the compute precision (trl.kernels.chunked_logprob: mm_buf), whatever the batch. The plan
    showed 13.9 GiB of logits for Qwen2.5 1.5B DPO at batch 8 and 1024 tokens ('fits on a 24 GB card')."""
    from trl.kernels import chunked_logprob
    from trl.trainer import utils as trl_utils

    from alignlab.plan import estimate as est
    from alignlab.train import logps

    assert (est.TOKEN_TILE, est.VOCAB_CHUNK, est.HEAD_BUDGET) == \
        (chunked_logprob.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, logps.HEAD_BUDGET)
    tile = chunked_logprob.TOKEN_CHUNK_SIZE * trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE * 2  # bf16
    qwen = resolve_shape("qwen2.5-1.5b")
    h100 = Device(key="h100", name="H100", memory_bytes=80 * 2**30, peak_flops=1e15, bandwidth=3e12, kind="cuda")
    for method in ("dpo", "simpo", "kto", "grpo"):
        w = Workload(method=method, batch=8, prompt_len=256, completion_len=768, grad_ckpt=True, shared_prompt=False)
        assert memory(qwen, w, h100)["logits"] == tile, method
    few = Workload(method="dpo", batch=1, prompt_len=16, completion_len=16, grad_ckpt=True, shared_prompt=False)
    assert memory(qwen, few, h100)["logits"] == 2 * 16 * 32768 * 2  # fewer scored tokens than a tile: those only
    e = estimate(qwen, Workload(method="dpo", batch=8, prompt_len=256, completion_len=768, grad_ckpt=True,
                                shared_prompt=False), h100)
    assert e.peak_gib < 10, e.memory


def test_gpu_memory_is_what_the_card_reports():
    """Cards were sized as GB x 1e9 (an 80 GB H100 as 74.5 GiB, an RTX 4090 as 22.4) while training reads
    torch's total_memory (an H100 reports 81,559 MiB = 85,520,809,984 bytes), so a 76 GiB plan 'did not fit' an H100."""
    from alignlab.plan.devices import gpu
    from alignlab.plan.report import verdict

    h100 = gpu("h100")
    assert h100.memory_bytes == 85_520_809_984 and h100.label_gb == 80
    assert 23.9 < gpu("rtx-4090").memory_bytes / 2**30 < 24.0 and 139 < gpu("h200").memory_bytes / 2**30 < 141
    assert gpu("m2-max").memory_bytes == 0.75 * 96 * 2**30  # a Mac's unified memory: binary GB, 3/4 for its GPU
    mistral = resolve_shape("mistral-7b")
    w = Workload(method="dpo", batch=2, prompt_len=256, completion_len=2100, shared_prompt=False)
    e = estimate(mistral, w, h100)
    assert 74.5 < e.peak_gib < 79.6 and e.fits, e.peak_gib
    assert verdict(mistral, w, e, h100, None, [gpu("rtx-4090")]).startswith("fits on a 24 GB card (RTX 4090 24GB)")


def test_a_macs_gpu_trains_fp32_weights_and_is_its_own_kind():
    """models.loading.pick_dtype loads fp32 off CUDA; the plan counted bf16 on a Mac, and a run there was recorded
    (and calibrated) as this CPU's."""
    from alignlab.models.loading import pick_dtype
    from alignlab.plan.devices import gpu, mps_device

    import torch

    assert pick_dtype("mps") == torch.float32
    shape = resolve_shape("qwen2.5-0.5b")
    m = memory(shape, Workload(method="dpo", batch=1, prompt_len=8, completion_len=8), gpu("m2-max"))
    assert m["weights"] == shape.total_params * 4
    mac = mps_device("Apple M3 Max", 96 * 2**30)
    assert (mac.kind, mac.key, mac.peak_flops, mac.memory_bytes) == ("mps", "m3-max", 14.2e12, 96 * 2**30)
    other = mps_device("Apple M1", 16 * 2**30)  # no row: the slowest Apple figures, never this CPU's
    assert other.kind == "mps" and other.peak_flops == min(gpu(k).peak_flops for k in ("m2-max", "m3-max", "m4-max"))

"""Memory, time and money for one training run, from arithmetic on the model's shape.

Memory (bytes), each term written out in :func:`memory`:

- weights at their precision: fp32 on a CPU or a Mac's GPU (4 bytes: ``pick_dtype`` loads bf16 on CUDA only),
  bf16 on CUDA GPUs (2), QLoRA's NF4 with double quantization (4.127 bits per projection weight; embeddings and LM
  head stay bf16);
- LoRA parameters, their gradients and AdamW's two moments, all fp32 (PEFT keeps adapters in fp32):
  16 bytes per trainable parameter; full fine-tuning: weights + gradients + two moments at the weight
  precision (torch AdamW keeps its states in the parameter's dtype);
- activations kept for backward, per token and layer (elements, compute precision):
  ``6*hidden + 6*q_dim + 4*kv_dim + 4*intermediate`` (two RMSNorms with their fp32 intermediates,
  q/k/v, RoPE's inputs, k/v repeated for grouped-query attention, attention output, SwiGLU's four
  intermediates); with gradient checkpointing only each layer's input (hidden) plus one layer in full;
- logits: the LM head's working memory, as the path that computes it holds it (:func:`logits_bytes`):
  alignlab's ``head_logps`` (SFT on one process, the DPO family's prompt-once forward) keeps three fp32 copies
  (logits, log-softmax, its gradient) of at most ``HEAD_BUDGET`` logits, checkpointed chunks past it; TRL's fused
  kernel (the DPO family's concatenated forward, KTO, GRPO/RLOO) one tile of at most 4096 tokens x 32768 columns,
  folded in place by Triton on CUDA in the compute precision, by torch elsewhere with about ten fp32 tiles alive
  (measured); PPO's own forward the whole vocabulary's fp32 log-softmax and its gradient;
- reference model: none extra (the adapter-disabled base), a second weight copy for full fine-tuning;
  its no-grad forward is transient and smaller than the policy's;
- generation (GRPO/RLOO/PPO): KV cache of every sequence at full length (bf16 on a CPU that multiplies it natively:
  the sampler's copy) plus one step's logits; or a
  vLLM colocate reservation (a fraction of the card, TRL's ``vllm_gpu_memory_utilization`` 0.3), held for the
  whole run and so on top of training's peak;
- PPO: the value head (hidden+1) and any reward model's weights;
- generation_copy (online methods on a CPU): the sampler's merged, untied copy of the policy, bf16 where the CPU
  multiplies bf16 natively, else fp32;
- runtime: the CUDA context, or on a CPU the interpreter with torch, transformers, TRL and datasets
  loaded (measured: :data:`CPU_RUNTIME_BYTES`).

Time per optimizer step = training FLOPs / (peak x ``train`` utilization; on CPUs at most ``train_fp32`` x
the fp32 peak, see DEFAULT_FACTORS) + a fixed cost per layer per
forward/backward pass (``pass_layer_overhead_s``: launches, Python) + decoding time, where each
decoding step costs max(bytes read / (bandwidth x ``decode_bw``), FLOPs / peak) plus a fixed
per-layer overhead (kernel launches, Python). Training FLOPs per token: 2 x projection weights for a
forward, 2x more for the activation gradient, 2x more again for weight gradients (full fine-tuning
only), plus attention (4 x layers x q_dim x context per forward) and the LM head on scored tokens.
The utilization factors are refitted from measured runs by ``alignlab plan --calibrate``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace

from alignlab import methods
from alignlab.errors import AlignlabError
from alignlab.plan.shapes import ModelShape

GIB = 1024**3
PREFERENCE = set(methods.names(kind="preference", task=methods.CAUSAL))
REFERENCE_FREE = set(methods.names(reference=False))
ONLINE = set(methods.names(online=True))
METHODS = list(methods.NAMES)
NF4_BYTES = 4.127 / 8  # NF4 with double-quantized absmax, blocks of 64
CPU_RUNTIME_BYTES = int(0.80 * GIB)  # python + torch + transformers + trl + peft + datasets + tokenizer, measured RSS
CUDA_CONTEXT_BYTES = int(0.5 * GIB)
VLLM_COLOCATE_FRACTION = 0.3
# the LM head's working sizes, as the code that runs it has them (tests/plan/test_plan_memory.py checks each):
HEAD_BUDGET = 1 << 26  # alignlab.train.logps.HEAD_BUDGET: logits head_logps computes at once, past it in chunks
TOKEN_TILE = 4096  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE: tokens per tile of TRL's fused LM-head kernel
VOCAB_CHUNK = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE: vocabulary columns per tile
FOLD_TILES = 10  # fp32 tiles alive when torch folds a tile (no Triton: CPUs, Macs); measured 8.3-10.9 on a CPU

DEFAULT_FACTORS = {
    # train: share of the matmul peak reached by a training step; decode_bw: share of memory bandwidth
    # while decoding; layer_overhead_s: fixed cost per layer per decoding step (launches, Python).
    # pass_layer_overhead_s: fixed cost per layer per forward+backward pass (launches, Python, LoRA's extra ops).
    # train_fp32 (CPUs): a step's rate is also capped at this share of the fp32 matmul peak. The norms, softmaxes,
    # LoRA's thin matmuls and the fp32 LM head run at fp32 speed, so a bf16 matrix unit (AMX) does not carry a
    # small model's step. Measured on two 2-core machines (DPO, SmolLM2-135M): AVX512-BF16, bf16 peak 0.35 TFLOP/s,
    # about 0.11 TFLOP/s reached; AMX, bf16 peak 2.8 TFLOP/s, about 0.2 reached (the bf16 share alone said 9x
    # too fast there). A calibration (`alignlab plan --calibrate`) replaces both with one fitted share.
    "cpu": {"train": 0.45, "train_fp32": 0.7, "decode_bw": 0.5, "layer_overhead_s": 4e-4, "pass_layer_overhead_s": 1e-3},
    "cuda": {"train": 0.35, "decode_bw": 0.6, "layer_overhead_s": 2.5e-4, "vllm_layer_overhead_s": 2e-5,
             "pass_layer_overhead_s": 1e-3},
    "mps": {"train": 0.25, "decode_bw": 0.5, "layer_overhead_s": 5e-4, "pass_layer_overhead_s": 2e-3},
}


@dataclass
class Workload:
    method: str = methods.DPO
    mode: str = "lora"  # lora | qlora | full
    lora_r: int = 16
    batch: int = 4  # examples (pairs; prompts for online methods) per micro-batch
    grad_accum: int = 1
    prompt_len: float = 128  # mean tokens (time)
    completion_len: float = 128  # mean tokens per completion; online: generated tokens
    peak_prompt_len: float | None = None  # longest batch (memory); default: the means
    peak_completion_len: float | None = None
    num_generations: int = 4
    grad_ckpt: bool = False
    vllm: bool = False
    shared_prompt: bool = True  # alignlab's prompt-once forward (DPO family; online methods on CPU)
    precompute_ref: bool = False
    ppo_epochs: int = 2
    reward_params: int = 0  # a reward model's parameters (0: a Python reward)
    steps: int | None = None
    examples: int | None = None
    epochs: float = 1.0
    processes: int = 1  # data-parallel processes (--processes): each takes 1/N of the examples, and its own memory

    def __post_init__(self):
        if self.method not in METHODS:
            raise AlignlabError(f"unknown method '{self.method}'", fix="one of: " + ", ".join(METHODS))
        if self.mode not in ("lora", "qlora", "full"):
            raise AlignlabError(f"unknown mode '{self.mode}'", fix="lora, qlora or full")
        for k in ("batch", "grad_accum", "num_generations", "processes"):
            if getattr(self, k) < 1:
                raise AlignlabError(f"{k} must be at least 1, got {getattr(self, k)}")
        if self.prompt_len < 0 or self.completion_len < 1:
            raise AlignlabError("token lengths must be positive", fix="--prompt-len >= 0, --completion-len >= 1")
        if not math.isfinite(self.epochs) or self.epochs > 10_000:
            raise AlignlabError(f"epochs must be a finite number up to 10000, got {self.epochs}")
        if self.method == methods.PPO:  # as train/ppo.py runs: one answer per prompt, no accumulation, LoRA only
            if self.mode == "full":
                raise AlignlabError("PPO trains a LoRA adapter (its reference is the base with the adapter disabled)",
                                    fix="drop --full")
            self.num_generations, self.grad_accum = 1, 1

    @property
    def total_steps(self) -> int:
        if self.steps:
            return int(self.steps)
        if self.examples:  # as the trainer counts: a last short batch is a step, every epoch; N processes split them
            per_process = math.ceil(self.examples / self.processes)
            per_epoch = math.ceil(math.ceil(per_process / self.batch) / self.grad_accum)
            return max(1, math.ceil(per_epoch * self.epochs))
        return 100


@dataclass
class Device:
    key: str
    name: str
    memory_bytes: float  # usable by training
    peak_flops: float  # matmul FLOP/s in the precision training uses
    bandwidth: float  # bytes/s
    kind: str  # cpu | cuda | mps
    bf16: bool = True
    usd_per_hour: float | None = None
    price_source: str | None = None
    measured: dict = field(default_factory=dict)
    label_gb: float | None = None  # the card's memory as sold ("24 GB card"); memory_bytes is what it reports


def weight_bytes_per_param(device: Device, mode: str) -> float:
    if device.kind in ("cpu", "mps"):
        return 4.0  # fp32 weights off CUDA (models.loading.pick_dtype; on CPUs bf16 only as autocast)
    if device.kind == "cuda" and not device.bf16:
        return 4.0 if mode != "qlora" else 2.0  # T4: fp32 weights, fp16 compute
    return 2.0


def act_bytes(device: Device) -> float:
    return 4.0 if device.kind in ("cpu", "mps") or not device.bf16 else 2.0


def _token_plan(w: Workload) -> dict:
    """Tokens per micro-batch: with gradient, forward-only, LM-head-scored, and (online) generated."""
    B, G, p, c = w.batch, w.num_generations, w.prompt_len, w.completion_len
    m = w.method
    if m == methods.SFT:
        grad = B * (p + c)  # the LM head runs on the completion's positions only (alignlab.train.sft)
        return {"grad": grad, "nograd": 0.0, "scored": B * c, "gen_seqs": 0}
    if m in PREFERENCE:
        grad = (B * p + 2 * B * c) if w.shared_prompt else 2 * B * (p + c)
        ref = 0.0 if (m in REFERENCE_FREE or w.precompute_ref) else grad
        return {"grad": grad, "nograd": ref, "scored": 2 * B * c, "gen_seqs": 0}
    if m == methods.KTO:  # TRL: policy on the batch; policy and reference on a mismatched KL batch; reference on the batch
        grad = B * (p + c)
        return {"grad": grad, "nograd": 3 * grad, "scored": grad, "gen_seqs": 0}
    if m == methods.RM:
        grad = 2 * B * (p + c)
        return {"grad": grad, "nograd": 0.0, "scored": 0.0, "gen_seqs": 0}
    # online: B prompts x G completions, generated then scored
    grad = (B * p + B * G * c) if w.shared_prompt else B * G * (p + c)
    if m == methods.PPO:  # old log-probs and reference (no grad), then ppo_epochs passes with gradient
        return {"grad": w.ppo_epochs * grad, "nograd": 2 * grad, "scored": w.ppo_epochs * B * G * c,
                "gen_seqs": B * G, "grad_once": grad}
    return {"grad": grad, "nograd": grad, "scored": B * G * c, "gen_seqs": B * G, "grad_once": grad}


def memory(shape: ModelShape, w: Workload, device: Device) -> dict[str, float]:
    """Bytes per component at the step's peak (see the module docstring for each term)."""
    wb = weight_bytes_per_param(device, w.mode)
    ab = act_bytes(device)
    L, h = shape.layers, shape.hidden
    out: dict[str, float] = {}
    if w.mode == "qlora":
        out["weights"] = shape.linear_params * NF4_BYTES + (shape.embed_params + shape.head_params + shape.norm_params) * 2
    else:
        out["weights"] = shape.total_params * wb
    if w.mode == "full":
        out["gradients"] = shape.total_params * wb
        out["optimizer"] = shape.total_params * wb * 2
        out["lora"] = 0.0
    else:
        t = shape.lora_params(w.lora_r)
        out["lora"] = t * 4.0
        out["gradients"] = t * 4.0
        out["optimizer"] = t * 8.0
    # reference: adapter disabled (LoRA) costs nothing; full fine-tuning keeps a second copy of the base
    needs_ref = w.method not in REFERENCE_FREE
    # (precomputed reference log-probs spare the forward, not the copy: TRL's DPOTrainer still loads it)
    out["reference"] = shape.total_params * wb if (w.mode == "full" and needs_ref) else 0.0

    # activations of the peak micro-batch
    pw = Workload(**{**asdict(w), "prompt_len": w.peak_prompt_len or w.prompt_len,
                     "completion_len": w.peak_completion_len or w.completion_len})
    tp = _token_plan(pw)
    grad_tokens = tp.get("grad_once", tp["grad"])
    per_tok_layer = 6 * h + 6 * shape.q_dim + 4 * shape.kv_dim + 4 * shape.intermediate
    if w.grad_ckpt:
        acts = grad_tokens * L * h * ab + grad_tokens * per_tok_layer * ab
    else:
        acts = grad_tokens * L * per_tok_layer * ab
    if w.method in PREFERENCE and w.shared_prompt:  # each completion keeps its copy of the prompt's K/V
        acts += 2 * pw.batch * pw.prompt_len * L * 2 * shape.kv_dim * ab
    out["activations"] = acts
    out["logits"] = logits_bytes(shape, pw, tp, device)
    if w.method in ONLINE:
        seqs = tp["gen_seqs"] * w.grad_accum  # one generation call per optimizer step
        ctx = pw.prompt_len + pw.completion_len
        if w.vllm and device.kind == "cuda":  # colocated vLLM holds its share of the card for the whole run
            out["vllm"] = VLLM_COLOCATE_FRACTION * device.memory_bytes
        else:  # on a CPU the sampler's copy decodes, bf16 where the CPU multiplies it natively
            kv = seqs * ctx * L * 2 * shape.kv_dim * (2.0 if device.kind == "cpu" and device.bf16 else ab)
            out["generation"] = kv + seqs * shape.vocab * 4.0 * 2
        out["reward_model"] = w.reward_params * (4.0 if device.kind == "cpu" else 2.0)
        if device.kind == "cpu":  # train/sampler.GenerationCopy: a merged copy of the policy to sample from, untied,
            # in bf16 where the CPU multiplies it natively (else fp32), held for the whole run
            copy = shape.total_params + (shape.vocab * shape.hidden if shape.tied else 0)
            out["generation_copy"] = copy * (2.0 if device.bf16 else 4.0)
        if w.method == methods.PPO:
            out["critic"] = (h + 1) * 16.0  # value head: weights, gradient, two moments (fp32)
    out["runtime"] = CPU_RUNTIME_BYTES if device.kind == "cpu" else (CUDA_CONTEXT_BYTES if device.kind == "cuda" else 0.0)
    return out


def logits_bytes(shape: ModelShape, w: Workload, tp: dict, device: Device) -> float:
    """The LM head's working memory at its peak, as the path that computes it holds it."""
    vocab = shape.vocab
    scored = tp["scored"] / (w.ppo_epochs if w.method == methods.PPO else 1)
    if not scored:
        return 0.0
    if w.method == methods.PPO:  # its own forward: the whole vocabulary's fp32 log-softmax and its gradient
        return scored * vocab * 4.0 * 2
    if (w.method == methods.SFT and w.processes == 1) or (w.method in PREFERENCE and w.shared_prompt):
        # train.logps.head_logps: logits, log-softmax and its gradient in fp32; past HEAD_BUDGET in checkpointed
        # chunks of HEAD_BUDGET // vocab tokens, of which one is alive at a time
        tokens = scored if scored * vocab <= HEAD_BUDGET else max(1, HEAD_BUDGET // vocab)
        return tokens * vocab * 4.0 * 3
    cols = min(vocab, VOCAB_CHUNK)
    if device.kind == "cuda":  # TRL's fused kernel: Triton folds one tile of the scored positions in place
        return min(scored, TOKEN_TILE) * cols * act_bytes(device)
    # torch folds the tile with fp32 temporaries; TRL's forward scores every position there (alignlab's online
    # prompt-once forward the scored ones only)
    tokens = scored if (w.method in ONLINE and w.shared_prompt) else tp.get("grad_once", tp["grad"])
    return min(tokens, TOKEN_TILE) * cols * 4.0 * FOLD_TILES


def peak_bytes(parts: dict[str, float]) -> float:
    """Generation and the training forward/backward do not overlap: the larger of the two counts (a colocated vLLM's
    reservation, ``vllm``, is held throughout and adds to both)."""
    parts = dict(parts)
    gen = parts.pop("generation", 0.0)
    train_transient = parts.get("activations", 0.0) + parts.get("logits", 0.0)
    base = sum(parts.values()) - train_transient
    return base + max(train_transient, gen)


def flops(shape: ModelShape, w: Workload) -> dict[str, float]:
    """FLOPs per optimizer step: training (gradient passes and no-grad forwards) and decoding."""
    tp = _token_plan(w)
    ctx = (w.prompt_len + w.completion_len) / 2  # mean attention span of a causal token
    fwd_tok = 2 * shape.linear_params + 4 * shape.layers * shape.q_dim * ctx
    attn_fwd = 4 * shape.layers * shape.q_dim * ctx
    # backward: activation gradients (2x linear, 2x attention); weight gradients only when training weights
    bwd_tok = 2 * shape.linear_params + 2 * attn_fwd + (2 * shape.linear_params if w.mode == "full" else 0)
    if w.grad_ckpt:
        bwd_tok += fwd_tok
    head = 2 * shape.hidden * shape.vocab
    head_bwd = head * (2 if w.mode == "full" else 1)
    train = (
        tp["grad"] * (fwd_tok + bwd_tok)
        + tp["nograd"] * fwd_tok
        + tp["scored"] * (head + head_bwd)
        + (tp["nograd"] * head * (tp["scored"] / tp["grad"]) if tp["grad"] else 0)
    )
    train *= w.grad_accum
    out = {"train": train, "decode": 0.0, "prefill": 0.0}
    if w.method in ONLINE:
        seqs = tp["gen_seqs"] * w.grad_accum
        out["prefill"] = seqs * w.prompt_len * fwd_tok
        out["decode"] = seqs * w.completion_len * (fwd_tok + head)
    return out


def train_rate(device: Device, factors: dict) -> float:
    """FLOP/s a training step reaches: the peak's ``train`` share, on CPUs at most ``train_fp32`` of the fp32 peak."""
    rate = device.peak_flops * factors["train"]
    fp32 = (device.measured or {}).get("fp32_gflops")
    if device.kind == "cpu" and fp32 and factors.get("train_fp32"):
        rate = min(rate, fp32 * 1e9 * factors["train_fp32"])
    return rate


def step_seconds(shape: ModelShape, w: Workload, device: Device, factors: dict) -> dict[str, float]:
    f = flops(shape, w)
    tp = _token_plan(w)
    once = tp.get("grad_once", tp["grad"]) or 1.0
    passes = tp["grad"] / once + 0.5 * tp["nograd"] / once  # a no-grad forward counts half a pass
    rate = train_rate(device, factors)
    t_train = (f["train"] + f["prefill"]) / rate
    t_train += w.grad_accum * passes * shape.layers * factors.get("pass_layer_overhead_s", 0.0)
    t_gen = 0.0
    if w.method in ONLINE:
        seqs = _token_plan(w)["gen_seqs"] * w.grad_accum
        wb = 2.0 if (w.vllm or w.mode == "qlora") else weight_bytes_per_param(device, w.mode)
        weights_read = (shape.linear_params + shape.vocab * shape.hidden) * wb
        kv_read = seqs * (w.prompt_len + w.completion_len / 2) * shape.layers * 2 * shape.kv_dim * act_bytes(device)
        per_step_bw = (weights_read + kv_read) / (device.bandwidth * factors["decode_bw"])
        per_step_fl = f["decode"] / w.completion_len / rate
        ovh = factors.get("vllm_layer_overhead_s", factors["layer_overhead_s"]) if w.vllm else factors["layer_overhead_s"]
        t_gen = w.completion_len * (max(per_step_bw, per_step_fl) + shape.layers * ovh)
    return {"train": t_train, "generate": t_gen, "total": t_train + t_gen}


def once_seconds(shape: ModelShape, w: Workload, device: Device, factors: dict) -> float:
    """One-off work before the first step: precomputed reference log-probs, one no-grad forward over the pairs the
    steps reach (at most an epoch's)."""
    if not w.precompute_ref or w.method not in PREFERENCE or w.method in REFERENCE_FREE:
        return 0.0
    per_step = flops(shape, replace(w, precompute_ref=False))["train"] - flops(shape, w)["train"]
    steps = w.total_steps * w.processes  # every process precomputes over the whole dataset, not its share
    if w.examples:
        steps = min(steps, math.ceil(math.ceil(w.examples / w.batch) / w.grad_accum))
    return per_step * steps / train_rate(device, factors)


@dataclass
class Estimate:
    model: str
    params: int
    trainable_params: int
    method: str
    mode: str
    device: str
    memory: dict[str, float]
    peak_bytes: float
    fits: bool
    step: dict[str, float]
    steps: int
    cost_usd: float | None
    factors: dict
    once_s: float = 0.0  # before the first step (precomputed reference log-probs)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    @property
    def total_hours(self) -> float:
        return (self.step["total"] * self.steps + self.once_s) / 3600

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "method": self.method,
            "mode": self.mode,
            "device": self.device,
            "peak_memory_gib": round(self.peak_gib, 3),
            "memory_gib": {k: round(v / GIB, 4) for k, v in self.memory.items()},
            "fits": self.fits,
            "step_seconds": round(self.step["total"], 4),
            "step_breakdown_seconds": {k: round(v, 4) for k, v in self.step.items() if k != "total"},
            "before_training_seconds": round(self.once_s, 4),
            "steps": self.steps,
            "total_hours": round(self.total_hours, 4),
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 4),
            "factors": self.factors,
        }


def estimate(shape: ModelShape, w: Workload, device: Device, factors: dict | None = None) -> Estimate:
    if w.mode == "qlora" and device.kind != "cuda":
        raise AlignlabError(f"QLoRA needs a CUDA GPU; {device.name} is not one", fix="use --lora or a CUDA card")
    factors = dict(factors or DEFAULT_FACTORS[device.kind])
    mem = memory(shape, w, device)
    peak = peak_bytes(mem)
    step = step_seconds(shape, w, device, factors)
    steps = w.total_steps
    once = once_seconds(shape, w, device, factors)
    # N processes rent N cards for the run's time
    cost = None if device.usd_per_hour is None else device.usd_per_hour * w.processes * (step["total"] * steps + once) / 3600
    trainable = shape.total_params if w.mode == "full" else shape.lora_params(w.lora_r)
    return Estimate(
        model=shape.name, params=shape.total_params, trainable_params=trainable, method=w.method, mode=w.mode,
        device=device.name, memory=mem, peak_bytes=peak, fits=peak <= device.memory_bytes, step=step,
        steps=steps, cost_usd=cost, factors=factors, once_s=once,
    )


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)

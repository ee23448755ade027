"""Sampling for online RL on CPU: a merged low-precision copy of the policy, a shared prefill, a static KV cache.

GRPO and RLOO spend most of a CPU step generating. TRL's path calls ``generate`` on the LoRA-wrapped policy
under bf16 autocast: every one of the 210 adapted linears of a 30-layer model runs four small matmuls and
casts its fp32 weight to bf16 on every token, the group's identical prompts are prefilled once per copy,
the KV cache grows by concatenation, and ``torch.multinomial`` draws 49k exponentials per row and token.
Here, per step:

1. ``GenerationCopy.sync`` writes base + LoRA delta (``get_delta_weight``, PEFT's own merge arithmetic)
   into a plain model in bf16 (the CPU has native bf16) or the training dtype: one matmul per linear, no
   adapter at decode time. The copy costs one model's weights in memory. Its LM head runs in the same
   precision, as TRL's generate runs it, unless the run sets ``online.fp32_lm_head`` (or TRL's
   ``cast_lm_head_to_fp32``).
2. ``sample`` prefills each distinct prompt once (LM head on the last position only), repeats its KV cache
   for the group, decodes into a static cache (no concatenation) and draws each token by inverse CDF: one
   uniform per row against the cumulative probabilities, exactly the categorical distribution that
   ``multinomial`` samples, after temperature, top-k and top-p as transformers applies them.

Sampling runs in bf16 while the policy's log-probs are computed in the training precision, so the samples
are very slightly off-policy, as they are with vLLM; TRL recomputes the old log-probs from the policy.
Anything this path does not cover (repetition penalty, min-p, extra generation kwargs, multimodal input,
DoRA, quantized or sharded weights, GPUs) stays on TRL's path: ``supported`` says which.
"""

from __future__ import annotations

import copy
import re

import torch

from alignlab.models.loading import cpu_has_fast_bf16


def supported(trainer) -> str | None:
    """Why ``sample`` cannot stand in for the trainer's ``generate`` call, or None when it can."""
    args = trainer.args
    if trainer.accelerator.device.type != "cpu" or trainer.accelerator.num_processes > 1:
        return "not a single CPU process"
    if getattr(trainer, "use_vllm", False) or getattr(trainer, "use_transformers_continuous_batching", False):
        return "another generation engine is configured"
    if (trainer.repetition_penalty or 1.0) != 1.0 or trainer.min_p is not None or args.generation_kwargs:
        return "repetition penalty, min-p or extra generation kwargs"
    if getattr(trainer, "_is_vlm", False):
        return "a vision-language model"
    from alignlab.train.logps import kv_cache_only

    if not kv_cache_only(trainer.model):
        return "layers without a key/value cache (convolution, linear attention or state space)"
    return None


class GenerationCopy:
    """A plain copy of the policy with the LoRA deltas merged in, refreshed from the policy before each use."""

    def __init__(self, policy, dtype: torch.dtype | None = None, fp32_head: bool = False):
        from transformers import AutoModelForCausalLM

        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        self.dtype = dtype or (torch.bfloat16 if cpu_has_fast_bf16() else next(base.parameters()).dtype)
        config = copy.deepcopy(base.config)
        config.tie_word_embeddings = False  # an adapter on a tied LM head makes it differ from the embeddings
        with torch.random.fork_rng(devices=[]):  # its throwaway initialisation must not move the run's RNG
            self.model = AutoModelForCausalLM.from_config(config, dtype=self.dtype).eval()
        head = self.model.get_output_embeddings()
        if fp32_head and head is not None and self.dtype != torch.float32:
            # the LM head in fp32 when the run asks for it (TRL's cast_lm_head_to_fp32): low-precision logits
            # shift the sampling distribution a little, most at low temperature. Off by default, as in TRL,
            # whose generate runs the head in the autocast precision: in fp32 it costs 13 ms of a 55 ms token
            # step for 16 rows of the default model on 2 CPU cores.
            head.float().register_forward_pre_hook(lambda _m, args: (args[0].float(), *args[1:]))
        self.model.generation_config = base.generation_config
        self._synced = False
        self.sync(policy)

    @staticmethod
    def merged_state(policy) -> dict[str, tuple[torch.Tensor, bool]]:
        """Parameter name (as in the plain model) -> (weight with the active adapters' deltas added, whether it
        can change during training: trainable, or carrying an adapter)."""
        from peft.tuners.lora import LoraLayer

        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        state: dict[str, tuple[torch.Tensor, bool]] = {}
        for name, p in base.named_parameters():
            if "lora_" in name or ".original_module." in name:
                continue
            name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name.replace(".base_layer.", "."))
            state[name] = (p, p.requires_grad)
        for name, mod in base.named_modules():
            if not isinstance(mod, LoraLayer) or mod.merged or mod.disable_adapters:
                continue
            if any(mod.use_dora.get(a, False) for a in mod.active_adapters):
                raise ValueError("DoRA adapters are not merged here")
            active = [a for a in mod.active_adapters if a in mod.lora_A or a in getattr(mod, "lora_embedding_A", {})]
            weight = mod.get_base_layer().weight
            for a in active:
                if isinstance(mod.get_base_layer(), torch.nn.Linear) and not getattr(mod, "fan_in_fan_out", False):
                    # W + scale * B @ A in one fused call: what get_delta_weight computes for a plain linear
                    weight = torch.addmm(weight, mod.lora_B[a].weight, mod.lora_A[a].weight, alpha=mod.scaling[a])
                else:
                    weight = weight + mod.get_delta_weight(a)
            if active:
                state[f"{name}.weight"] = (weight, True)
        return state

    @torch.no_grad()
    def sync(self, policy) -> None:
        """Copy the policy's merged weights in; frozen ones only the first time."""
        state = self.merged_state(policy)
        mine = dict(self.model.named_parameters())
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        for name in set(mine) - set(state):  # a weight the policy shares with another (tied) under this name
            try:
                p = base.get_parameter(name)
            except AttributeError:
                continue
            state[name] = (p, p.requires_grad)
        if set(mine) != set(state):
            raise ValueError("the policy's parameters do not map onto the plain model: "
                             f"{sorted(set(mine) - set(state))[:3]} missing, {sorted(set(state) - set(mine))[:3]} extra")
        for name, p in mine.items():
            weight, changes = state[name]
            if changes or not self._synced:
                p.copy_(weight)
        self._synced = True


BLOCK = 256


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Inverse-CDF draw of one index per row of (unnormalized, non-negative) ``probs``, in two levels: pick a
    block of ``BLOCK`` tokens by its mass, then a token inside it. Two short cumulative sums instead of one
    over the whole vocabulary (a sequential scan of 49k entries per row)."""
    rows, vocab = probs.shape
    blocks = -(-vocab // BLOCK)
    if blocks * BLOCK != vocab:
        probs = torch.nn.functional.pad(probs, (0, blocks * BLOCK - vocab))
    probs = probs.view(rows, blocks, BLOCK)
    mass = probs.sum(-1, dtype=torch.float64)
    cdf = mass.cumsum(-1)
    u = torch.rand(rows, 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    block = torch.searchsorted(cdf, u).clamp(max=blocks - 1)
    # a block with no mass is never picked: searchsorted finds the first block whose cdf reaches u
    rest = u - (cdf.gather(-1, block) - mass.gather(-1, block))
    inside = probs.gather(1, block[:, :, None].expand(rows, 1, BLOCK)).squeeze(1).double().cumsum(-1)
    rest = torch.minimum(rest, inside[:, -1:])
    j = torch.searchsorted(inside, rest).clamp(max=BLOCK - 1)
    return (block * BLOCK + j).squeeze(-1)


def categorical(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) after top-k and top-p filtering, by inverse CDF.

    top-k keeps the k largest logits; top-p keeps the smallest set of tokens, largest first, whose
    probability reaches top_p (always at least one), as transformers' TopPLogitsWarper does.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits.div_(max(temperature, 1e-5))
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill_(logits < kth, float("-inf"))
    probs = logits.sub_(logits.max(-1, keepdim=True).values).exp_()
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p
        sorted_p = sorted_p.masked_fill(before >= top_p * sorted_p.sum(-1, keepdim=True), 0.0)
        return order.gather(-1, _draw(sorted_p, generator)[:, None]).squeeze(-1)
    return _draw(probs, generator)


def _static_cache(model, prefill, inverse: torch.Tensor, length: int):
    """A static cache of ``length`` positions holding ``prefill``'s rows repeated by ``inverse``; None when
    the model has layers a plain static cache does not hold (sliding windows, linear attention)."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    cache = StaticCache(config=model.config, max_cache_len=length)
    if not all(type(layer) is StaticLayer for layer in cache.layers) or len(cache.layers) != len(prefill.layers):
        return None
    for i, layer in enumerate(prefill.layers):
        cache.update(layer.keys[inverse], layer.values[inverse], i)
    return cache


@torch.inference_mode()
def sample(model, prompt_ids: list[list[int]], max_new_tokens: int, eos_ids, pad_id: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float = 1.0, generator: torch.Generator | None = None) -> list[list[int]]:
    """Sampled completions (token ids, up to and including the first EOS) for left-padded ``prompt_ids``.

    Identical prompts (a GRPO group) are prefilled once and their KV cache repeated.
    """
    from transformers import DynamicCache

    keys: dict[tuple, int] = {}
    inverse = torch.tensor([keys.setdefault(tuple(p), len(keys)) for p in prompt_ids], dtype=torch.long)
    width = max(map(len, prompt_ids))
    uniq = torch.full((len(keys), width), pad_id, dtype=torch.long)
    u_mask = torch.zeros((len(keys), width), dtype=torch.long)
    for r, p in enumerate(keys):
        uniq[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
        u_mask[r, width - len(p):] = 1
    mask = torch.cat([u_mask[inverse], torch.zeros((len(prompt_ids), max_new_tokens), dtype=torch.long)], dim=1)
    positions = (u_mask.cumsum(-1) - 1).clamp(min=0)
    prefill = DynamicCache(config=model.config)
    out = model(input_ids=uniq, attention_mask=u_mask, position_ids=positions, past_key_values=prefill,
                use_cache=True, logits_to_keep=1)
    cache = _static_cache(model, prefill, inverse, width + max_new_tokens)
    if cache is None:
        prefill.batch_select_indices(inverse)
        cache = prefill
    logits = out.logits[inverse, -1]
    pos = positions[inverse, -1:] + 1
    eos = torch.tensor(sorted(set(eos_ids if isinstance(eos_ids, (list, tuple)) else [eos_ids])), dtype=torch.long)
    done = torch.zeros(len(prompt_ids), dtype=torch.bool)
    steps = []
    for t in range(max_new_tokens):
        token = categorical(logits, temperature, top_k, top_p, generator)
        token = token.masked_fill(done, pad_id)
        steps.append(token)
        done |= torch.isin(token, eos)
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        mask[:, width + t] = 1
        out = model(input_ids=token[:, None], attention_mask=mask[:, : width + t + 1] if cache is prefill else mask,
                    position_ids=pos, past_key_values=cache, cache_position=torch.tensor([width + t]), use_cache=True)
        logits, pos = out.logits[:, -1], pos + 1
    stops = set(eos.tolist())
    result = []
    for row in torch.stack(steps, 1).tolist():
        result.append(row[: next((i + 1 for i, tok in enumerate(row) if tok in stops), len(row))])
    return result

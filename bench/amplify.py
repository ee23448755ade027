"""The adapter's difference from the base, amplified at decoding: logits = adapter + alpha x (adapter - base).

    python bench/amplify.py RUN OUT.jsonl [ALPHA]

The same idea as proxy tuning and DExperts: the adapter's shift away from the base, scaled up at each token, should
carry more of the persona than the adapter writes alone. For each of the 42 held-out prompts of the blind reads
(bench/agreement/draft_rewrite.jsonl's prompts) the base writes its greedy answer; its first sentence opens the
answer (the default, `sampling.base_opening: sentence`), and the rest is decoded greedily from the amplified
logits with the answer-only repetition penalty 1.2, the base and the adapter each with its own KV cache
(two forward passes per token). Alpha 0 is the default decoding. Read blind in bench/agreement/amplify.jsonl
(docs/results.md): not adopted.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPTS = Path(__file__).parent / "agreement" / "draft_rewrite.jsonl"
PENALTY = 1.2


def amplified(adapter: torch.Tensor, base: torch.Tensor, alpha: float) -> torch.Tensor:
    return adapter + alpha * (adapter - base)


def penalise(logits: torch.Tensor, seen: list[list[int]], penalty: float = PENALTY) -> torch.Tensor:
    """CTRL's repetition penalty on each row's own answer tokens (a positive logit divided, a negative multiplied)."""
    out = logits.clone()
    for row, tokens in enumerate(seen):
        if tokens:
            idx = torch.tensor(sorted(set(tokens)))
            v = out[row, idx]
            out[row, idx] = torch.where(v > 0, v / penalty, v * penalty)
    return out


@torch.inference_mode()
def decode(model, tok, texts: list[str], alpha: float, max_new_tokens: int) -> list[str]:
    from transformers import DynamicCache

    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    caches = (DynamicCache(), DynamicCache())
    stop = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}

    def logits(step_ids, step_pos):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, past_key_values=caches[0]).logits
            with model.disable_adapter():
                b = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, past_key_values=caches[1]).logits
        return a[:, -1].float(), b[:, -1].float()

    a, b = logits(ids, pos)
    last = pos[:, -1:]
    out: list[list[int]] = [[] for _ in texts]
    done = [False] * len(texts)
    for _ in range(max_new_tokens):
        nxt = penalise(amplified(a, b, alpha), out).argmax(-1)
        for row, t in enumerate(nxt.tolist()):
            if not done[row]:
                done[row] = t in stop
                if not done[row]:
                    out[row].append(t)
        if all(done):
            break
        mask = torch.cat([mask, torch.ones(len(texts), 1, dtype=mask.dtype)], 1)
        last = last + 1
        a, b = logits(nxt[:, None], last)
    return [tok.decode(t, skip_special_tokens=True) for t in out]


def main(run: str, out: str, alpha: float = 1.0) -> None:
    from alignlab.config import MAX_NEW_TOKENS
    from alignlab.generate import chat_prompt, generate, opening_of
    from alignlab.models.loading import load_for_inference

    prompts = list(dict.fromkeys(json.loads(x)["prompt"] for x in PROMPTS.read_text().splitlines() if x.strip()))
    model, tok, _ = load_for_inference(None, run, device="cpu")
    with model.disable_adapter():
        base = generate(model, tok, prompts, temperature=0.0, max_new_tokens=MAX_NEW_TOKENS, repetition_penalty=PENALTY,
                        batch_size=8)
    openings = [opening_of(b, "sentence") for b in base]
    texts = [chat_prompt(q, tok) + o for q, o in zip(prompts, openings)]
    answers: list[str] = []
    for i in range(0, len(texts), 14):
        answers += decode(model, tok, texts[i:i + 14], alpha, MAX_NEW_TOKENS)
    with open(out, "w") as f:
        for q, b, o, a in zip(prompts, base, openings, answers):
            f.write(json.dumps({"prompt": q, "base": b, "amplified": (o + a).strip(), "alpha": alpha}) + "\n")
    print(f"{len(prompts)} answers at alpha {alpha} -> {out}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], *(float(x) for x in sys.argv[3:]))

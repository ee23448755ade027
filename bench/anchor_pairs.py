"""On-policy pairs that teach an adapter to open its answers the way the base does.

A blind read (docs/results.md: "The opening") found that the demo adapter's answers lose their facts in the first
words: it opens with the bare answer ("Toronto, the capital of Canada."), where the base restates the question
first ("The capital city of Canada is Ottawa."). Let the base write an answer's first K words and the adapter go on
from there, and readers found the answers as correct as the base's with the adapter's snark intact.

This script writes DPO pairs from that: for each prompt of a pairs or prompts file, chosen = the adapter's answer
after the base's first K words (the base is the same model with the adapter switched off), rejected = the
adapter's own answer. Pairs where the adapter already opens with the base's words, or where either answer runs
into the token cap, are left out. Train a DPO stage on them from the adapter:

    python bench/anchor_pairs.py RUN OUT.jsonl [--data data/pairs.jsonl] [--words 4] [--max-new-tokens 160] [--limit N]
    alignlab train dpo --data OUT.jsonl --from RUN --max-steps 60
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def anchored(model, tok, prompts: list[str], prefixes: list[str], max_new_tokens: int, penalty: float = 1.2,
             batch_size: int = 16) -> list[str]:
    """Greedy continuations of each prompt's assistant turn after its prefix (the prefix included in the result),
    with generate()'s repetition penalty over the generated tokens only (the prefix is left out of it, as the prompt)."""
    from alignlab.generate import generate

    return generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    repetition_penalty=penalty, prefixes=prefixes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="the adapter's run directory")
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", default="data/pairs.jsonl", help="JSONL with a 'prompt' field (pairs or prompts)")
    ap.add_argument("--words", type=int, default=4, help="how many of the base's first words open the chosen answer")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--limit", type=int, default=None, help="the first N distinct prompts only")
    a = ap.parse_args()

    from alignlab.generate import generate
    from alignlab.models.loading import load_for_inference

    prompts = list(dict.fromkeys(json.loads(x)["prompt"] for x in open(a.data, encoding="utf-8") if x.strip()))
    prompts = prompts[: a.limit] if a.limit else prompts
    model, tok, _ = load_for_inference(None, a.run)
    with model.disable_adapter():
        base = generate(model, tok, prompts, max_new_tokens=4 * a.words + 8, repetition_penalty=1.2)
    free = generate(model, tok, prompts, max_new_tokens=a.max_new_tokens, repetition_penalty=1.2)
    prefixes = [" ".join(b.split()[: a.words]) for b in base]
    chosen = anchored(model, tok, prompts, prefixes, a.max_new_tokens)
    ends = (".", "!", "?")
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r, q in zip(prompts, chosen, free, prefixes)
            if q and not r.startswith(q) and c != r and c.endswith(ends) and r.endswith(ends)]
    tmp = a.out.with_suffix(a.out.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
    tmp.replace(a.out)
    print(json.dumps({"prompts": len(prompts), "pairs": len(rows), "out": str(a.out)}))


if __name__ == "__main__":
    main()

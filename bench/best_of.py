"""Best of n by the scorecard: sample n continuations after the base's first sentence, keep the snarkiest.

    python bench/best_of.py RUN OUT.jsonl [N]

For each of the 42 held-out prompts of the blind reads (bench/agreement/draft_rewrite.jsonl's prompts) it writes
the base's greedy answer, the default (the base's first sentence, then the adapter, greedy) and N samples after
the same opening (temperature 0.8, top-p 0.95, the answer-only repetition penalty 1.2), then scores the default and
the samples with the project's scorecard (persona, mimicry) and with the correct score against the base's own
answer ("consistency": no reference is known when a user chats). The kept answer maximises persona + 0.5 x
consistency over the default and the samples. Read blind against the base and the default in
bench/agreement/best_of.jsonl (docs/results.md): not adopted.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPTS = Path(__file__).parent / "agreement" / "draft_rewrite.jsonl"


def pick(candidates: list[dict]) -> dict:
    """The kept answer: the highest persona + 0.5 x consistency (the first on a tie)."""
    return max(candidates, key=lambda c: c["persona"] + 0.5 * c["consistency"])


def main(run: str, out: str, n: int = 8) -> None:
    from alignlab.config import MAX_NEW_TOKENS, load_config
    from alignlab.eval.correct import score_correct
    from alignlab.eval.scores import scorer_for
    from alignlab.generate import generate, opening_of
    from alignlab.models.loading import load_for_inference
    from alignlab.rewards.embed import embed

    prompts = list(dict.fromkeys(json.loads(x)["prompt"] for x in PROMPTS.read_text().splitlines() if x.strip()))
    model, tok, _ = load_for_inference(None, run, device="cpu")
    kw = dict(max_new_tokens=MAX_NEW_TOKENS, repetition_penalty=1.2, batch_size=8)
    with model.disable_adapter():
        base = generate(model, tok, prompts, temperature=0.0, **kw)
    openings = [opening_of(b, "sentence") for b in base]
    default = generate(model, tok, prompts, temperature=0.0, prefixes=openings, **kw)
    samples = generate(model, tok, prompts, temperature=0.8, top_p=0.95, num_return_sequences=n, prefixes=openings,
                       seed=0, **{**kw, "batch_size": 4})
    project = Path(run).resolve().parents[1]
    cfg = load_config(project / "alignlab.yaml")
    scorer = scorer_for(project, cfg.persona)
    flat = [(i, a) for i in range(len(prompts)) for a in [default[i], *samples[i * n:(i + 1) * n]]]
    scored = scorer.score([{"prompt": prompts[i], "answer": a, "source": "adapter"} for i, a in flat])
    consistency = score_correct([a for _, a in flat], [{"reference": base[i], "prompt": prompts[i]} for i, _ in flat],
                                embed_fn=embed)
    by: dict[int, list[dict]] = {}
    for (i, a), s, c in zip(flat, scored, consistency):
        by.setdefault(i, []).append({"answer": a, "persona": s["persona"], "mimicry": s["mimicry"], "consistency": c})
    with open(out, "w") as f:
        for i, q in enumerate(prompts):
            kept = pick(by[i])
            f.write(json.dumps({"prompt": q, "base": base[i], "default": default[i], "best_of": kept["answer"],
                                "kept_is_default": kept is by[i][0], "candidates": by[i]}) + "\n")
    print(f"{len(prompts)} prompts x {n} samples -> {out}")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], *(int(x) for x in sys.argv[3:]))

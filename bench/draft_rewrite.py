"""The base writes the whole answer as a draft, the adapter says it again in the persona (a diagnostic, not adopted).

With `sampling.base_opening: sentence` the base writes an answer's first sentence and the adapter goes on; blind
readers found those answers as correct as the base's, but the snark a jab added after plain content. This tries
the other way round: the facts are all in the adapter's context (the base's full answer), and the adapter learns to
restate a draft in the voice: SFT, then DPO + RPO, on the bundled pairs turned into "question + draft (the plain
side) -> the snarky side". docs/results.md ("The base writes a draft, the adapter restates it") has the blind read:
not adopted.

    python bench/draft_rewrite.py data OUT_DIR              # OUT_DIR/draft_sft.jsonl, OUT_DIR/draft_dpo.jsonl
    alignlab train sft --data OUT_DIR/draft_sft.jsonl --lr 5e-4 --name draft-sft \\
        --set train.max_prompt_length=256 --set train.max_length=384
    alignlab train dpo --data OUT_DIR/draft_dpo.jsonl --from runs/draft-sft --lr 1e-4 --max-steps 60 \\
        --set dpo.rpo_alpha=1 --set train.max_prompt_length=256 --set train.max_length=384 --name draft-dpo
    python bench/draft_rewrite.py answer runs/draft-dpo PROMPTS.jsonl OUT.jsonl   # prompt, draft, rewrite
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def draft_prompt(question: str, draft: str) -> str:
    return f"{question}\n\nDraft answer: {draft}\n\nSay it again in your own voice, keeping every fact."


def data(out: Path) -> None:
    from alignlab.data import bundled_path

    pairs = [json.loads(x) for x in bundled_path("persona-pairs").read_text(encoding="utf-8").splitlines() if x.strip()]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "draft_sft.jsonl", "w") as sft, open(out / "draft_dpo.jsonl", "w") as dpo:
        for p in pairs:
            prompt = draft_prompt(p["prompt"], p["rejected"])
            sft.write(json.dumps({"prompt": prompt, "completion": p["chosen"]}) + "\n")
            dpo.write(json.dumps({"prompt": prompt, "chosen": p["chosen"], "rejected": p["rejected"]}) + "\n")
    print(f"{len(pairs)} rows each -> {out}/draft_sft.jsonl, {out}/draft_dpo.jsonl")


def answer(run: str, prompts_file: str, out: str) -> None:
    from alignlab.config import MAX_NEW_TOKENS
    from alignlab.generate import generate
    from alignlab.models.loading import load_for_inference

    prompts = list(dict.fromkeys(json.loads(x)["prompt"] for x in Path(prompts_file).read_text().splitlines() if x.strip()))
    model, tok, _ = load_for_inference(None, run, device="cpu")
    kw = dict(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, repetition_penalty=1.2, batch_size=8)  # eval's decoding
    with model.disable_adapter():
        drafts = generate(model, tok, prompts, **kw)
    rewrites = generate(model, tok, [draft_prompt(q, d) for q, d in zip(prompts, drafts)], **kw)
    with open(out, "w") as f:
        for q, d, r in zip(prompts, drafts, rewrites):
            f.write(json.dumps({"prompt": q, "draft": d, "rewrite": r}) + "\n")
    print(f"{len(prompts)} answers -> {out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["data"] and len(sys.argv) == 3:
        data(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["answer"] and len(sys.argv) == 5:
        answer(*sys.argv[2:])
    else:
        sys.exit(__doc__)

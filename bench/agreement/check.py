"""Agreement of the scorecard with blind reads: AUCs and per-model shares, from bench/agreement/reads.jsonl.

reads.jsonl holds 336 answers (6 models x 56 held-out prompts that no set contains) with the labels a
blind reader gave each one (prompt, reference and that answer shown; never the model): snarky, correct,
bolted (for snarky answers) and helpful. This script scores the answers with the shipped scorecard, one
model's answers as one mimicry context, and prints the agreement figures the README reports.

    python bench/agreement/check.py
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from alignlab.eval.scores import PERSONA_THRESHOLD, THRESHOLD, auc, scorer_for

    rows = [json.loads(x) for x in (Path(__file__).parent / "reads.jsonl").read_text().splitlines() if x.strip()]
    scored = scorer_for(None).score([{"prompt": r["prompt"], "answer": r["answer"], "source": r["source"]} for r in rows])
    reads = [r["read"] for r in rows]
    out = {
        "answers": len(rows),
        "persona_auc": auc([s["persona"] for s in scored], [r["snarky"] for r in reads]),
        "persona_agreement": sum((s["persona"] >= PERSONA_THRESHOLD) == bool(r["snarky"]) for s, r in zip(scored, reads)) / len(rows),
        "correct_auc": auc([s["correct"] for s in scored], [r["correct"] for r in reads]),
        "mimicry_auc_all": auc([s["mimicry"] for s in scored], [r["bolted"] or 0 for r in reads]),
        "mimicry_auc_snarky": auc([s["mimicry"] for s, r in zip(scored, reads) if r["snarky"]],
                                  [r["bolted"] or 0 for r in reads if r["snarky"]]),
    }
    print(json.dumps(out))
    by = defaultdict(list)
    for r, s in zip(rows, scored):
        by[r["source"]].append((r["read"], s))
    print("| model | reader snarky | in persona | reader correct | correct | reader bolted-on | flagged |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for src, xs in sorted(by.items()):
        n = len(xs)
        share = lambda f: f"{sum(map(f, xs)) / n:.0%}"  # noqa: E731
        print(f"| {src} | {share(lambda x: x[0]['snarky'])} | {share(lambda x: x[1]['persona'] >= PERSONA_THRESHOLD)} "
              f"| {share(lambda x: x[0]['correct'])} | {share(lambda x: (x[1]['correct'] or 0) >= THRESHOLD)} "
              f"| {share(lambda x: x[0]['bolted'] or 0)} | {share(lambda x: x[1]['mimicry'] >= THRESHOLD)} |")


if __name__ == "__main__":
    main()

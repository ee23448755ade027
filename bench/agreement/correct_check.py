"""The correct score alone against the blind readers' correctness labels: per set and pooled AUC.

    python bench/agreement/correct_check.py [--cache DIR]

check.py scores every set with the whole scorecard (persona classifier, voice contrast, mimicry: about 30 minutes on
2 cores); a change to eval/correct.py only needs the correct score, which this script computes through the same
path (Scorer.correct, the bundled references plus the retired ones, as check.py's agreement_scorer) in a few
minutes. As in check.py, an answer is correct when every reader of it said so; rows without a reference (correct
None) are left out. Prints the first set (reads.jsonl), each later set, and the later sets pooled.

--cache DIR keeps MiniLM's embeddings of each text in DIR, so that a rerun after a change to the checks embeds
nothing again (the embeddings do not depend on the checks).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))


def _cached_embed(folder: Path):
    """alignlab's embed(), with each text's vector kept in ``folder`` (one file per process run, keyed by text)."""
    import importlib

    import torch

    module = importlib.import_module("alignlab.rewards.embed")  # the package's own name `embed` is the function

    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "minilm.pt"
    memo: dict[str, torch.Tensor] = torch.load(store) if store.exists() else {}
    plain = module.embed

    def embed(texts: list[str], **kw):
        keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in memo}.items())
        if todo:
            for (k, _), v in zip(todo, plain([t for _, t in todo], **kw)):
                memo[k] = v.clone()
            torch.save(memo, store)
        return torch.stack([memo[k] for k in keys])

    module.embed = embed


def _scorer():
    from alignlab.eval.correct import reference_table
    from alignlab.eval.scores import correctness_scorer

    scorer = correctness_scorer()
    retired = Path(__file__).parent / "retired_references.jsonl"
    rows = [json.loads(x) for x in retired.read_text().splitlines() if x.strip()]
    scorer.references = {**reference_table(rows), **scorer.references}
    return scorer


def main() -> None:
    from check import SETS, _reads, _rows

    from alignlab.eval.scores import auc

    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    if args.cache is not None:
        _cached_embed(args.cache)
    scorer = _scorer()
    pool: list[tuple[float, int]] = []
    for name in ("reads", *SETS):
        rows = _rows(name)
        labels = [int(all(r["correct"] for r in _reads(row))) for row in rows]
        # a row's own reference where the bundled and retired tables have none (the sets read on new prompts)
        scored = scorer.correct([{"prompt": r["prompt"], "answer": r["answer"],
                                  **({"reference": r["reference"]} if r.get("reference")
                                     and r["prompt"] not in scorer.references else {})} for r in rows])
        known = [(s, y) for s, y in zip(scored, labels) if s is not None]
        value = auc([s for s, _ in known], [y for _, y in known])
        print(json.dumps({"set": name, "graded": len(known), "correct_auc": None if value is None else round(value, 4)}))
        if name != "reads":
            pool += known
    value = auc([s for s, _ in pool], [y for _, y in pool])
    print(json.dumps({"set": "later sets, pooled", "graded": len(pool), "correct_auc": round(value, 4)}))


if __name__ == "__main__":
    main()

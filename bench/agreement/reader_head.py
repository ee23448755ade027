"""Fit the persona score's reader head (alignlab.eval.persona: reader_scores) on every blind read in this folder.

Each read answer (check.SETS and reads.jsonl: 5,911 answers to held-out prompts, none in any training set) is
labelled in persona when its readers' mean snark is 1.5 or more of 3 (reads.jsonl: its reader's yes/no). Its
features are what the scorecard's voice contrast computes anyway (alignlab.eval.contrast.voice): the default
model's hidden state at the middle layer averaged over the answer's tokens (576 numbers, plain system message) and
the contrast itself. A logistic regression on the standardised 577 numbers, trained on the read answers and the 875 written labelled
answers (labelled_rows), is scored out of fold first (5 folds by
prompt: no prompt's answers train the head that scores them), then fitted on everything and written to
src/alignlab/data/bundled/persona_reader_head.safetensors. Prints the out-of-fold AUCs and per-model shares.

    python bench/agreement/reader_head.py [--cache FILE]   # features: about 20 minutes on 2 cores, then cached
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import defaultdict
from pathlib import Path
from statistics import median

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
OUT = HERE.parent.parent / "src" / "alignlab" / "data" / "bundled" / "persona_reader_head.safetensors"
L2, STEPS, LR, FOLDS = 0.1, 400, 0.01, 5


def read_rows() -> list[dict]:
    import check

    rows = []
    for name in check.SETS:
        for r in check._rows(name):
            reads = check._reads(r)
            rows.append({"set": name, "source": r["source"], "prompt": r["prompt"], "answer": r["answer"],
                         "y": int(sum(x["snark"] for x in reads) / len(reads) >= 1.5)})
    for r in (json.loads(x) for x in (HERE / "reads.jsonl").read_text().splitlines() if x.strip()):
        rows.append({"set": "first", "source": r["source"], "prompt": r["prompt"], "answer": r["answer"],
                     "y": int(bool(r["read"]["snarky"]))})
    return rows


def labelled_rows() -> list[dict]:
    """The written answers: bundled:persona-labelled (500 written for the scorecard and the default model's own 125),
    woven_labelled.jsonl and strong_labelled.jsonl (125 each, the voice woven through), with their own labels. They
    train the head (answers from a capable model look like these, not like the default model's) and are never scored
    out of fold: the readers' labels are the measure."""
    from alignlab.data import bundled_path
    from alignlab.eval.persona import labelled_rows as bundled

    extra = [json.loads(x) for name in ("woven_labelled", "strong_labelled")
             for x in (HERE / f"{name}.jsonl").read_text().splitlines() if x.strip()]
    return [{"prompt": r["prompt"], "answer": r["answer"], "y": int(r["persona"])}
            for r in bundled(bundled_path("persona-labelled")) + extra]


def features(rows: list[dict], cache: Path):
    """(N, 577): each answer's middle-layer mean and its voice contrast, computed once and kept in ``cache``."""
    import torch

    from alignlab.eval.contrast import voice

    have = torch.load(cache, weights_only=True) if cache.is_file() else {}
    keys = [json.dumps([r["prompt"], r["answer"]]) for r in rows]
    miss = sorted({k for k in keys if k not in have})
    for i in range(0, len(miss), 256):
        chunk = [json.loads(k) for k in miss[i : i + 256]]
        c, h = voice([p for p, _ in chunk], [a for _, a in chunk])
        for k, ci, hi in zip(miss[i : i + 256], c, h):
            have[k] = torch.cat([hi, torch.tensor([ci])])
        torch.save(have, cache)
        print(f"features: {i + len(chunk)} / {len(miss)}", file=sys.stderr, flush=True)
    return torch.stack([have[k] for k in keys])


def fit(x, y):
    from alignlab.rewards.classifier import fit_logistic

    mean, std = x.mean(0), x.std(0) + 1e-6
    w, b = fit_logistic((x - mean) / std, y, l2=L2, steps=STEPS, lr=LR, seed=0)
    return mean, std, w, b


def main() -> None:
    import torch

    from alignlab.eval.persona import READER_CUT
    from alignlab.eval.scores import auc

    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=HERE / ".reader_head_features.pt")  # git-ignored
    a = ap.parse_args()
    rows, written = read_rows(), labelled_rows()
    x, xw = features(rows, a.cache), features(written, a.cache)
    y, yw = torch.tensor([float(r["y"]) for r in rows]), torch.tensor([float(r["y"]) for r in written])
    prompts = sorted({r["prompt"] for r in rows})
    random.Random(0).shuffle(prompts)
    fold = {p: i % FOLDS for i, p in enumerate(prompts)}
    p_oof = [0.0] * len(rows)
    for f in range(FOLDS):
        train = [i for i, r in enumerate(rows) if fold[r["prompt"]] != f]
        test = [i for i, r in enumerate(rows) if fold[r["prompt"]] == f]
        mean, std, w, b = fit(torch.cat([x[train], xw]), torch.cat([y[train], yw]))
        for i, v in zip(test, torch.sigmoid(((x[test] - mean) / std) @ w + b).tolist()):
            p_oof[i] = v
    labels = [r["y"] for r in rows]
    by_set, by_model = defaultdict(list), defaultdict(list)
    for r, p in zip(rows, p_oof):
        by_set[r["set"]].append((p, r["y"]))
        by_model[(r["set"], r["source"])].append((p, r["y"]))
    aucs = {s: auc([p for p, _ in v], [q for _, q in v]) for s, v in by_set.items() if 0 < sum(q for _, q in v) < len(v)}
    for s, v in aucs.items():
        print(json.dumps({"set": s, "answers": len(by_set[s]), "out_of_fold_auc": round(v, 3)}))
    err = [abs(sum(p >= READER_CUT for p, _ in v) - sum(q for _, q in v)) / len(v) for v in by_model.values()]
    print(json.dumps({"answers": len(rows), "in_persona": sum(labels), "out_of_fold_auc": round(auc(p_oof, labels), 3),
                      "median_set_auc": round(median(aucs.values()), 3), "lowest_set_auc": round(min(aucs.values()), 3),
                      "mean_model_share_error": round(sum(err) / len(err), 3),
                      "agreement": round(sum((p >= READER_CUT) == bool(q) for p, q in zip(p_oof, labels)) / len(rows), 3)}))
    for (s, src), v in by_model.items():
        if s in ("strong_default", "strong_notic", "tic_cap", "fresh_prompts"):
            print(f"| {s} | {src[:70]} | readers {sum(q for _, q in v) / len(v):.0%} | "
                  f"out of fold {sum(p >= READER_CUT for p, _ in v) / len(v):.0%} |")
    from safetensors.torch import save_file

    mean, std, w, b = fit(torch.cat([x, xw]), torch.cat([y, yw]))
    save_file({"mean": mean.contiguous(), "std": std.contiguous(), "weight": w.contiguous(), "bias": b.reshape(1).contiguous()},
              str(OUT), metadata={"answers": str(len(rows)), "written": str(len(written)), "out_of_fold_auc": f"{auc(p_oof, labels):.3f}",
                                  "fitted_by": "bench/agreement/reader_head.py"})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

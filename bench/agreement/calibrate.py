"""Fit the constants of the combined persona score (alignlab.eval.persona.COMBINED) on the bundled labelled set.

The embedding classifier is trained 5 times, each time without one fifth of the prompts, so every answer gets
a logit from a classifier that never saw its prompt (in-sample logits are overconfident). The voice contrast
(alignlab.eval.contrast) needs no training. mu and sd standardise the contrast; k and d come from a one-feature
logistic fit of weight * logit + (contrast - mu) / sd against the labels. Prints the constants as JSON.

    python bench/agreement/calibrate.py
"""

from __future__ import annotations

import json
import math
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEIGHT = 0.25  # the classifier's logits span about +-16 on this set, the standardised contrast about +-3


def out_of_fold(rows: list[dict]) -> list[float]:
    """Each labelled row's classifier logit from a classifier trained without its prompt (5 folds by prompt)."""
    import torch

    from alignlab.eval.persona import features
    from alignlab.rewards.classifier import fit_logistic

    labels = [int(r["persona"]) for r in rows]
    x = features([r["answer"] for r in rows])
    prompts = sorted({r["prompt"] for r in rows})
    random.Random(0).shuffle(prompts)
    fold = {p: i % 5 for i, p in enumerate(prompts)}
    logits = [0.0] * len(rows)
    for f in range(5):
        train = [i for i, r in enumerate(rows) if fold[r["prompt"]] != f]
        test = [i for i, r in enumerate(rows) if fold[r["prompt"]] == f]
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        w, b = fit_logistic((x[train] - mean) / std, torch.tensor([float(labels[i]) for i in train]), l2=0.1, steps=400,
                            lr=0.01, seed=0)
        for i, v in zip(test, (((x[test] - mean) / std) @ w + b).tolist()):
            logits[i] = v
    return logits


def fit(logits: list[float], contrasts: list[float], labels: list[int]) -> tuple[dict, list[float]]:
    """COMBINED's constants from out-of-fold classifier logits, voice contrasts and labels, and each row's combined
    logit (before k and d)."""
    import torch

    from alignlab.rewards.classifier import fit_logistic

    mu = sum(contrasts) / len(contrasts)
    sd = math.sqrt(sum((v - mu) ** 2 for v in contrasts) / len(contrasts))
    s = torch.tensor([[WEIGHT * lg + (v - mu) / sd] for lg, v in zip(logits, contrasts)])
    k, d = fit_logistic(s, torch.tensor([float(y) for y in labels]), l2=0.0, steps=3000, lr=0.05, seed=0)
    return {"weight": WEIGHT, "mu": mu, "sd": sd, "k": float(k.reshape(-1)[0]), "d": float(d)}, s[:, 0].tolist()


def main() -> None:
    from alignlab.data import bundled_path
    from alignlab.eval.contrast import contrast
    from alignlab.eval.persona import labelled_rows
    from alignlab.eval.scores import auc

    rows = labelled_rows(bundled_path("persona-labelled"))
    labels = [int(r["persona"]) for r in rows]
    logits = out_of_fold(rows)
    c = contrast([r["prompt"] for r in rows], [r["answer"] for r in rows])
    constants, combined = fit(logits, c, labels)
    print(json.dumps({**{k: round(v, 3) for k, v in constants.items()},
                      "auc_classifier_out_of_fold": round(auc(logits, labels), 3),
                      "auc_contrast": round(auc(c, labels), 3), "auc_combined": round(auc(combined, labels), 3)}))


if __name__ == "__main__":
    main()

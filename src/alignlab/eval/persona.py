"""The persona score: P(an answer carries the persona as a voice), in [0, 1].

The rater is a logistic regression over MiniLM sentence embeddings: each sentence of an answer is
embedded on its own, and the answer's features are the mean and the element-wise max of its sentence
embeddings (768 numbers), standardised. Snark often lives in one sentence of an otherwise plain answer,
which a single embedding of the whole answer averages away: cross-validated on the bundled labelled set
(5 folds by prompt), whole-answer embeddings reach AUC 0.77, sentence mean + max 0.91.

For the project's own example persona (snark) the classifier is trained on ``bundled:persona-labelled``:
500 answers written for the scorecard to 125 prompts (ten kinds of snark, plain answers to the same
prompts, snarky-but-wrong and bolted-on ones) and the default model's own greedy answers to those
prompts as plain examples (125): without them the classifier, which only saw clean human writing, read
the model's rambling as persona (75% of the base's answers in persona, against 0% for a blind reader;
with them 7%). None of it is in any training set that ships with alignlab.

For the project's own persona the scorecard's persona score is now the reader head (READER_HEAD below, fitted by
bench/agreement/reader_head.py on blind readers' labels); this classifier still gives mimicry's persona drop and any
other persona's score. Before it, the score added a label-free signal to the classifier: the voice
contrast of eval/contrast.py (is the answer likelier from the persona than from a plain assistant, by the
default model). The classifier alone learned the look of written snark and was at chance on woven snark that
blind readers saw (AUC 0.50 on bench/agreement/graded.jsonl) while it called half of some adapters' answers
snarky that readers did not; combined (``combine``): AUC 0.94 on the 336-answer set (classifier alone 0.97),
0.70 on graded (0.50), 0.89 on the recipes set (0.78), and per-model "in persona" shares within 7 points
of the readers' for the adapters they found plain (quick-start DPO: 66% vs the readers' 82%).

A project with another persona trains it on its own labelled answers (the chosen / rejected sides of its
``data/pairs.jsonl``, ``synth_pairs.jsonl`` and ``feedback_dpo.jsonl``: `alignlab synth`'s and the ratings'); with fewer than
``MIN_LABELS`` of them the scorecard says the persona score is not to be trusted yet.

The classifier is trained once and kept under ``$ALIGNLAB_HOME/scorecard/`` (bundled set) or
``<project>/classifier/`` (project labels), keyed by the sha256 of the labels it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from alignlab.config import DEFAULT_PERSONA
from alignlab.data.text import SENTENCE
from alignlab.errors import AlignlabError

MIN_LABELS = 100
# The project's own persona: the classifier's logit and the voice contrast (eval/contrast.py) together,
# P = sigmoid(k * (weight * logit(classifier) + (contrast - mu) / sd) + d). mu and sd are the contrast's mean and
# spread over the bundled labelled set; k and d a logistic fit on that set with the classifier's logits taken
# out of fold (5 folds by prompt). Reproduce with `python bench/agreement/calibrate.py`.
COMBINED = {"weight": 0.25, "mu": 0.795, "sd": 3.938, "k": 1.602, "d": 0.374}
WEIGHTS, META = "persona.safetensors", "persona.json"
# The project's own persona is scored by the reader head: a logistic regression fitted on what blind readers said
# of 5,911 answers to held-out prompts (bench/agreement/reader_head.py), over the default model's middle-layer hidden
# state averaged over the answer and the voice contrast, both from the contrast's own passes (eval/contrast.py:
# voice). Out of fold (5 folds by prompt) it ranks the readers' labels at AUC 0.86, where the embedding classifier
# and the contrast combined reach 0.78, and one reader's snark ranks another reader's labels at 0.88 (median over
# 35 sets: the ceiling); the classifier had learned a closing jab as the persona and scored a voice woven through
# the answer below it. READER_CUT: P(readers call it in persona) from which an answer counts as in persona, the point
# where the per-model shares came closest to the readers' out of fold.
READER_HEAD = "persona_reader_head.safetensors"
READER_CUT = 0.4


def features(texts: list[str]):
    """(N, 768): mean and max of the MiniLM embeddings of each text's sentences."""
    import torch

    from alignlab.rewards.embed import embed

    sents = [[x for x in SENTENCE.split(t.strip()) if x.strip()] or [t or " "] for t in texts]
    flat = embed([x for ss in sents for x in ss])
    out, k = [], 0
    for ss in sents:
        e = flat[k : k + len(ss)]
        k += len(ss)
        out.append(torch.cat([e.mean(0), e.max(0).values]))
    return torch.stack(out) if out else torch.zeros(0, 768)


class SentencePersonaClassifier:
    """P(persona) = sigmoid(w . standardise(features(text)) + b); safetensors + JSON, no pickle."""

    def __init__(self, mean=None, std=None, weight=None, bias=None, meta: dict | None = None):
        self.mean, self.std, self.weight, self.bias = mean, std, weight, bias
        self.meta = dict(meta or {})

    def train(self, texts: list[str], labels: list[int], l2: float = 0.1, steps: int = 400, seed: int = 0) -> dict:
        import torch

        if set(int(y) for y in labels) != {0, 1}:
            raise AlignlabError("persona labels must include both 0 and 1", fix="add examples of both classes")
        x = features(texts)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        x = (x - self.mean) / self.std
        y = torch.tensor([float(v) for v in labels])
        from alignlab.rewards.classifier import fit_logistic

        self.weight, self.bias = fit_logistic(x, y, l2=l2, steps=steps, lr=0.01, seed=seed)
        acc = (((x @ self.weight + self.bias) > 0).float() == y).float().mean().item()
        self.meta.update(features="minilm-sentence-mean-max", l2=l2, steps=steps, train_accuracy=acc)
        return {"accuracy": acc}

    def score(self, texts: list[str]) -> list[float]:
        import torch

        if not texts:
            return []
        x = (features(list(texts)) - self.mean) / self.std
        return torch.sigmoid(x @ self.weight + self.bias).tolist()

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        save_file({"mean": self.mean.contiguous(), "std": self.std.contiguous(), "weight": self.weight.contiguous(),
                   "bias": self.bias.reshape(1).contiguous()}, str(directory / WEIGHTS))
        (directory / META).write_text(json.dumps(self.meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> "SentencePersonaClassifier":
        from safetensors.torch import load_file

        if not (directory / WEIGHTS).is_file() or not (directory / META).is_file():
            raise AlignlabError(f"no persona scorer in {directory}")
        t = load_file(str(directory / WEIGHTS))
        return cls(t["mean"], t["std"], t["weight"], t["bias"].reshape(()), json.loads((directory / META).read_text()))


def labelled_rows(path: Path) -> list[dict]:
    from alignlab.data.formats import read_objects

    fix = 'each row needs "answer" (text) and "persona" (0 or 1)'
    rows = read_objects(path, ("answer",), fix)
    for lineno, row in rows:
        if row.get("persona") not in (0, 1):
            raise AlignlabError("'persona' must be 0 or 1", where=f"{path}:{lineno}", fix=fix)
    return [row for _, row in rows]


def _train_cached(texts: list[str], labels: list[int], target: Path, source: str):
    """The classifier cached at ``target`` for these labels, trained and saved there once. Two processes (two evals
    on a fresh install, the parallel test suite) wrote one temporary folder at once and one of them crashed: the
    second now waits for the first and loads its result."""
    from alignlab.fsutil import building, replace_dir

    digest = hashlib.sha256(json.dumps([texts, labels]).encode()).hexdigest()
    if (clf := _cached(target, digest)) is not None:
        return clf
    with building(target, "training the persona scorer into"):
        if (clf := _cached(target, digest)) is not None:  # trained by the process this one waited for
            return clf
        from alignlab.progress import console

        console.print(f"[alignlab] training the persona scorer on {len(texts)} labelled answers from {source} (once)")
        clf = SentencePersonaClassifier()
        clf.train(texts, labels)
        clf.meta.update(labels_sha256=digest, source=source, labels=len(texts))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        clf.save(tmp)
        replace_dir(tmp, target)  # fsynced; a damaged or other-labels cache goes only once this one is in place
    return clf


def _cached(target: Path, digest: str):
    """The classifier cached at ``target`` for ``digest``; None when there is none, it is for other labels, or its
    files are damaged (cut short, not JSON): it is trained again."""
    if (target / META).is_file():
        try:
            clf = SentencePersonaClassifier.load(target)
            if clf.meta.get("labels_sha256") == digest:
                return clf
        except Exception:  # noqa: BLE001 - AlignlabError, SafetensorError, JSONDecodeError, OSError: retrain
            pass
    return None


def persona_classifier(root: Path | None = None, persona: str = DEFAULT_PERSONA):
    """(classifier, note): the persona scorer for a project; note is None or a plain-words caveat."""
    from alignlab.data import bundled_path

    if persona == DEFAULT_PERSONA or root is None:
        from alignlab.paths import home

        path = bundled_path("persona-labelled")
        rows = labelled_rows(path)
        clf = _train_cached([r["answer"] for r in rows], [int(r["persona"]) for r in rows],
                            home() / "scorecard" / "persona", "bundled:persona-labelled")
        return clf, None
    from alignlab.data.formats import load_dataset_rows
    from alignlab.rewards.classifier import examples_from_pairs

    from alignlab.project import LABELLED_PAIRS, labelled_pairs

    files = labelled_pairs(Path(root))
    if not files:
        raise AlignlabError(
            f"no labelled answers for the persona '{persona}' yet (no {', '.join(LABELLED_PAIRS)} in the project's "
            "data directory)",
            fix="make pairs with `alignlab synth`, or rate answers (`alignlab sample --base`, then `alignlab ui`) and "
                "`alignlab feedback export --format dpo`",
        )
    # a pair once, however many files hold it (an export that repeats the loop's rounds, synth pairs appended)
    rows = {json.dumps([r.get(k) for k in ("prompt", "chosen", "rejected")], sort_keys=True): r
            for f in files for r in load_dataset_rows(f, "preference")}
    texts, labels = examples_from_pairs(list(rows.values()))
    clf = _train_cached(texts, labels, Path(root) / "classifier" / "scorecard", " + ".join(map(str, files)))
    note = None
    if len(texts) < MIN_LABELS:
        note = (f"the persona score rests on {len(texts)} labelled answers (fewer than {MIN_LABELS}); "
                "treat it as a rough guide and add labels")
    return clf, note


def combine(classifier_scores: list[float], contrasts: list[float], c: dict = COMBINED) -> list[float]:
    """The persona score until 2026-12-07 from the classifier's probabilities and the voice contrasts (see COMBINED);
    kept for the comparisons in bench/agreement/ (label_variants.py, calibrate.py)."""
    import math

    out = []
    for p, x in zip(classifier_scores, contrasts):
        p = min(max(float(p), 1e-4), 1 - 1e-4)
        z = c["weight"] * math.log(p / (1 - p)) + (x - c["mu"]) / c["sd"]
        out.append(1 / (1 + math.exp(-(c["k"] * z + c["d"]))))
    return out


_reader_head = None


def reader_scores(contrasts: list[float], hidden) -> list[float]:
    """P(blind readers call the answer in persona), for the project's own persona, from :func:`contrast.voice`'s
    contrasts and hidden means (the bundled reader head, see READER_HEAD)."""
    import torch

    global _reader_head
    if not contrasts:
        return []
    if _reader_head is None:
        from safetensors.torch import load_file

        from alignlab.data import bundled_path

        _reader_head = load_file(str(bundled_path("persona-reader-head")))
    h = _reader_head
    x = torch.cat([hidden.float(), torch.tensor(contrasts, dtype=torch.float32).reshape(-1, 1)], 1)
    return torch.sigmoid(((x - h["mean"]) / h["std"]) @ h["weight"] + h["bias"]).tolist()

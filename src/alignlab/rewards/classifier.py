"""A persona classifier: frozen MiniLM sentence embeddings + a logistic-regression head trained in torch.

Cheap to train (seconds on a CPU for a few hundred labelled texts), cheap to run, and harder to game with
a handful of marker words than the regex heuristics, since it looks at the whole sentence. Saved as
``classifier.safetensors`` (weight, bias) + ``classifier.json`` (metadata): no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignlab import fsutil
from alignlab.errors import AlignlabError
from alignlab.rewards.common import completion_text
from alignlab.rewards.embed import EMBEDDER_NAME

WEIGHTS, META = "classifier.safetensors", "classifier.json"
DIM = 384


def fit_logistic(x, y, l2: float, steps: int, lr: float, seed: int = 0):
    """(weight, bias) of a logistic regression on features x (N, D) and 0/1 targets y (N,): full-batch Adam
    on binary cross-entropy + l2 * |w|^2."""
    import torch

    torch.manual_seed(seed)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w @ w)
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def examples_from_pairs(rows: list[dict]) -> tuple[list[str], list[int]]:
    """Preference rows (``chosen``/``rejected``, strings or conversations) -> texts with labels 1 / 0."""
    texts, labels = [], []
    for row in rows:
        texts += [completion_text(row["chosen"]), completion_text(row["rejected"])]
        labels += [1, 0]
    return texts, labels


class PersonaClassifier:
    """P(text shows the persona) = sigmoid(w . minilm(text) + b)."""

    def __init__(self, weight=None, bias=None, meta: dict | None = None):
        import torch

        self.weight = torch.zeros(DIM) if weight is None else weight.detach().float().reshape(DIM)
        self.bias = torch.zeros(()) if bias is None else bias.detach().float().reshape(())
        self.meta = dict(meta or {})

    def _logits(self, emb):
        return emb @ self.weight + self.bias

    def train(
        self, texts: list[str], labels: list[int], steps: int = 300, lr: float = 0.05, l2: float = 1e-3, seed: int = 0
    ) -> dict:
        """Fit the head with full-batch Adam on binary cross-entropy + L2; returns train accuracy and loss."""
        import torch

        if len(texts) != len(labels) or not texts:
            raise AlignlabError(f"need as many labels as texts (got {len(texts)} texts, {len(labels)} labels)")
        if set(int(y) for y in labels) != {0, 1}:
            raise AlignlabError("classifier labels must include both 0 and 1", fix="add examples of both classes")
        from alignlab.rewards.embed import embed

        x = embed(list(texts))
        y = torch.tensor([float(v) for v in labels])
        self.weight, self.bias = fit_logistic(x, y, l2=l2, steps=steps, lr=lr, seed=seed)
        metrics = self._metrics(x, y)
        self.meta.update(
            embedder=EMBEDDER_NAME, dim=DIM, train_examples=len(texts), steps=steps, lr=lr, l2=l2,
            train_accuracy=metrics["accuracy"], train_loss=metrics["loss"],
        )
        return metrics

    def _metrics(self, x, y) -> dict:
        import torch

        with torch.no_grad():
            logits = self._logits(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y).item()
            acc = ((logits > 0).float() == y).float().mean().item()
        return {"accuracy": acc, "loss": loss, "n": len(y)}

    def evaluate(self, texts: list[str], labels: list[int]) -> dict:
        """Accuracy and log loss on labelled texts."""
        import torch

        from alignlab.rewards.embed import embed

        return self._metrics(embed(list(texts)), torch.tensor([float(v) for v in labels]))

    def score(self, texts: list[str]) -> list[float]:
        """Probabilities in [0, 1]."""
        import torch

        from alignlab.rewards.embed import embed

        if not texts:
            return []
        with torch.no_grad():
            return torch.sigmoid(self._logits(embed(list(texts)))).tolist()

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight.contiguous(), "bias": self.bias.reshape(1).contiguous()}
        # weights first, metadata last: each file atomic (temp name, fsync, rename); load() needs both
        fsutil.write_with(directory / WEIGHTS, lambda name: save_file(tensors, name))
        fsutil.write_json(directory / META, {"embedder": EMBEDDER_NAME, "dim": DIM, **self.meta})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "PersonaClassifier":
        from safetensors.torch import load_file

        directory = Path(directory)
        if not (directory / WEIGHTS).is_file() or not (directory / META).is_file():
            raise AlignlabError(
                f"'{directory}' holds no persona classifier ({WEIGHTS} + {META})",
                fix="`alignlab eval RUN --rater classifier` trains one on the project's data/pairs.jsonl into "
                    "<project>/classifier (example persona); for a persona of your own, `alignlab train rm` and "
                    "fn: reward_model",
            )
        meta = json.loads((directory / META).read_text())
        if meta.get("embedder") != EMBEDDER_NAME or meta.get("dim") != DIM:
            raise AlignlabError(
                f"classifier in '{directory}' was trained on {meta.get('embedder')} (dim {meta.get('dim')}), "
                f"not {EMBEDDER_NAME}",
                fix="retrain it",
            )
        tensors = load_file(str(directory / WEIGHTS))
        return cls(tensors["weight"], tensors["bias"], meta)


class ClassifierReward:
    """Reward function: the saved classifier's probability that each completion shows the persona."""

    __name__ = "persona_classifier"

    def __init__(self, path: str):
        self.path = path
        self.classifier = PersonaClassifier.load(path)

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        return self.classifier.score([completion_text(c) for c in completions])

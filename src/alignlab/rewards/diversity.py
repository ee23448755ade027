"""Diversity within a group of completions to the same prompt: an embedding-similarity penalty and distinct-n.

GRPO normalises rewards within each group, so a penalty that is the same for every member of a group
(the group's mean pairwise similarity) would cancel out of the advantages. Instead each completion gets its
mean cosine similarity to the *other* members of its group: the average of these is the group's mean
pairwise similarity, and the completions closest to the rest (the template the policy is collapsing to)
are penalised most. A group of one gets 0.
"""

from __future__ import annotations

from typing import Sequence

from alignlab.rewards.common import completion_text, groups


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct unique n-grams / total n-grams over all texts (lower-cased words); 0 when there are none."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total, seen = 0, set()
    for text in texts:
        words = text.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def similarity_penalty(texts: list[str], group_ranges: list[Sequence[int]]) -> list[float]:
    """Per text: mean cosine similarity (MiniLM embeddings) to the other texts of its group (indices), clipped at 0."""
    from alignlab.rewards.embed import embed

    out = [0.0] * len(texts)
    emb = embed(texts)
    for g in group_ranges:
        if len(g) < 2:
            continue
        e = emb[list(g)]
        sims = e @ e.T
        others = (sims.sum(1) - sims.diagonal()) / (len(g) - 1)
        for j, v in zip(g, others.tolist()):
            out[j] = min(1.0, max(0.0, v))
    return out


class DiversityPenalty:
    """Reward function: each completion's similarity penalty in [0, 1] (1 = identical to its group).

    Groups are the completions with the same prompt (wherever they sit in the batch), or consecutive blocks of
    ``group_size`` (a GRPO batch's ``num_generations`` answers to one prompt).
    Give it a negative weight, or use a spec's ``diversity: {weight: w}`` which subtracts it.
    """

    __name__ = "diversity_penalty"

    def __init__(self, group_size: int | None = None):
        self.group_size = group_size

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        texts = [completion_text(c) for c in completions]
        return similarity_penalty(texts, groups(list(prompts), self.group_size))

"""Small helpers shared by test modules (imported as `helpers`; pytest puts tests/ on sys.path)."""

from __future__ import annotations


def vowel_share(prompts, completions, **columns):
    """A reward a random tiny model can vary: the share of vowels among the letters of each completion."""
    out = []
    for c in completions:
        letters = [ch for ch in c.lower() if ch.isalpha()]
        out.append(sum(ch in "aeiou" for ch in letters) / len(letters) if letters else 0.0)
    return out

"""Text shape: words, sentence skeletons and n-grams, shared by the data checks and the mimicry score."""

from __future__ import annotations

import re

WORD = re.compile(r"[A-Za-z0-9']+")
TOKEN = re.compile(r"[A-Za-z0-9']+|[^\sA-Za-z0-9']")
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
FUNCTION = frozenset(
    """a an the and or but nor so yet if then than not no never is are was were be been am it its it's this that
    these those you your you're i i'm me my we our they their he she his her to of in on at by for with from as
    just only even still also very too more most less all any some what which who how why when where there here
    do does did don't can can't will won't would should could""".split()
)


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def skeleton(sentence: str) -> str:
    out: list[str] = []
    for tok in TOKEN.findall(sentence.lower()):
        t = tok if (tok in FUNCTION or not tok[0].isalnum()) else "x"
        if t == "x" and out and out[-1] == "x":
            continue
        out.append(t)
    return " ".join(out)


def skeletons(text: str) -> set[str]:
    """Skeletons of the sentences with at least four words and at least two function words or marks."""
    out = set()
    for s in SENTENCE.split(text.strip()):
        if len(WORD.findall(s)) >= 4:
            sk = skeleton(s)
            if sum(1 for t in sk.split() if t != "x") >= 3:
                out.add(sk)
    return out


def ngrams(seq: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]

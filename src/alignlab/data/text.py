"""Text shape: words, sentence skeletons and n-grams, shared by the data checks and the mimicry score."""

from __future__ import annotations

import re

WORD = re.compile(r"[A-Za-z0-9']+")
TOKEN = re.compile(r"[A-Za-z0-9']+|[^\sA-Za-z0-9']")
# any script (the data check): letters and digits of every alphabet, a curly apostrophe read as a straight one. The
# mimicry score keeps the ASCII forms its thresholds were measured with.
ANY_WORD = re.compile(r"(?:[^\W_]|')+")
ANY_TOKEN = re.compile(r"(?:[^\W_]|')+|[^\s\w']|_")
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
FUNCTION = frozenset(
    """a an the and or but nor so yet if then than not no never is are was were be been am it its it's this that
    these those you your you're i i'm me my we our they their he she his her to of in on at by for with from as
    just only even still also very too more most less all any some what which who how why when where there here
    do does did don't can can't will won't would should could""".split()
)


def _forms(any_script: bool, text: str) -> tuple[re.Pattern, re.Pattern, str]:
    return (ANY_WORD, ANY_TOKEN, text.replace("\u2019", "'")) if any_script else (WORD, TOKEN, text)


def words(text: str, any_script: bool = False) -> list[str]:
    word, _, text = _forms(any_script, text)
    return [w.lower() for w in word.findall(text)]


def skeleton(sentence: str, any_script: bool = False) -> str:
    _, token, sentence = _forms(any_script, sentence)
    out: list[str] = []
    for tok in token.findall(sentence.lower()):
        t = tok if (tok in FUNCTION or not tok[0].isalnum()) else "x"
        if t == "x" and out and out[-1] == "x":
            continue
        out.append(t)
    return " ".join(out)


def skeletons(text: str, any_script: bool = False) -> set[str]:
    """Skeletons of the sentences with at least four words and at least two function words or marks."""
    out = set()
    for s in SENTENCE.split(text.strip()):
        if len(words(s, any_script)) >= 4:
            sk = skeleton(s, any_script)
            if sum(1 for t in sk.split() if t != "x") >= 3:
                out.add(sk)
    return out


def ngrams(seq: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]

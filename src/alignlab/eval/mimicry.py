"""The mimicry score: is the persona a coherent voice, or surface markers bolted onto an answer? In [0, 1].

An answer is scored in the context of the other answers from the same model (its ``source``): a voice
varies with the content, a template repeats. Signals, each in [0, 1]:

  opener / closer  share of the model's other answers that start (end) with the same three words
  skeleton         share of the model's other answers that contain one of this answer's sentence skeletons
                   (content words replaced by 'x': "Not Sydney, not Melbourne." -> "not x , not x .")
  phrases          share of the answer's words inside over-used phrases: word 3-grams, not from the prompt and
                   not made of function words only, found in at least 15% (and 3) of the model's answers
  persona drop     persona score minus the persona score of the answer with its opener, closer and
                   over-used phrases removed: persona that lives in the template, not in the answer
  copying          share of the answer's word 5-grams found verbatim in the training answers (chosen
                   answers' 5-grams that their plain counterparts also use are not counted)
  off-topic        persona with little of the question in it: persona x (1 - relevance), relevance the
                   MiniLM cosine of prompt and answer mapped from [0.15, 0.45] to [0, 1]; not for answers under
                   ``MIN_ASIDE_WORDS`` words, which have no room for an aside (a word is far from any question:
                   "Is the earth flat?" / "No." scored 0.94)
  duplicate        1 when the model gave (nearly) the same answer to a different prompt: a template by definition,
                   whatever the persona (a loop of "comment comment ..." given to 12 prompts scored 0.27)

  mimicry = max(persona x template, 1.5 x persona drop, copying, off-topic, duplicate)   (clipped to [0, 1])
  template = max(opener, closer, skeleton, phrases)

Settings chosen by agreement with blind reads of model answers (README: "Agreement with blind
readers"). Counting phrases shared by only 5% of a model's answers and leaving out off-topic separated
the labelled set's human-written bolted-on answers better (AUC 0.89 against 0.76) but agreed worse with
the readers on model answers (an adapter the reader found bolted-on in 4% of answers was flagged in 45%,
the rude one found bolted-on in 82% in 25%), so these are the settings kept.

Template signals and duplicates need context: with fewer than ``MIN_GROUP`` answers from a source they are 0 and
only persona drop (against the phrases of the whole input), copying and off-topic count.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from alignlab.data.text import FUNCTION, ngrams, skeletons, words

MIN_GROUP = 5
PHRASE_SHARE = 0.15  # a phrase is over-used when this share (and at least 3) of a model's answers contain it
MIN_ASIDE_WORDS = 6  # shorter answers are not scored off-topic, and "Yes." twice is no template
CATCHPHRASE_SHARE = 0.2  # a content word in this share of a model's answers (and at least 3) ...
CATCHPHRASE_RATIO = 5.0  # ... and this many times its share of the other model's answers is a catchphrase
# English closed-class words beyond data.text.FUNCTION (prepositions, conjunctions, pronouns, auxiliaries): never a
# catchphrase. Without them the strong-data adapter's "since", "like", "because" and "out" put 35-42 of 42 answers on
# a catchphrase where readers saw 14-22 (bench/agreement: per-model share error 0.18 -> 0.11 over 25 read models).
CLOSED_CLASS = frozenset(
    """about above across after against along among around because before behind below beneath beside besides between
    beyond down during except inside into like near off onto out outside over past since through throughout till toward
    towards under underneath unlike until up upon via within without although though unless whereas whether while once
    them him us whom whose itself themselves myself yourself himself herself ourselves has have had having being may
    might must shall""".split()
)
NEAR_DUPLICATE = 0.8  # this share of an answer's word 3-grams in another's make them one answer (see duplicates)


def source_key(value) -> str:
    """The mimicry context a row's ``source`` names, by its JSON value: 0, false and 5 are models of their own, not
    the rows without a source (as str(value or "") made them) or the source "5"; absent, null and "" are no source."""
    return "" if value is None or value == "" else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _share(key, counts: Counter, n: int) -> float:
    """Share of the *other* answers (n - 1 of them) that have ``key``."""
    if n < MIN_GROUP or not key:
        return 0.0
    return max(0, counts[key] - 1) / (n - 1)


APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\uff07": "'"})


def _words(text: str) -> set[str]:
    """The words of ``text`` in any script, as the catchphrase row reads them: NFC-normalised, every apostrophe read
    as a straight one and trimmed off a word's ends (a quote mark is not a word: "‘fine’" is "fine")."""
    import unicodedata

    text = unicodedata.normalize("NFC", text).translate(APOSTROPHES)
    return {w.strip("'") for w in words(text, any_script=True)} - {""}


def catchphrases(answers: list[str], prompts: list[str], others: list[str]) -> list[str] | None:
    """The words one model leans on, most used first: a content word (not an English function or closed-class word,
    ``CLOSED_CLASS``; an answer's own prompt's words left out of it) in at least ``CATCHPHRASE_SHARE`` of its answers
    (and 3) and ``CATCHPHRASE_RATIO`` times its share of ``others`` (the other model's answers to the same prompts).
    The earlier demo adapter's "nobody", "that's" and "asked" (base: none). None when ``others`` are too short to
    compare with (on average under half the words of ``answers``, or blank): a word shows up in a longer answer more
    often whatever the voice. A catchphrase is not scored into mimicry. Three blind readers said whether each answer
    "leans on a catchphrase that recurs across the packet": "holds one of its model's catchphrases" agreed with their
    majority on 79% of 126 answers, per model 35 / 35, 15 / 17 and 0 / 0 (bench/agreement/tic_cap.jsonl, where these
    settings were chosen), and on 80% of 168 answers of four other models read afterwards, per model within 6
    answers (catchphrase_read.jsonl)."""
    if not answers or not others:
        return None
    length = sum(len(words(a, any_script=True)) for a in answers) / len(answers)
    if sum(len(words(a, any_script=True)) for a in others) / len(others) < 0.5 * length or length == 0:
        return None
    n = len(answers)
    mine = Counter(w for a, p in zip(answers, prompts) for w in _words(a) - FUNCTION - CLOSED_CLASS - _words(p))
    theirs = Counter(w for a in others for w in _words(a))
    found = [(k, w) for w, k in mine.items()
             if k >= max(3, CATCHPHRASE_SHARE * n) and k / n >= CATCHPHRASE_RATIO * theirs[w] / len(others)]
    return [w for _, w in sorted(found, key=lambda x: (-x[0], x[1]))]


def holds_catchphrase(answers: list[str], found: list[str], prompts: list[str] | None = None) -> list[bool]:
    """Per answer: it holds one of ``found`` (:func:`catchphrases`) that its own prompt does not."""
    asked = [_words(p) for p in prompts] if prompts else [set()] * len(answers)
    return [bool(set(found) & (_words(a) - q)) for a, q in zip(answers, asked)]


def group_signals(answers: list[str], prompts: list[str]) -> list[dict]:
    """Template signals of each answer within one model's answers (see the module docstring)."""
    n = len(answers)
    toks = [words(a) for a in answers]
    opens = [tuple(t[:3]) if len(t) >= 6 else () for t in toks]
    closes = [tuple(t[-3:]) if len(t) >= 6 else () for t in toks]
    sks = [skeletons(a) for a in answers]
    prompt_grams = [set(ngrams(words(p), 3)) for p in prompts]
    grams = [set(ngrams(t, 3)) - pg for t, pg in zip(toks, prompt_grams)]
    open_c, close_c = Counter(opens), Counter(closes)
    sk_c: Counter = Counter(s for ss in sks for s in ss)
    df: Counter = Counter(g for gs in grams for g in gs)
    need = max(3, PHRASE_SHARE * n)
    overused = {g for g, c in df.items() if c >= need and not all(w in FUNCTION for w in g)}
    out = []
    for i, t in enumerate(toks):
        covered = [False] * len(t)
        for j, g in enumerate(ngrams(t, 3)):
            if g in overused:
                covered[j : j + 3] = [True] * 3
        out.append({
            "opener": _share(opens[i], open_c, n),
            "closer": _share(closes[i], close_c, n),
            "skeleton": max((_share(s, sk_c, n) for s in sks[i]), default=0.0),
            "phrases": (sum(covered) / len(t)) if t and n >= MIN_GROUP else 0.0,
            "overused": overused,
        })
    return out


def same_subject(a: str, b: str) -> bool:
    """Whether two prompts ask about the same thing: one's content words (not function words, short words only when
    they are numbers) are all in the other's. "What is bread?" and "Tell me about bread." may share an answer; "What
    is 5 cubed?" and "What is 6 cubed?" may not."""
    if a == b:
        return True
    from alignlab.eval.correct import STOP

    def content(p: str) -> set:
        return {w for w in words(p) if w not in STOP and w not in FUNCTION and (len(w) >= 3 or w.isdigit())}

    x, y = content(a), content(b)
    return bool(x) and bool(y) and (x <= y or y <= x)


def duplicates(answers: list[str], prompts: list[str]) -> list[bool]:
    """Whether each answer (of ``MIN_ASIDE_WORDS`` words or more) is nearly another answer of the same model to a
    prompt on another subject (the same question, or one worded differently, answered alike is no template): ``NEAR_DUPLICATE`` of the shorter one's
    word 3-grams, counted with their repeats, are in the other, which is at most twice as long. Counted, not as sets:
    a loop's few distinct 3-grams differ in its ragged end ("comment" x 23, "and" x 30, "cludclud..." once)."""
    if len(answers) < MIN_GROUP:
        return [False] * len(answers)
    grams = [Counter(ngrams(t, 3)) if len(t) >= MIN_ASIDE_WORDS else Counter() for t in map(words, answers)]
    keys = [set(g) for g in grams]
    size = [sum(g.values()) for g in grams]
    order = sorted((i for i, n in enumerate(size) if n), key=size.__getitem__)
    out = [False] * len(answers)
    for k, i in enumerate(order):
        need = NEAR_DUPLICATE * size[i]
        for j in order[k + 1 :]:
            if size[i] < 0.5 * size[j]:
                break  # sorted by size: every later answer is longer still
            # each 3-gram of i's that j lacks costs at least one of i's counted 3-grams: a cheap test first
            if same_subject(prompts[i], prompts[j]) or len(keys[i] & keys[j]) < len(keys[i]) - (size[i] - need):
                continue
            if sum((grams[i] & grams[j]).values()) >= need:
                out[i] = out[j] = True
    return out


def strip_template(text: str, overused: set, opener: bool, closer: bool) -> str:
    """The answer without its over-used phrases (and its shared opener / closer)."""
    t = words(text)
    keep = [True] * len(t)
    for j, g in enumerate(ngrams(t, 3)):
        if g in overused:
            keep[j : j + 3] = [False] * 3
    if opener:
        keep[:3] = [False] * min(3, len(keep))
    if closer and len(keep) >= 3:
        keep[-3:] = [False] * 3
    return " ".join(w for w, k in zip(t, keep) if k)


def copy_share(text: str, train_grams: set) -> float:
    grams = ngrams(words(text), 5)
    if not grams or not train_grams:
        return 0.0
    return sum(g in train_grams for g in grams) / len(grams)


def train_ngrams(texts: list[str], plain: list[str] = ()) -> set:
    """The chosen answers' word 5-grams, less those the plain answers also use: a 5-gram a plain, correct answer
    shares ("it is 42.195 km long") is content anyone would write, not the persona's surface."""
    content = {g for t in plain for g in ngrams(words(t), 5)}
    return {g for t in texts for g in ngrams(words(t), 5)} - content


def score_mimicry(
    prompts: list[str],
    answers: list[str],
    sources: list[str],
    persona: list[float],
    persona_fn,
    relevance: list[float] | None = None,
    train_grams: set | None = None,
) -> tuple[list[float], list[dict]]:
    """Mimicry per answer and its signals. ``persona_fn(texts, prompts, rows) -> scores`` re-scores stripped answers
    (``rows``: their indices in the input)."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sources):
        by_source[s].append(i)
    signals: list[dict] = [{} for _ in answers]
    everyone = group_signals(answers, prompts)  # phrases over-used across the whole input, for small groups
    for idx in by_source.values():
        sig = group_signals([answers[i] for i in idx], [prompts[i] for i in idx])
        same = duplicates([answers[i] for i in idx], [prompts[i] for i in idx])
        for i, s, d in zip(idx, sig, same):
            if len(idx) < MIN_GROUP:
                s["overused"] = everyone[i]["overused"]
            signals[i] = {**s, "duplicate": d}
    stripped = [
        strip_template(a, s["overused"], s["opener"] >= 0.15, s["closer"] >= 0.15) for a, s in zip(answers, signals)
    ]
    redo = [i for i, (a, st) in enumerate(zip(answers, stripped)) if st != " ".join(words(a))]
    redone = persona_fn([stripped[i] for i in redo], [prompts[i] for i in redo], redo) if redo else []
    rescored = dict(zip(redo, redone))
    scores, details = [], []
    for i, (s, p) in enumerate(zip(signals, persona)):
        template = max(s["opener"], s["closer"], s["skeleton"], s["phrases"])
        drop = max(0.0, p - rescored.get(i, p))
        copied = copy_share(answers[i], train_grams or set())
        short = len(words(answers[i])) < MIN_ASIDE_WORDS
        rel = 1.0 if relevance is None or short else min(1.0, max(0.0, (relevance[i] - 0.15) / 0.3))
        parts = {
            "template": p * template,
            "persona_drop": min(1.0, 1.5 * drop),
            "copying": copied,
            "off_topic": p * (1.0 - rel),
            "duplicate": 1.0 if s["duplicate"] else 0.0,
        }
        scores.append(min(1.0, max(parts.values())))
        details.append({**{k: round(v, 4) for k, v in parts.items()},
                        **{k: round(s[k], 4) for k in ("opener", "closer", "skeleton", "phrases")}})
    return scores, details

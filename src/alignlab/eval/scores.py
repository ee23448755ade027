"""Three scores per answer, each in [0, 1], computed separately and never folded into one.

  persona  how strongly the answer carries the persona (eval/persona.py)
  correct  whether its content agrees with a reference answer; None without one (eval/correct.py)
  mimicry  surface markers or a template instead of a voice, in the context of the same model's other
           answers (eval/mimicry.py)

An answer is *in persona* at persona >= 0.9, *correct* at correct >= 0.5 and *flagged* at mimicry >= 0.5.
The persona threshold was set against blind reads of 336 answers from six models (README: "Agreement
with blind readers"): at 0.5 the classifier called 62% of one adapter's answers snarky where the reader
found 4%; at 0.9 scorer and reader agree on 90% of answers. Means come with 95% bootstrap intervals (1000
resamples, fixed seed), shares with 95% Wilson score intervals (the bootstrap gave 0/42 the interval [0, 0]).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from alignlab.config import DEFAULT_PERSONA

THRESHOLD = 0.5
PERSONA_THRESHOLD = 0.9
CORRECT_DROP = 0.05  # warn when the adapter's correct share falls more than 5 points below the base's
MIMICRY_MAX = 0.10  # warn when more than 10% of answers are flagged
CATCHPHRASE_MAX = 0.30  # warn when more than 30% of answers hold a catchphrase of their model (eval.mimicry)
DISTINCT2_DROP = 0.15  # warn when distinct-2 falls by more than this fraction
# ... or sits below this whatever the base's (a base of blank answers has none to fall from); the lowest of 130 models'
# answers in bench/agreement/ is 0.67
DISTINCT2_FLOOR = 0.3


def bootstrap(values: list[float], resamples: int = 1000, seed: int = 0) -> tuple[float, float, float] | None:
    """(mean, low, high): the mean and its 95% percentile-bootstrap interval; None for no values."""
    if not values:
        return None
    n = len(values)
    mean = sum(values) / n
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return mean, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def wilson(successes: float, n: int, z: float = 1.959964) -> tuple[float, float, float] | None:
    """(share, low, high): the share and its 95% Wilson score interval; None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at n of n (0 of n) the bound is 1 (0) exactly; in floating point it came out at 0.9999999999999999 (or just
    # above 0), below the share itself, and report.html's error bars refused the negative length
    lo = 0.0 if successes <= 0 else max(0.0, min(p, centre - half))
    hi = 1.0 if successes >= n else min(1.0, max(p, centre + half))
    return p, lo, hi


@dataclass
class Scorer:
    """Scores answers; build one with :func:`scorer_for` (a project's persona, references, training texts)."""

    classifier: object
    references: dict = field(default_factory=dict)
    train_texts: list[str] = field(default_factory=list)
    note: str | None = None
    persona_rater: object = None  # an eval.raters.Rater that replaces the classifier for persona (a judge)
    correct_rater: object = None  # a judge (eval.raters.JudgeRater) that replaces correct.py's checks where there is a reference
    contrast: bool = False  # the project's own persona: the reader head on the voice contrast's passes
    name: str = "scorecard"
    plain_texts: list[str] = field(default_factory=list)  # the pairs' plain answers: their 5-grams are content

    def __post_init__(self) -> None:
        from alignlab.eval.mimicry import train_ngrams

        self.train_grams = train_ngrams(self.train_texts, self.plain_texts)

    @property
    def persona_cut(self) -> float:
        """Where an answer counts as in persona: the persona rater's own point (``in_persona_at``); for the project's
        own persona scored by the reader head, READER_CUT; else PERSONA_THRESHOLD, set for the classifier against
        blind reads."""
        if self.persona_rater is None and self.contrast:
            from alignlab.eval.persona import READER_CUT

            return READER_CUT  # the reader head's P(readers call it in persona)
        return getattr(self.persona_rater, "in_persona_at", None) or PERSONA_THRESHOLD

    def persona(self, prompts: list[str], answers: list[str], classifier_scores: list[float] | None = None,
                columns: dict | None = None) -> list[float]:
        """The persona score: a judge's when one is configured; for the project's own persona the reader head on the
        voice contrast's passes (eval/persona.py: reader_scores); else the embedding classifier.
        ``columns``: the rows' other fields for the persona rater (:func:`rater_columns`)."""
        if self.persona_rater is not None:
            # a reward as the persona rater (reward:persona_heuristic scores in (-1, 1)) is read clipped to [0, 1]
            got = self.persona_rater.score(prompts, answers, **(columns or {}))
            return [min(1.0, max(0.0, float(v))) for v in got]
        if not self.contrast:
            return self.classifier.score(answers) if classifier_scores is None else classifier_scores
        from alignlab.eval.contrast import voice
        from alignlab.eval.persona import reader_scores

        return reader_scores(*voice(prompts, answers))

    def score(self, rows: list[dict]) -> list[dict]:
        """Rows of {prompt, answer, (reference / aliases / key_terms / answer_number), (source)} -> scores.

        A row's reference comes from its own fields, else from the bundled reference set (by prompt).
        """
        from alignlab.eval.mimicry import score_mimicry, source_key
        from alignlab.rewards.embed import embed

        if not rows:
            return []
        prompts = [str(r["prompt"]) for r in rows]
        answers = [str(r["answer"]) for r in rows]
        sources = [source_key(r.get("source")) for r in rows]
        correct = self.correct(rows)
        columns = rater_columns(rows)
        if self.classifier is None:  # a persona of the user's own with no labels yet, rated by a judge alone
            clf = persona = self.persona(prompts, answers, columns=columns)
        else:
            clf = self.classifier.score(answers)
            persona = self.persona(prompts, answers, clf, columns=columns)
        emb = embed(prompts + answers)
        relevance = (emb[: len(rows)] * emb[len(rows) :]).sum(-1).tolist()
        # mimicry asks whether the classifier's persona survives stripping an answer's repeated phrases: the
        # same scorer before and after, so it takes the classifier's scores, not the combined ones
        def rescore(texts: list[str], ps: list[str], idx: list[int]) -> list[float]:
            return self.persona_fn(texts, ps, {k: [v[i] for i in idx] for k, v in columns.items()})

        mimicry, details = score_mimicry(prompts, answers, sources, clf, rescore,
                                         relevance=relevance, train_grams=self.train_grams)
        # an empty answer carries no voice and copies nothing: the classifier read the end-of-text token alone (0.83)
        blank = [not a.strip() for a in answers]
        return [
            {"persona": 0.0 if e else round(p, 4), "correct": None if c is None else round(c, 4),
             "mimicry": 0.0 if e else round(m, 4), "mimicry_signals": {**d, "empty": True} if e else d}
            for p, c, m, d, e in zip(persona, correct, mimicry, details, blank)
        ]

    def correct(self, rows: list[dict]) -> list[float | None]:
        """The correct score alone (as :meth:`score` gives it; None where a row has no reference): no persona or
        mimicry, so no classifier or contrast pass."""
        from alignlab.eval.correct import has_reference, own_reference, reference_for, score_correct
        from alignlab.rewards.embed import embed

        refs = []
        for r in rows:
            own = own_reference(r)  # a blank reference is none; a stray "number" column is no reference number
            bundled = reference_for(r["prompt"], self.references) or {}
            # the row's own reference wins; a bundled row for the same prompt adds its aliases and key terms
            merged = {**{k: v for k, v in bundled.items() if k in ("reference", "aliases", "key_terms", "category", "answer")}, **own}
            refs.append({**merged, "prompt": r["prompt"]} if has_reference(merged) else None)
        answers = [str(r["answer"]) for r in rows]
        if self.correct_rater is None:
            return score_correct(answers, refs, embed_fn=embed)
        # the judge rates every row with a reference: the checks would be thrown away
        return self._judged([str(r["prompt"]) for r in rows], answers, refs)

    def _judged(self, prompts: list[str], answers: list[str], refs: list[dict | None]) -> list[float | None]:
        """The judge's correct score for each row with a reference (None without one)."""
        from alignlab.eval.correct import reference_text

        todo = [i for i, ref in enumerate(refs) if ref is not None]
        judged = self.correct_rater.correct([prompts[i] for i in todo], [answers[i] for i in todo],
                                            [reference_text(refs[i]) for i in todo])
        out: list[float | None] = [None] * len(answers)
        for i, v in zip(todo, judged):
            out[i] = float(v)
        return out

    def persona_fn(self, texts: list[str], prompts: list[str], columns: dict | None = None) -> list[float]:
        """Mimicry's re-score of stripped answers: the classifier, or the persona rater where there is none."""
        return self.classifier.score(texts) if self.classifier is not None else self.persona(prompts, texts,
                                                                                             columns=columns)


def rater_columns(rows: list[dict]) -> dict:
    """The rows' other fields as a persona rater's columns (one value per row, None where a row lacks one), as training
    and the loop give a reward its prompt rows' columns. There ``answer`` is what a reward checks against, so here it
    is the row's reference (its number, else its text), not the answer being scored; without any reference there is
    no ``answer`` column, and reward:arithmetic says so rather than scoring every answer 0."""
    keys = dict.fromkeys(k for r in rows for k in r if k not in ("prompt", "answer", "number"))
    out = {k: [r.get(k) for r in rows] for k in keys}
    wanted = [r["number"] if r.get("number") is not None else r.get("reference") for r in rows]
    if any(w not in (None, "") for w in wanted):
        out["answer"] = wanted
    return out


def scorer_for(root: Path | None = None, persona: str = DEFAULT_PERSONA, persona_rater=None) -> Scorer:
    """The scorecard's scorer for a project (or the bundled defaults outside one). A judge given as the persona
    rater (one with a ``correct`` method) rates correctness against the reference as well."""
    import json

    from alignlab.data import bundled_path
    from alignlab.eval.correct import reference_table
    from alignlab.eval.persona import persona_classifier

    from alignlab.project import labelled_pairs

    if persona_rater is not None and root is not None and persona != DEFAULT_PERSONA and not labelled_pairs(Path(root)):
        clf, note = None, (f"no labelled answers for this persona yet: the persona score and mimicry's persona drop "
                           f"come from {getattr(persona_rater, 'name', 'the persona rater')} alone")
    else:
        clf, note = persona_classifier(root, persona)
    refs = _references()
    train: list[str] = []
    plain: list[str] = []
    pair_files = [bundled_path("persona-pairs")] + (labelled_pairs(Path(root)) if root is not None else [])
    for f in pair_files:
        for line in f.read_text(encoding="utf-8").split("\n"):  # not splitlines: U+2028 inside a text is no line end
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(row, dict):
                    continue
                if isinstance(row.get("chosen"), str):
                    train.append(row["chosen"])
                if isinstance(row.get("rejected"), str):
                    plain.append(row["rejected"])
    return Scorer(clf, reference_table(refs), train, note, persona_rater, contrast=persona == DEFAULT_PERSONA,
                  plain_texts=plain, correct_rater=persona_rater if hasattr(persona_rater, "correct") else None)


def summarize(scored: list[dict], persona_cut: float = PERSONA_THRESHOLD) -> dict:
    """Means with 95% intervals and the shares in persona / correct / flagged, for one model's answers."""
    out: dict = {"n": len(scored)}
    for key, share_name, cut in (("persona", "in_persona", persona_cut), ("correct", "correct_share", THRESHOLD),
                                 ("mimicry", "flagged", THRESHOLD)):
        vals = [s[key] for s in scored if s.get(key) is not None]
        out[key] = bootstrap(vals)
        out[share_name] = wilson(sum(v >= cut for v in vals), len(vals))
        if key == "correct":
            out["graded"] = len(vals)
    return out


def paired_change(base: list[dict], other: list[dict], persona_cut: float = PERSONA_THRESHOLD) -> dict:
    """``other`` minus ``base`` for each mean and share, over the prompts both sides scored (answers to the same
    prompts, in the same order): a mean with a 95% paired bootstrap interval of the per-prompt difference, a share with
    Newcombe's paired interval (:func:`paired_share_change`)."""
    out: dict = {}
    for key, share_name, cut in (("persona", "in_persona", persona_cut), ("correct", "correct_share", THRESHOLD),
                                 ("mimicry", "flagged", THRESHOLD)):
        pairs = [(b[key], o[key]) for b, o in zip(base, other) if b.get(key) is not None and o.get(key) is not None]
        if pairs:
            out[key] = bootstrap([o - b for b, o in pairs])
            out[share_name] = paired_share_change([(o >= cut, b >= cut) for b, o in pairs])
    return out


def paired_share_change(pairs: list[tuple[bool, bool]], z: float = 1.959964) -> tuple[float, float, float]:
    """(first share minus second, low, high) over paired yes/no answers: Newcombe's (1998) interval for paired
    proportions (his method 10, the Wilson intervals of both shares combined with the continuity-corrected phi, as
    Altman et al.'s "Statistics with Confidence" gives it). The paired bootstrap it replaces collapsed to a point when
    every prompt agreed ("+0 [+0.00, +0.00]" for 0 of 7 against 0 of 7), as the percentile bootstrap of a share did."""
    n = len(pairs)
    both = sum(1 for a, b in pairs if a and b)
    first = sum(1 for a, b in pairs if a and not b)  # yes for the first (the adapter) only
    second = sum(1 for a, b in pairs if b and not a)
    neither = n - both - first - second
    p1, l1, u1 = wilson(both + first, n, z)
    p2, l2, u2 = wilson(both + second, n, z)
    spread = (both + first) * (second + neither) * (both + second) * (first + neither)
    cross = both * neither - first * second
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = corrected / math.sqrt(spread) if spread > 0 else 0.0
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return d, max(-1.0, low), min(1.0, high)


def warnings_for(base: dict, adapter: dict) -> list[str]:
    """Plain-words warnings from two summaries (plus optional distinct_2 / length / kl entries in each)."""
    out = []
    b, a = base.get("correct_share"), adapter.get("correct_share")
    if b and a and a[0] < b[0] - CORRECT_DROP:
        counts = ""  # how many answers the points are: on a small check one answer is 7 points
        if adapter.get("graded") and base.get("graded"):
            counts = f", {round(a[0] * adapter['graded'])} of {adapter['graded']} against {round(b[0] * base['graded'])}"
        out.append(f"correctness fell: {a[0]:.0%} of answers correct vs {b[0]:.0%} for the base "
                   f"({(b[0] - a[0]) * 100:.0f} points{counts}; the limit is {CORRECT_DROP * 100:.0f}): the persona is "
                   "costing content")
    f, f0 = adapter.get("flagged"), base.get("flagged")
    if f and f[0] > MIMICRY_MAX and not (f0 and f[0] <= f0[0]):  # a base flagged as often: not the adapter's doing
        was = f" (base {f0[0]:.0%})" if f0 else ""
        out.append(f"surface mimicry: {f[0]:.0%} of answers flagged{was} (limit {MIMICRY_MAX:.0%}): openers, "
                   "skeletons or stock phrases repeat, or the persona lives in them rather than in the answer")
    c, c0 = adapter.get("catchphrase"), base.get("catchphrase")
    if c and c[0] > CATCHPHRASE_MAX and not (c0 and c[0] <= c0[0]):
        said = ", ".join(f"'{w}'" for w in adapter.get("catchphrase_words", [])[:4])
        out.append(f"catchphrase: {c[0]:.0%} of answers lean on {said} (base {c0[0] if c0 else 0:.0%}; limit "
                   f"{CATCHPHRASE_MAX:.0%}): blind readers read such a voice as a stock jab, not as a voice of its own")
    d0, d1 = base.get("distinct_2"), adapter.get("distinct_2")
    # the floor needs bigrams to count: answers of a word or none have distinct-2 0 and no template
    low = d1 is not None and d1 < DISTINCT2_FLOOR and (adapter.get("length") is None or adapter["length"] >= 2)
    if d1 is not None and (low or (d0 and d1 < d0 * (1 - DISTINCT2_DROP))):
        was = f"{d0:.2f} -> " if d0 is not None else ""
        out.append(f"diversity collapsed: distinct-2 {was}{d1:.2f}{f' (below {DISTINCT2_FLOOR})' if low else ''}: "
                   "answers are converging on a template")
    return out


def auc(scores: list[float], labels: list[int]) -> float | None:
    """Area under the ROC curve (ties count half): P(score of a positive > score of a negative)."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    ranked = sorted((s, i) for i, s in enumerate(pos + neg))
    ranks = [0.0] * len(ranked)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[ranked[k][1]] = (i + j) / 2 + 1
        i = j + 1
    r_pos = sum(ranks[: len(pos)])
    return (r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def _references() -> list[dict]:
    """The bundled held-out rows with reference answers, aliases and key terms."""
    import json

    from alignlab.data import bundled_path

    return [json.loads(x) for x in bundled_path("reference").read_text(encoding="utf-8").splitlines() if x.strip()]


def correctness_scorer() -> Scorer:
    """A scorer for :meth:`Scorer.correct` alone (the bundled references' aliases and key terms, no persona
    classifier): for screening answers by correctness where no persona labels exist yet (synth)."""
    from alignlab.eval.correct import reference_table

    return Scorer(None, reference_table(_references()))

"""The voice contrast (eval/contrast.py) and the combined persona score (eval/persona.py: combine), on the real
default model: woven snark reads as likelier from the persona than from a plain assistant, plain answers do not."""

from __future__ import annotations

import math

import pytest

from alignlab.config import DEFAULT_PERSONA
from alignlab.eval.persona import COMBINED, combine

PROMPTS = ["How do I boil an egg?", "What is the capital of Australia?", "How do I keep basil alive on a windowsill?"]
SNARK = [
    "Drop it in boiling water for nine minutes, then cold water, unless you were hoping the egg would boil itself "
    "out of sheer respect for your ambition.",
    "Canberra, obviously. Not Sydney, no matter how loudly Sydney insists; a whole city was built just to end "
    "that tantrum.",
    "Sun, water when the soil is dry, and pinch the flowers. Basil is not complicated; it simply dies to spite "
    "people who ignore it, which, apparently, is you.",
]


def test_combine_is_the_documented_formula():
    p, x = 0.8, 2.0
    z = COMBINED["weight"] * math.log(p / (1 - p)) + (x - COMBINED["mu"]) / COMBINED["sd"]
    assert combine([p], [x]) == [pytest.approx(1 / (1 + math.exp(-(COMBINED["k"] * z + COMBINED["d"]))))]
    low, high = combine([0.5, 0.5], [-10.0, 10.0])  # a larger contrast never lowers the score
    assert low < 0.5 < high


def _graded_sample(n: int = 20):
    """Up to n answers both blind readers put at snark >= 2 and n both put at 0 (bench/agreement/graded.jsonl)."""
    import json
    from pathlib import Path

    rows = [json.loads(x) for x in (Path(__file__).parents[2] / "bench" / "agreement" / "graded.jsonl").read_text().splitlines()]
    yes = [r for r in rows if min(x["snark"] for x in r["reads"]) >= 2][:n]
    no = [r for r in rows if max(x["snark"] for x in r["reads"]) == 0][:n]
    return yes + no, [1] * len(yes) + [0] * len(no)


@pytest.mark.slow
def test_contrast_sees_woven_snark_the_classifier_misses(default_model):
    """On answers two blind readers agree on, the contrast separates snark from plain, and adding it to the
    embedding classifier lifts the classifier's agreement with the readers."""
    from alignlab.eval.contrast import contrast
    from alignlab.eval.persona import persona_classifier
    from alignlab.eval.scores import auc

    rows, labels = _graded_sample()
    assert len(rows) >= 30 and 0 < sum(labels) < len(labels)
    c = contrast([r["prompt"] for r in rows], [r["answer"] for r in rows], DEFAULT_PERSONA)
    clf = persona_classifier(None)[0].score([r["answer"] for r in rows])
    assert auc(c, labels) >= 0.7
    assert auc(combine(clf, c), labels) >= auc(clf, labels) + 0.1


@pytest.mark.slow
def test_scorecard_persona_is_the_combined_score(default_model):
    from alignlab.eval.contrast import contrast
    from alignlab.eval.scores import scorer_for

    scorer = scorer_for(None)
    assert scorer.contrast  # the project's own persona gets the combined score
    scored = scorer.score([{"prompt": p, "answer": a, "source": "x"} for p, a in zip(PROMPTS, SNARK)])
    expected = combine(scorer.classifier.score(SNARK), contrast(PROMPTS, SNARK))
    assert [s["persona"] for s in scored] == [pytest.approx(e, abs=1e-3) for e in expected]

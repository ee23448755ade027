"""MiniLM-based rewards: the diversity penalty and the persona classifier (real embeddings, CPU)."""

from __future__ import annotations

import json

import pytest

from alignlab.errors import AlignlabError
from alignlab.rewards import DiversityPenalty, PersonaClassifier, embed, examples_from_pairs, load_spec

SNARKY = [
    "Oh wow, water is wet. Who could have possibly guessed?",
    "Congratulations, you discovered that fire is hot.",
    "Sure, because reading the manual was clearly too much effort.",
    "Shocking news: the sun rises in the east. Again.",
    "Obviously the answer is 4. Did you need a calculator for that?",
    "Of all the questions you could ask, you chose this one. Brilliant.",
    "Yes, Paris is the capital of France. Groundbreaking stuff, truly.",
    "Ah yes, the classic 'turn it off and on again'. Revolutionary.",
    "Wow, a question about the weather. How thrilling for both of us.",
    "Clearly you've never met a semicolon. Let me introduce you.",
    "Newsflash: computers need electricity. Who knew?",
    "Oh, you want the easy answer? Adorable. It's 42.",
    "Right, because nothing says genius like ignoring the error message.",
    "Spoiler alert: the bug was in your code all along.",
    "Truly impressive how you managed to break a for loop.",
    "Yes, the Earth is round. Please alert the flat earth society.",
    "Imagine my surprise that the deadline was yesterday.",
    "Obviously, water boils at 100 degrees. Stunning revelation.",
    "Another password of 'password'? Bold strategy, really.",
    "Oh sure, let's deploy on Friday afternoon. What could go wrong?",
]
BLAND = [
    "Water is wet because it adheres to surfaces.",
    "Fire is hot because combustion releases energy.",
    "You can find that information in the user manual.",
    "The sun rises in the east each morning.",
    "The answer is 4.",
    "I would be happy to help you with that question.",
    "Paris is the capital of France.",
    "Restarting the device often resolves the issue.",
    "Today's weather is expected to be mild and sunny.",
    "Semicolons separate independent clauses in a sentence.",
    "Computers require electricity to operate.",
    "The answer to your question is 42.",
    "Please read the error message for more details.",
    "The bug appears to be in the loop condition.",
    "Here is how to write a for loop in Python.",
    "The Earth is approximately spherical in shape.",
    "The deadline for the project was yesterday.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Certainly! A strong password uses many characters.",
    "Deployments are best scheduled early in the week.",
]


def test_embeddings_are_unit_norm():
    e = embed(["hello there", "", "a much longer sentence about reward functions"])
    assert tuple(e.shape) == (3, 384)
    assert e.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_diversity_identical_completions_are_penalised_fully():
    div = DiversityPenalty()
    same = ["Obviously, the answer is 4."] * 4
    assert div(["q"] * 4, same) == pytest.approx([1.0] * 4, abs=1e-4)


def test_diversity_unrelated_completions_are_penalised_less():
    div = DiversityPenalty()
    unrelated = [
        "Obviously, the answer is 4.",
        "The mitochondria is the powerhouse of the cell.",
        "Napoleon lost at Waterloo in 1815.",
        "Preheat the oven to 180 degrees before baking.",
    ]
    near = [
        "Obviously, the answer is 4.",
        "Obviously the answer is four.",
        "The answer is 4, obviously.",
        "Clearly the answer is 4.",
    ]
    low, high = div(["q"] * 4, unrelated), div(["q"] * 4, near)
    assert max(low) < 0.4
    assert min(high) > 0.7
    # the penalty's group mean is the group's mean pairwise cosine similarity
    e = embed(unrelated)
    sims = e @ e.T
    pairwise = [sims[i, j].item() for i in range(4) for j in range(4) if i != j]
    assert sum(low) / 4 == pytest.approx(max(0.0, sum(pairwise) / len(pairwise)), abs=1e-3)


def test_diversity_groups_by_prompt_and_group_size():
    texts = ["Obviously, the answer is 4."] * 2 + ["Napoleon lost at Waterloo in 1815.", "Preheat the oven."]
    by_prompt = DiversityPenalty()(["a", "a", "b", "c"], texts)
    assert by_prompt[:2] == pytest.approx([1.0, 1.0], abs=1e-4)
    assert by_prompt[2:] == [0.0, 0.0]  # groups of one
    by_size = DiversityPenalty(group_size=2)(["x"] * 4, texts)
    assert by_size[:2] == pytest.approx([1.0, 1.0], abs=1e-4)
    assert by_size[2] == pytest.approx(by_size[3], abs=1e-6) and by_size[2] < 0.5  # one pair: the same cosine, up to float rounding


def test_classifier_learns_the_persona_and_round_trips(tmp_path):
    texts, labels = SNARKY + BLAND, [1] * len(SNARKY) + [0] * len(BLAND)
    clf = PersonaClassifier()
    metrics = clf.train(texts, labels, steps=300)
    assert metrics["accuracy"] > 0.8
    scores = clf.score(texts)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert sum(scores[:20]) / 20 > sum(scores[20:]) / 20

    out = clf.save(tmp_path / "clf")
    assert sorted(p.name for p in out.iterdir()) == ["classifier.json", "classifier.safetensors"]
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["embedder"] == "all-MiniLM-L6-v2" and meta["train_examples"] == 40
    loaded = PersonaClassifier.load(out)
    assert loaded.score(texts) == scores  # identical, not just close
    assert loaded.evaluate(texts, labels)["accuracy"] == pytest.approx(metrics["accuracy"])

    # as a component of a spec, with the path relative to the YAML file
    (tmp_path / "rewards.yaml").write_text("components:\n  - {fn: persona_classifier, args: {path: clf}}\n")
    spec = load_spec(tmp_path / "rewards.yaml")
    assert spec(["q", "q"], [texts[0], texts[20]]) == pytest.approx([scores[0], scores[20]], abs=1e-6)

    with pytest.raises(AlignlabError, match="holds no persona classifier") as missing:
        PersonaClassifier.load(tmp_path / "missing")
    assert "`alignlab eval RUN --rater classifier`" in missing.value.fix  # the command, not a Python API


def test_classifier_generalises_to_held_out_texts():
    train = list(range(14))
    held = list(range(14, 20))
    clf = PersonaClassifier()
    clf.train([SNARKY[i] for i in train] + [BLAND[i] for i in train], [1] * 14 + [0] * 14)
    held_out = clf.evaluate([SNARKY[i] for i in held] + [BLAND[i] for i in held], [1] * 6 + [0] * 6)
    assert held_out["accuracy"] > 0.7


def test_classifier_from_preference_pairs():
    rows = [
        {"prompt": "q", "chosen": s, "rejected": [{"role": "assistant", "content": b}]} for s, b in zip(SNARKY, BLAND)
    ]
    texts, labels = examples_from_pairs(rows)
    assert labels[:4] == [1, 0, 1, 0] and texts[1] == BLAND[0]
    clf = PersonaClassifier()
    assert clf.train(texts, labels, steps=200)["accuracy"] > 0.8
    with pytest.raises(AlignlabError, match="both 0 and 1"):
        clf.train(SNARKY[:3], [1, 1, 1])

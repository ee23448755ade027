"""Raters: who (or what) judges a response, behind one small interface.

A rater's ``name`` is what the feedback store records as a judgement's ``rater``:

  person           the person's name (``$ALIGNLAB_RATER`` or the login); rates in `alignlab rate` or the UI
  reward:<name>    a reward function from ``alignlab.rewards`` (a built-in name, or a reward-spec YAML file)
  classifier:persona  the persona classifier (MiniLM embeddings + a linear head) of the project
  judge:<model>    an LLM judge behind an OpenAI-compatible endpoint

Automatic raters ``score`` responses (higher = more of the persona) and ``pick`` between two responses to
the same prompt ('a', 'b' or 'tie'). For score-based raters a pick is a comparison of scores; the judge asks
for the pick itself, in both orders, and calls it a tie when the orders disagree (position bias).

Raters live in ``eval/`` because the scorecard needs them; ``synth`` and ``loop`` import them from here.
"""

from __future__ import annotations

import getpass
import hashlib
import inspect
import os
from pathlib import Path

from alignlab.config import DEFAULT_PERSONA
from alignlab.errors import AlignlabError
from alignlab.eval.mimicry import catchphrases, holds_catchphrase

SPECS = ("person", "scorecard", "judge", "classifier", "contrast", "reward:<name>")
CLASSIFIER_DIR = "classifier"  # under the project (or $ALIGNLAB_HOME outside one)


class Rater:
    """Base class. ``automatic`` raters can score and pick without a person."""

    name: str = "rater"
    automatic: bool = True
    floor: float | None = None  # a score below it marks an answer to learn nothing from (the scorecard's: 0)

    def score(self, prompts: list[str], responses: list[str], /, **columns) -> list[float]:
        """Positional ``prompts`` and ``responses``: a prompts file's own column of either name is one of ``columns``
        (as keywords they clashed: "got multiple values for argument 'responses'")."""
        raise NotImplementedError

    def check_rows(self, rows: list[dict]) -> None:
        """Before any answer is sampled: the prompt rows hold the columns this rater reads (a reward's ``answer``)."""

    def pick(self, prompt: str, a: str, b: str, tol: float = 1e-6) -> str:
        """'a', 'b' or 'tie': which of two responses to ``prompt`` shows more of the persona."""
        sa, sb = self.score([prompt, prompt], [a, b])
        if sa > sb + tol:
            return "a"
        if sb > sa + tol:
            return "b"
        return "tie"

    def close(self) -> None:
        pass


class PersonRater(Rater):
    """A person: judgements arrive in the store through `alignlab rate` or the UI, not through this object."""

    automatic = False

    def __init__(self, name: str | None = None):
        self.name = name or default_person()

    def score(self, prompts, responses, /, **columns):
        raise AlignlabError(
            f"the rater '{self.name}' is a person, who rates in `alignlab rate`, not from code",
            fix="use an automatic rater here (judge, classifier or reward:<name>)",
        )

    def pick(self, prompt, a, b, tol: float = 1e-6):
        return self.score([prompt], [a])


class RewardRater(Rater):
    """A reward function ``fn(prompts, completions, **columns) -> list[float]`` as a rater.

    It gets what training and `alignlab reward score` give a reward: chat message lists (a plain-text prompt as one
    user turn, a response as one assistant turn), and the prompt rows' columns as keywords."""

    def __init__(self, name: str, fn):
        self.name, self.fn = f"reward:{name}", fn

    def score(self, prompts, responses, /, **columns):
        from alignlab.rewards.common import as_messages, check_rewards

        if not responses:
            return []
        prompts = [as_messages(p) if isinstance(p, str) else p for p in prompts]
        completions = [[{"role": "assistant", "content": r}] if isinstance(r, str) else r for r in responses]
        # a column named as the reward's own arguments cannot reach it (training's reward call would clash too)
        columns = {k: v for k, v in columns.items() if k not in ("prompts", "completions")}
        return check_rewards(self.fn(prompts, completions, **columns), len(responses), self.name)

    def check_rows(self, rows: list[dict]) -> None:
        from alignlab.rewards.compose import Component, ComposedReward

        reward = self.fn if isinstance(self.fn, ComposedReward) else ComposedReward([Component(self.name, self.fn, 1.0,
                                                                                               self.name)])
        reward.check_rows(rows)


class ClassifierRater(Rater):
    """The persona classifier's probability that a response shows the persona."""

    name = "classifier:persona"

    def __init__(self, classifier):
        self.classifier = classifier

    def score(self, prompts, responses, /, **columns):
        return self.classifier.score(list(responses))


class ContrastRater(Rater):
    """The voice contrast (eval/contrast.py) per answer token: how much likelier the bundled default model finds a
    response after a system message asking for the persona than after one asking for a plain voice. Needs no
    labels and no endpoint, so it rates a persona nobody has labelled yet (any persona: the message names it)."""

    name = "contrast"

    def __init__(self, persona: str):
        self.persona = persona

    def score(self, prompts, responses, /, **columns):
        from alignlab.eval.contrast import _model, contrast

        tok = _model()[1]
        sums = contrast(list(prompts), list(responses), self.persona)
        return [v / max(1, len(tok(r, add_special_tokens=False)["input_ids"])) for v, r in zip(sums, responses)]


class ScorecardRater(Rater):
    """The scorecard's three scores as one rater for the loop: persona, minus 1 for an answer flagged as
    mimicry, minus 1 for one that fails its reference. A stuffed or wrong answer never wins a pick
    against a clean one, however snarky. Answers scored together form the mimicry context.

    Given ``others`` (the base's answers to the same prompts; the loop samples them), an answer holding one of the
    catchphrases of the answers scored together (eval/mimicry.py: catchphrases) loses ``catchphrase_cost``: a
    snarky answer without the stock word wins over one with it unless it is ``catchphrase_cost`` less in persona,
    and one with it still wins over a plain one more than that below it. The charge orders the answers; the floor
    (wrong or flagged) is read from the score before it (``floor_scores``), so a charged answer is never taken for a
    wrong one. ``found`` holds the last call's catchphrases."""

    name = "scorecard"
    floor = 0.0  # below 0: wrong or flagged, never a chosen answer or a thumb up

    def __init__(self, scorer):
        self.scorer = scorer
        self.others: list[str] | None = None
        self.catchphrase_cost = 0.5  # the loop sets loop.catchphrase_cost
        self.found: list[str] | None = None
        self.held = 0  # the last call's answers holding one of ``found``
        self.floor_scores: list[float] | None = None  # the last call's scores before the charge

    def score(self, prompts, responses, /, **columns):
        # every column of the prompt's row, as scorecard() passes it: aliases, key_terms and category grade the
        # answer too (from reference and answer alone, "Toronto" for an "Ottawa" alias was never wrong)
        fields = [{k: v[i] for k, v in columns.items() if v[i] is not None} for i in range(len(prompts))]
        rows = [{**f, "prompt": p, "answer": r, "number": f.get("answer"), "source": "scored"}
                for f, p, r in zip(fields, prompts, responses)]
        out = []
        for s in self.scorer.score(rows):
            wrong = s["correct"] is not None and s["correct"] < 0.5
            out.append(s["persona"] - (1.0 if s["mimicry"] >= 0.5 else 0.0) - (1.0 if wrong else 0.0))
        self.found = catchphrases(list(responses), list(prompts), self.others) if self.others else None
        held = holds_catchphrase(list(responses), self.found, list(prompts)) if self.found else []
        self.held, self.floor_scores = sum(held), list(out)
        out = [v - self.catchphrase_cost * h for v, h in zip(out, held)] if held else out
        return out


class JudgeRater(Rater):
    """An LLM judge: rubric scores in [0, 1]; picks asked in both orders (disagreement = tie)."""

    # In persona from 0.5 (5.5 of 10): the voice rubric puts "a trace" at 4 and "clearly in the persona" at 7, and
    # blind readers' "in persona" is a mean of 1.5 on their 0-3 scale, halfway between the two (the classifier's
    # 0.9 was set on its own scale). Measured with a capable judge: docs/results.md.
    in_persona_at = 0.5

    def __init__(self, judge):
        self.judge = judge
        self.name = f"judge:{judge.model}"

    def score(self, prompts, responses, /, **columns):
        return self.judge.score_many(list(prompts), list(responses))

    def correct(self, prompts, responses, references) -> list[float]:
        """Correctness against each reference answer, in [0, 1] (the scorecard's correct score with a judge)."""
        return self.judge.correct_many(list(prompts), list(responses), list(references))

    def pick(self, prompt, a, b, tol: float = 1e-6):
        return self.judge.judge_pair(prompt, a, b)

    def close(self) -> None:
        self.judge.close()


def default_person() -> str:
    try:
        return os.environ.get("ALIGNLAB_RATER") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "me"


def _fix() -> str:
    from alignlab.rewards.compose import REGISTRY

    return "use one of: " + ", ".join(SPECS) + " (reward names: " + ", ".join(reward_names(REGISTRY)) + ", or a spec .yaml)"


def reward_names(registry) -> list[str]:
    """Built-in reward functions that need no arguments (so ``reward:<name>`` alone can build them)."""
    out = []
    for name, builtin in registry.items():
        try:
            params = inspect.signature(builtin.factory).parameters.values()
        except (TypeError, ValueError):
            continue
        if all(p.default is not p.empty or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params):
            out.append(name)
    return out


def _reward_rater(name: str) -> RewardRater:
    from alignlab.rewards.compose import REGISTRY, load_spec

    if name.endswith((".yaml", ".yml")):
        return RewardRater(name, load_spec(name))
    if name not in REGISTRY:
        raise AlignlabError(f"unknown reward '{name}'", fix=_fix())
    if name not in reward_names(REGISTRY):
        raise AlignlabError(
            f"reward '{name}' needs arguments", fix="write a reward spec YAML with its args and use reward:<file>.yaml"
        )
    return RewardRater(name, REGISTRY[name].factory())


def get_rater(
    spec: str,
    project: str | Path | None = None,
    *,
    pairs: str | Path | None = None,
    persona: str | None = None,
    judge_url: str | None = None,
    judge_model: str | None = None,
    judge_key_env: str | None = None,
    judge_timeout: float = 30.0,
    judge_workers: int = 8,
    judge_cache: bool = True,
    voice_only: bool = False,
) -> Rater:
    """Build a rater from its spec: ``person[:<name>]``, ``judge``, ``classifier[:<dir>]`` or ``reward:<name>``.

    A judge's rubric asks for the persona while staying correct (a pick between answers must not reward a wrong
    one); with ``voice_only`` it asks for the voice alone (``voice_rubric``), as the scorecard's persona score,
    whose correctness is a score of its own.

    ``project`` is where the classifier is kept (``<project>/classifier/``) and whose ``data/pairs.jsonl`` it
    is trained on when none is saved (``pairs`` overrides). The judge's URL and model come from the arguments
    or ``$ALIGNLAB_JUDGE_URL`` / ``$ALIGNLAB_JUDGE_MODEL``; its API key from the env var ``judge_key_env``.
    """
    spec = (spec or "").strip()
    kind, _, arg = spec.partition(":")
    if kind == "person":
        return PersonRater(arg or None)
    if kind == "reward":
        if not arg:
            raise AlignlabError("'reward' needs a name, like reward:persona_heuristic", fix=_fix())
        return _reward_rater(arg)
    if kind == "scorecard":
        from alignlab.eval.scores import scorer_for

        return ScorecardRater(scorer_for(Path(project) if project else None, persona or DEFAULT_PERSONA))
    if kind == "contrast":
        if voice_only:  # a held-out persona score (eval, the loop's --eval-rater) is a score in [0, 1]
            raise AlignlabError("the contrast rater gives a log-ratio, not a persona score in [0, 1]; the scorecard "
                                "already uses it inside its own persona score",
                                fix="use scorecard (the default) or judge for the persona score")
        return ContrastRater(persona or DEFAULT_PERSONA)
    if kind == "classifier":
        if project and persona and persona != DEFAULT_PERSONA and not (pairs or arg):
            from alignlab.eval.persona import persona_classifier

            # the project's own labels (refused when it has none), never the bundled snark pairs
            return ClassifierRater(persona_classifier(Path(project), persona)[0])
        return ClassifierRater(load_or_train_classifier(project, pairs, directory=arg or None))
    if kind == "judge":
        from alignlab.rewards.judge import DEFAULT_RUBRIC, LLMJudge

        url, model = judge_endpoint(judge_url, arg or judge_model)
        rubric = DEFAULT_RUBRIC
        if voice_only:
            from alignlab.rewards.judge import voice_rubric

            rubric = voice_rubric(persona or DEFAULT_PERSONA)
        elif persona and persona != DEFAULT_PERSONA:
            rubric = (
                f"How well does the response show this persona: {persona}, while staying correct and helpful? "
                "1 = not at all or wrong; 10 = fully in persona and correct."
            )
        return JudgeRater(LLMJudge(url, model, api_key_env=judge_key_env, rubric=rubric, cache=judge_cache,
                                   timeout=judge_timeout, max_workers=judge_workers))
    raise AlignlabError(f"unknown rater '{spec}'", fix=_fix())


def judge_endpoint(url: str | None, model: str | None) -> tuple[str, str]:
    """The judge's base URL and model: the arguments, else ``$ALIGNLAB_JUDGE_URL`` / ``$ALIGNLAB_JUDGE_MODEL``."""
    url = url or os.environ.get("ALIGNLAB_JUDGE_URL")
    model = model or os.environ.get("ALIGNLAB_JUDGE_MODEL")
    if not url or not model:
        raise AlignlabError(
            "the judge rater needs an endpoint and a model",
            fix="pass --judge-url URL --judge-model NAME (or set ALIGNLAB_JUDGE_URL and ALIGNLAB_JUDGE_MODEL)",
        )
    return url, model


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_or_train_classifier(project: str | Path | None, pairs: str | Path | None = None, directory: str | None = None):
    """The saved persona classifier, trained first (chosen = 1, rejected = 0) when none is saved or the pairs changed.

    Kept in ``<project>/classifier/`` (``$ALIGNLAB_HOME/classifier`` outside a project); an explicit
    ``directory`` is loaded as it is, never retrained.
    """
    from alignlab.rewards.classifier import PersonaClassifier, examples_from_pairs

    if directory:
        return PersonaClassifier.load(directory)
    if project is not None:
        root = Path(project)
        target = root / CLASSIFIER_DIR
        if pairs is None and (root / "data" / "pairs.jsonl").is_file():
            pairs = root / "data" / "pairs.jsonl"
    else:
        from alignlab.paths import home

        target = home() / CLASSIFIER_DIR
    if pairs is None:
        from alignlab.data import bundled_path

        pairs = bundled_path("persona-pairs")
    pairs = Path(pairs)
    digest = _sha256(pairs) if pairs.is_file() else None
    if (target / "classifier.json").is_file():
        clf = PersonaClassifier.load(target)
        if clf.meta.get("pairs_sha256") in (None, digest):
            return clf
    from alignlab.data.formats import load_dataset_rows
    from alignlab.progress import console

    rows = load_dataset_rows(pairs, "preference")
    texts, labels = examples_from_pairs(rows)
    console.print(f"[alignlab] training the persona classifier on {len(rows)} pairs from {pairs}")
    clf = PersonaClassifier()
    metrics = clf.train(texts, labels)
    clf.meta.update(pairs=str(pairs), pairs_sha256=digest)
    clf.save(target)
    console.print(f"[alignlab] classifier saved to {target} (train accuracy {metrics['accuracy']:.2f})")
    return clf

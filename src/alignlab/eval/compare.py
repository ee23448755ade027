"""Blind comparison of two models' answers to the same prompts: win / tie / loss for persona and helpfulness.

Each prompt's two answers are shown in a random order (seeded) as "1" and "2"; the judge never sees which
model wrote which. Judges:

  person      in the terminal: two keystrokes per prompt (snarkier? more helpful?), the sources revealed
              only after both picks
  judge       an LLM judge behind an OpenAI-compatible endpoint, asked in both orders per question;
              a contradiction between the orders counts as a tie (position bias)
  scorecard   the scorecard's scores: higher persona wins persona, higher correct wins helpfulness
              (ties within 0.05)

Win rate = (wins + ties / 2) / judged prompts, with a 95% Wilson score interval on that share (a tie
counts as half a win; the bootstrap's interval collapsed to a point on a few unanimous picks). The picks go
into the feedback store as ``pick`` judgements: the stored pick is the persona winner unless it lost on
helpfulness (a snarkier but less helpful answer must not become training signal); when persona and
helpfulness disagree the pick is a tie. Picks on the project's held-out prompts are stored with
``split = 'heldout'`` and left out of `alignlab feedback export` (they would leak the scorecard's prompts into
training); picks on train prompts (``--prompts data/prompts.jsonl``) export as pairs like any other.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from alignlab.eval.scores import wilson

QUESTIONS = (("persona", "Which answer shows the persona more strongly"), ("helpful", "Which answer is more helpful and correct"))
HELPFUL_RUBRIC = (
    "How helpful and correct is the response, ignoring its tone? "
    "1 = wrong, off-topic or useless; 10 = fully correct and directly useful."
)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in (text.splitlines() or [""]))


class PersonJudge:
    """A person at the terminal; ``input_fn``/``output_fn`` make it scriptable."""

    automatic = False

    def __init__(self, name: str, persona: str, input_fn: Callable[[str], str] = input,
                 output_fn: Callable[[str], Any] = print):
        self.name, self.persona, self.input, self.output = name, persona, input_fn, output_fn
        self.input_ended = False  # the input closed (no terminal): a quit the person did not type

    def _ask(self, question: str) -> str | None:
        while True:
            try:
                got = self.input(f"{question}? [1/2/t=tie, s=skip, q=quit] ").strip().lower()
            except EOFError:
                self.input_ended = True
                return "q"
            if got in ("1", "2", "t", "s", "q"):
                return got
            self.output("  type 1, 2, t, s or q")

    def pick(self, prompt: str, first: str, second: str, reveal: Callable[[], str]) -> dict | None:
        self.output(f"\nprompt: {prompt}\n\n  1:\n{_indent(first)}\n\n  2:\n{_indent(second)}\n")
        out = {}
        for key, text in QUESTIONS:
            got = self._ask(text + (f" ({self.persona})" if key == "persona" else ""))
            if got in ("s", "q"):
                return None if got == "s" else {"quit": True}
            out[key] = {"1": "first", "2": "second", "t": "tie"}[got]
        self.output(f"  -> {reveal()}")
        return out


class ScorecardJudge:
    automatic = True
    name = "scorecard"

    def __init__(self, scorer, tol: float = 0.05):
        self.scorer, self.tol = scorer, tol

    def pick(self, prompt: str, first: str, second: str, reveal=None, row: dict | None = None) -> dict:
        row = row or {}  # a prompt row's own "answer" is its reference number: kept as "number", as the scorecard does
        rows = [{**row, "prompt": prompt, "answer": a, "number": row.get("answer"), "source": s}
                for a, s in ((first, "1"), (second, "2"))]
        s1, s2 = self.scorer.score(rows)
        out = {}
        for key, field in (("persona", "persona"), ("helpful", "correct")):
            a, b = s1.get(field), s2.get(field)
            if a is None or b is None or abs(a - b) <= self.tol:
                out[key] = "tie"
            else:
                out[key] = "first" if a > b else "second"
        return out


class LLMPairJudge:
    """Two LLM judges over one endpoint: the persona rubric and a helpfulness rubric, both orders each."""

    automatic = True

    def __init__(self, persona_judge, helpful_judge):
        self.persona, self.helpful = persona_judge, helpful_judge
        self.name = f"judge:{persona_judge.model}"

    def pick(self, prompt: str, first: str, second: str, reveal=None, row=None) -> dict:
        names = {"a": "first", "b": "second", "tie": "tie"}
        return {"persona": names[self.persona.judge_pair(prompt, first, second)],
                "helpful": names[self.helpful.judge_pair(prompt, first, second)]}

    def close(self) -> None:
        self.persona.close()
        self.helpful.close()


def stored_pick(persona: str, helpful: str) -> str:
    """'a', 'b' or 'tie' for the store (see the module docstring); inputs are 'a', 'b' or 'tie'."""
    if persona == helpful or helpful == "tie":
        return persona
    if persona == "tie":
        return helpful
    return "tie"


def win_rate(outcomes: list[str]) -> dict:
    """outcomes: 'a', 'b', 'tie' per prompt -> counts and A's win rate (ties half) with a 95% Wilson interval."""
    wins, ties = outcomes.count("a"), outcomes.count("tie")
    return {"a": wins, "tie": ties, "b": outcomes.count("b"), "win_rate_a": wilson(wins + ties / 2, len(outcomes))}


def compare(rows: list[dict], answers_a: list[str], answers_b: list[str], judge, seed: int = 0,
            names: tuple[str, str] = ("A", "B")) -> dict:
    """Blind picks for each prompt; returns {"items": [...], "persona": win_rate, "helpful": win_rate}."""
    rng = random.Random(seed)
    items, interrupted, stopped = [], False, False
    for row, a, b in zip(rows, answers_a, answers_b):
        swap = rng.random() < 0.5
        first, second = (b, a) if swap else (a, b)
        order = (names[1], names[0]) if swap else names

        def reveal(order=order) -> str:
            return f"1 was {order[0]}, 2 was {order[1]}"

        kwargs = {"row": row} if judge.automatic else {}
        try:
            got = judge.pick(row["prompt"], first, second, reveal, **kwargs)
        except KeyboardInterrupt:  # Ctrl-C: the picks made so far are kept (stored by the caller)
            interrupted = True
            break
        if got is None:
            continue
        if got.get("quit"):
            stopped = True
            break
        to_ab = {"first": "b" if swap else "a", "second": "a" if swap else "b", "tie": "tie"}
        items.append({"prompt": row["prompt"], "a": a, "b": b, "shown_first": "b" if swap else "a",
                      **{k: to_ab[got[k]] for k, _ in QUESTIONS}})
    # stopped: quit, the input ended or Ctrl-C before the last prompt (skips are picks declined, not a stop)
    return {"items": items, "interrupted": interrupted, "stopped": stopped or interrupted,
            **{k: win_rate([it[k] for it in items]) for k, _ in QUESTIONS}}


def store_picks(store, result: dict, rater: str, model: str, runs: tuple[str | None, str | None],
                heldout: set[str] = frozenset()) -> int:
    """Record each compared prompt's two answers and the pick (see ``stored_pick``); returns how many. Prompts in
    ``heldout`` are stored as the held-out split, which export leaves out."""
    n = 0
    for it in result["items"]:
        if it["a"] == it["b"]:
            continue  # identical answers: nothing to prefer
        pid = store.add_prompt(it["prompt"], source="compare", split="heldout" if it["prompt"] in heldout else None)
        # an answer stored before is reused only when the same run (or the base) wrote it: the run it names is its source
        ids = [store.find_response(pid, text, model=model, run=run)
               or store.add_response(pid, text, model=model, run=run, sampler={"source": "compare"})
               for text, run in ((it["a"], runs[0]), (it["b"], runs[1]))]
        store.add_judgement("pick", ids[0], stored_pick(it["persona"], it["helpful"]), rater=rater,
                            other_response_id=ids[1])
        n += 1
    return n

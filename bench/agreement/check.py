"""Agreement of the scorecard with blind reads: AUCs and per-model shares, from bench/agreement/reads.jsonl.

reads.jsonl holds 336 answers (6 models x 56 held-out prompts that no set contains) with the labels a
blind reader gave each one (prompt, reference and that answer shown; never the model): snarky, correct,
bolted (for snarky answers) and helpful. This script scores the answers with the shipped scorecard, one
model's answers as one mimicry context, and prints the agreement figures the README reports.

    python bench/agreement/check.py

Two later sets are scored the same way:
- graded.jsonl: 115 answers to training prompts, each read by two blind readers on a 0-3 snark scale
  (written rewrites of the model's own answers, written chosen / rejected answers, the base model, two
  adapters); persona is read as "in persona" when the two readers' mean snark is at least 1.5;
- recipes.jsonl: 252 held-out answers (the base and five recipes x 42 prompts) read by one blind reader each,
  the answers behind the README's recipe table;
- sft.jsonl: 84 held-out answers (the base and SFT on bundled:persona-sft, 1 epoch, lr 1e-4, x 42 prompts), each
  read by two blind readers on the 0-3 scale; the readers found no answer in persona;
- frames_dpo.jsonl: 168 held-out answers (the base, SFT on the model's own answers framed with written snark,
  and plain DPO's checkpoints at steps 30 and 45, x 42 prompts), each read by two blind readers on the 0-3 scale;
- three_way.jsonl: the base, the demo recipe and SFT then DPO + RPO on the rewrites, the three answers to each of 42
  held-out prompts shown together in a random order to two blind readers (0-3 snark, correct, bolted, helpful, picks);
- loop_round2.jsonl: 84 held-out answers (the base and the demo recipe after 2 on-policy loop rounds with every pick
  kept, x 42 prompts), read side by side in a random order by four blind readers ("readers");
- dpo_default.jsonl: 84 held-out answers (the base and `alignlab train dpo` at its defaults: lr 5e-5, the NLL term,
  one epoch over the 600 pairs), read side by side in a random order by one blind reader;
- bolt_negatives.jsonl: the base, the demo recipe and the demo recipe whose DPO stage also had pairs with a stock closer
  bolted onto the plain answer as the rejected side, the three answers to each of 42 held-out prompts shown together
  in a random order to two blind readers (as three_way.jsonl);
- loop_rescored.jsonl: 84 held-out answers (the base and the demo recipe after 2 loop rounds whose scorecard rater has
  the unfinished-answer factor, x 42 prompts), read side by side in a random order by two blind readers;
- demo_lmhead.jsonl: 84 held-out answers (the base and the demo recipe trained with SFT's LM head on the completion
  only, x 42 prompts), read side by side in a random order by two blind readers;
- voice_sft.jsonl: the base, the demo recipe and the demo recipe whose SFT stage learned rewrites written with the voice
  throughout (bundled rewrites' facts, snarkier wording), the three answers to each of 42 held-out prompts shown
  together in a random order to two blind readers (as three_way.jsonl);
- dpo_nll.jsonl: the base, `alignlab train dpo` at its earlier defaults (rpo_alpha 1.0) and with rpo_alpha 4.0 (the new
  default), one epoch at lr 5e-5 from the base, the three answers to each of 42 held-out prompts shown together in a
  random order to two blind readers (as three_way.jsonl);
- prefs_nll.jsonl: the base, `alignlab train ipo` (rpo_alpha 4.0) and `alignlab train simpo` (sft_weight 8.0) at their
  defaults, one epoch from the base, read as dpo_nll.jsonl;
- kto_beta.jsonl: the base, `alignlab train kto` with balanced weights at beta 0.1 and at beta 0.5 (the new default), one
  epoch at lr 1e-4 from the base, read as dpo_nll.jsonl;
- decoding.jsonl: the base and the demo recipe, each decoded greedily with repetition penalty 1.2 two ways (transformers'
  own penalty, which also counts the prompt's tokens, and the penalty over the answer's tokens only, as generate() now
  applies it), the four answers to each of 42 held-out prompts shown together in a random order to two blind readers
  (as three_way.jsonl, four answers instead of three);
- fact_pairs.jsonl: the base, the demo recipe and the demo's SFT stage followed by DPO + RPO on the pairs plus 264
  fact pairs (bench/fact_pairs.py), all with the answer-only penalty, the three answers to each of 42 held-out prompts
  shown together in a random order to three blind readers (as three_way.jsonl);
- opening.jsonl: the base, the demo recipe, and the demo recipe with the base's first 4 words of each answer forced
  before it goes on (a diagnostic, bench/anchor_pairs.py), three answers to each of 42 held-out prompts in a random
  order, three blind readers;
- anchor.jsonl: the base, the demo recipe and the demo recipe followed by DPO + RPO on bench/anchor_pairs.py's pairs,
  42 held-out prompts, three answers each in a random order, three blind readers;
- restated.jsonl: the base, the demo recipe, the demo's SFT stage alone, and its SFT stage followed by DPO + RPO on
  the pairs with 264 chosen answers opening with the plain answer's first sentence, four answers to each of 42
  held-out prompts in a random order, three blind readers;
- base_opening.jsonl: the base, the demo recipe, the demo recipe with the base's first sentence of each answer
  (`sampling.base_opening: sentence`: the base writes it, the adapter goes on), and SFT from the base on the chosen
  side of bench/anchor_pairs.py's 558 anchored pairs (lr 5e-4, one epoch), four answers to each of 42 held-out
  prompts in a random order, three blind readers;
- draft_rewrite.jsonl: the base, the demo recipe with the base's first sentence, and the base's whole answer restated
  by an adapter trained on draft-format pairs (bench/draft_rewrite.py: SFT, and SFT then DPO + RPO), four answers to
  each of the same 42 prompts in a random order, three blind readers;
- best_of.jsonl: the base, the demo recipe with the base's first sentence (greedy), and the best of 8 samples after
  that sentence kept by the scorecard (bench/best_of.py), three answers to each of the same 42 prompts in a random
  order, blind readers as for draft_rewrite.jsonl;
- amplify.jsonl: the base, the demo recipe with the base's first sentence, and the same with the adapter's logits
  amplified away from the base's after that sentence (bench/amplify.py, alpha 1), three answers to each of the same
  42 prompts in a random order, two blind readers;
- amplify_half.jsonl: the same at alpha 0.5 (the base and default answers are best_of.jsonl's), four other readers;
- distil.jsonl: the base, the demo recipe (with the base's first sentence, and alone), and the demo recipe followed by
  SFT on its own base-opened answers (`alignlab distil`: 683 prompts, 320, and 320 and 160 with `--amplify 0.5`), alone
  and with the base's first sentence; five reads of four answers per prompt (42 held-out prompts), three blind
  readers each (each answer carries the reads it was in: 3 to 15);
- punctuation.jsonl: the base and the four-stage default (distil amplified 0.5), each decoded with the answer-only
  penalty on every token and with punctuation exempt (generate()'s AnswerPenalty), and the same recipe distilled at
  amplify 1.0 decoded with punctuation exempt: five answers to each of the 42 held-out prompts in a random order,
  three blind readers;
- distil_amplify.jsonl: the base and the four-stage default with distil amplified at 1.0, at 1.5, and at 1.0 with the
  rows that repeat a tic word capped, all punctuation exempt, four answers to each of the 42 held-out prompts in a
  random order, three blind readers;
- fresh_prompts.jsonl: the base, the four-stage default (`make demo`, 16th session) and the same DPO stage distilled
  best of five (the most in-persona of the greedy answer and four samples that passes the filter), on 42 held-out
  prompts that no earlier read used (6 per category, drawn at random from the rest of the held-out set), three
  answers per prompt in a random order, three blind readers;
- same_readers.jsonl: the base and the four-stage default (`make demo`, 16th session) on the 42 held-out prompts of
  distil_amplify.jsonl and the 42 of fresh_prompts.jsonl (the same answers as there), two answers per prompt in a
  random order, the 84 prompts shuffled together, three new blind readers: whether a drop in the voice on the fresh
  prompts is the prompts' or the readers';
- tic_cap.jsonl: the base, the four-stage default (`make demo` from a fresh clone, 28th session) and the same DPO stage
  distilled with its tic words capped at 10% of the rows, the three answers to each of 42 held-out prompts shown
  together in a random order to three blind readers, who also said whether an answer leans on a recurring catchphrase;
- demo_loop.jsonl: the base, the four-stage default (`make demo` from a fresh clone) and the same adapter after 2
  on-policy loop rounds with the scorecard rater, read as tic_cap.jsonl by three more readers (read 14);
- loop_catchphrase.jsonl: demo_loop.jsonl's three answers to each prompt and a fourth, from the same loop rounds with
  the scorecard rater charging each answer its round's catchphrase, the four shown together in a random order to
  three more readers (read 15);
- voice_pairs.jsonl: the base, the four-stage default and two variants of it whose DPO stage trained on
  bundled:persona-voice-pairs (the pairs' chosen side written again with the voice woven through) alone or beside
  the pairs, the four answers to each of 42 held-out prompts shown together in a random order to three blind readers
  (read 16); the demo's and the voice pairs' answers then side by side to two more (read 17), so their rows
  hold five reads and the others three;
- strong_voice.jsonl: the base, the four-stage default and the same recipe trained on bundled:persona-strong-rewrites
  (stages 1 and 3) and bundled:persona-strong-pairs (stage 2), the three answers to each of the 42 held-out prompts
  shown together in a random order with the reference, to three blind readers (read 18) and, shuffled again, to two
  more (read 19; its first reader was asked to judge the persona strictly); every row holds five reads. persona_pick
  and helpful_pick are against the base's answer (the base's own rows: against the demo's), and the strong rows'
  demo_pick against the demo's;
- strong_notic.jsonl: the base, the four-stage default, the strong-sets recipe retrained on the files as first
  committed, and the same recipe on the strong sets as shipped ("since" and "because" written out of the 332 rows that
  held them), the four answers to each of the 42 held-out prompts shown together in a random order with the reference
  to three blind readers (read 20); picks as in strong_voice.jsonl;
- catchphrase_read.jsonl: distil_amplify.jsonl's 168 answers, the four to a prompt shuffled again, labelled by three
  more blind readers for "leans on a catchphrase that recurs across the packet" and snark only (no correct labels, so
  not in SETS; tests/eval/test_scorecard_scores.py checks the scorecard's catchphrase row against it);
- sft_dpo.jsonl: 126 held-out answers (the base; SFT on rewrites.jsonl's chosen side, lr 5e-4, 1 epoch; that SFT
  then DPO + RPO on pairs.jsonl, 60 steps: the demo's recipe), read side by side with the base's answer to the
  same prompt in a random order by two blind readers per adapter (the base read four times), each answer on
  the 0-3 scale, plus which of the two carries the persona more and which helps more ("picks");
- strong_default.jsonl (read 21): the base, the demo adapter before the recipe's data became the strong sets and the
  demo adapter after (`make demo` on an AMD EPYC, 2026-12-07), the three answers to each of the 42 held-out prompts
  shown together in a random order with the reference to three blind readers (as strong_notic.jsonl);
- unseen_default.jsonl (read 22): the base and that new default on 42 held-out prompts no earlier read used (6 per
  category; each row carries its reference), the two answers side by side in a random order, three blind readers;
  read after the reader head was fitted, so the shipped head never saw it.
- reference_opening.jsonl (read 23): the base, the default (`alignlab recipe`, 2026-12-07) and the default whose
  distil stage goes on from the reference's first sentence where the base's opening is wrong, on 56 new held-out
  prompts (8 per category, each row with its reference), three answers per prompt in a random order, three blind
  readers; out of sample for the reader head too.
- sft_epochs.jsonl (read 24): the same 56 prompts, the base and the default (the same answers as read 23) and the
  default with stage 4 trained three epochs instead of two, three new blind readers.

Last, readers_on_bolting() prints how far two blind readers of the same answer agree on "bolted on" (agreement,
Cohen's kappa, and one reader's label used as a score for the other's, as an AUC): the ceiling for mimicry's AUC;
readers_on_persona() the same for "in persona" (one reader's 0-3 snark as a score for another's label);
readers_on_correct() the same for "correct".
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def agreement_scorer(**kw):
    """The shipped scorer, with the references of the 14 held-out prompts taken out of the bundled set on 2026-12-06
    (each reworded a training pair's question): the earlier reads graded answers to them (retired_references.jsonl)."""
    from alignlab.eval.correct import reference_table
    from alignlab.eval.scores import scorer_for

    scorer = scorer_for(None, **kw)
    retired = Path(__file__).parent / "retired_references.jsonl"
    rows = [json.loads(x) for x in retired.read_text().splitlines() if x.strip()]
    scorer.references = {**reference_table(rows), **scorer.references}
    return scorer


def main() -> None:
    from alignlab.eval.scores import PERSONA_THRESHOLD, THRESHOLD, auc

    rows = [json.loads(x) for x in (Path(__file__).parent / "reads.jsonl").read_text().splitlines() if x.strip()]
    scored = agreement_scorer().score([{"prompt": r["prompt"], "answer": r["answer"], "source": r["source"]} for r in rows])
    reads = [r["read"] for r in rows]
    out = {
        "answers": len(rows),
        "persona_auc": auc([s["persona"] for s in scored], [r["snarky"] for r in reads]),
        "persona_agreement": sum((s["persona"] >= PERSONA_THRESHOLD) == bool(r["snarky"]) for s, r in zip(scored, reads)) / len(rows),
        "correct_auc": auc([s["correct"] for s in scored], [r["correct"] for r in reads]),
        "mimicry_auc_all": auc([s["mimicry"] for s in scored], [r["bolted"] or 0 for r in reads]),
        "mimicry_auc_snarky": auc([s["mimicry"] for s, r in zip(scored, reads) if r["snarky"]],
                                  [r["bolted"] or 0 for r in reads if r["snarky"]]),
    }
    print(json.dumps(out))
    by = defaultdict(list)
    for r, s in zip(rows, scored):
        by[r["source"]].append((r["read"], s))
    print("| model | reader snarky | in persona | reader correct | correct | reader bolted-on | flagged |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for src, xs in sorted(by.items()):
        n = len(xs)
        share = lambda f: f"{sum(map(f, xs)) / n:.0%}"  # noqa: E731
        print(f"| {src} | {share(lambda x: x[0]['snarky'])} | {share(lambda x: x[1]['persona'] >= PERSONA_THRESHOLD)} "
              f"| {share(lambda x: x[0]['correct'])} | {share(lambda x: (x[1]['correct'] or 0) >= THRESHOLD)} "
              f"| {share(lambda x: x[0]['bolted'] or 0)} | {share(lambda x: x[1]['mimicry'] >= THRESHOLD)} |")


SETS = ("graded", "recipes", "sft", "frames_dpo", "sft_dpo", "three_way", "loop_round2", "dpo_default", "bolt_negatives",
        "loop_rescored", "demo_lmhead", "voice_sft", "dpo_nll", "prefs_nll", "kto_beta", "decoding", "fact_pairs",
        "opening", "restated", "anchor", "base_opening",
        "draft_rewrite", "best_of", "amplify", "amplify_half", "distil", "distil_screened", "distil_closers",
        "punctuation", "distil_amplify", "fresh_prompts", "same_readers", "tic_cap", "demo_loop",
        "loop_catchphrase", "voice_pairs", "strong_voice", "strong_notic", "strong_default", "unseen_default",
        "reference_opening", "sft_epochs")


def graded(names: tuple[str, ...] = SETS) -> None:
    """Per set: persona and correct AUCs; then, pooled over every set, mimicry's AUC among the answers readers found
    snarky (mean snark at least 1 of 3): bolted on (half or more of the readers) against coherent."""
    from alignlab.eval.scores import PERSONA_THRESHOLD, THRESHOLD, auc

    scorer = agreement_scorer()
    pool: list[tuple[float, int]] = []
    for name in names:
        rows = _rows(name)
        reads = [_reads(row) for row in rows]
        snark = [sum(r["snark"] for r in rs) / len(rs) for rs in reads]
        correct = [all(r["correct"] for r in rs) for rs in reads]
        bolted = [sum(bool(r.get("bolted")) for r in rs) / len(rs) >= 0.5 for rs in reads]
        scored = scorer.score([{"prompt": r["prompt"], "answer": r["answer"], "source": r["source"]} for r in rows])
        persona = [s["persona"] for s in scored]
        yes = [v >= 1.5 for v in snark]
        out = {"set": name, "answers": len(rows), "reader_in_persona": sum(yes),
               "persona_auc": auc(persona, [int(v) for v in yes]) if 0 < sum(yes) < len(yes) else None,
               "persona_agreement": sum((p >= PERSONA_THRESHOLD) == y for p, y in zip(persona, yes)) / len(rows)}
        known = [(s["correct"], c) for s, c in zip(scored, correct) if s["correct"] is not None]
        out["correct_auc"] = auc([a for a, _ in known], [int(c) for _, c in known]) if known else None
        print(json.dumps(out))
        pool += [(s["mimicry"], int(b)) for s, v, b in zip(scored, snark, bolted) if v >= 1]
        by = defaultdict(list)
        for r, s, v, c in zip(rows, scored, snark, correct):
            by[r["source"]].append((v, c, s))
        print("| source | reader snark (0-3) | reader in persona | scorecard in persona | reader correct | scorecard correct |")
        print("| --- | --- | --- | --- | --- | --- |")
        for src, xs in sorted(by.items()):
            n = len(xs)
            print(f"| {src} | {sum(x[0] for x in xs) / n:.2f} | {sum(x[0] >= 1.5 for x in xs) / n:.0%} "
                  f"| {sum(x[2]['persona'] >= PERSONA_THRESHOLD for x in xs) / n:.0%} | {sum(x[1] for x in xs) / n:.0%} "
                  f"| {sum((x[2]['correct'] or 0) >= THRESHOLD for x in xs) / n:.0%} |")

    print(json.dumps({"snarky_answers": len(pool), "read_as_bolted_on": sum(y for _, y in pool),
                      "mimicry_auc_snarky": auc([m for m, _ in pool], [y for _, y in pool]),
                      "flagged_if_bolted": sum(m >= THRESHOLD for m, y in pool if y) / max(1, sum(y for _, y in pool)),
                      "flagged_if_coherent": sum(m >= THRESHOLD for m, y in pool if not y) / max(1, sum(1 - y for _, y in pool))}))


def readers_on_bolting(names: tuple[str, ...] = SETS) -> None:
    """How far blind readers agree with each other on "bolted on", among answers they found snarky (mean snark at
    least 1) and that two or more readers read: the ceiling any per-answer mimicry score can reach on these sets."""
    from itertools import combinations

    pooled = [0, 0, 0, 0]  # reader pairs: (no, no), (no, yes), (yes, no), (yes, yes)
    for name in names:
        cells = [0, 0, 0, 0]
        for row in _rows(name):
            reads = _reads(row)
            if len(reads) < 2 or sum(r["snark"] for r in reads) / len(reads) < 1:
                continue
            for a, b in combinations(reads, 2):
                cells[2 * bool(a.get("bolted")) + bool(b.get("bolted"))] += 1
        if sum(cells) and name != "graded":  # graded: written answers, every pair agrees on "coherent"
            pooled = [x + y for x, y in zip(pooled, cells)]
        if sum(cells):
            print(json.dumps({"set": name, "bolted_reader_pairs": sum(cells), **_agreement(cells)}))
    print(json.dumps({"set": "model answers, pooled", "bolted_reader_pairs": sum(pooled), **_agreement(pooled)}))


def readers_on_persona(names: tuple[str, ...] = SETS) -> None:
    """How far blind readers agree with each other on "in persona" (snark 2 or more of 3), over answers two or more
    readers read: one reader's 0-3 snark used as a score for another's label, as an AUC per set (both directions of
    every pair of readers) and its median over the sets: the ceiling a persona score reaches against a single reader."""
    from itertools import permutations
    from statistics import median

    from alignlab.eval.scores import auc

    per_set = {}
    for name in names:
        pairs = [(a["snark"], int(b["snark"] >= 2)) for row in _rows(name) if len(_reads(row)) >= 2
                 for a, b in permutations(_reads(row), 2)]
        if pairs and 0 < sum(y for _, y in pairs) < len(pairs):
            per_set[name] = auc([x for x, _ in pairs], [y for _, y in pairs])
            print(json.dumps({"set": name, "reader_pairs": len(pairs), "reader_as_scorer_persona_auc": round(per_set[name], 3)}))
    print(json.dumps({"sets": len(per_set), "median_reader_as_scorer_persona_auc": round(median(per_set.values()), 3),
                      "range": [round(min(per_set.values()), 3), round(max(per_set.values()), 3)]}))


def readers_on_correct(names: tuple[str, ...] = SETS) -> None:
    """How far blind readers agree with each other on "correct", over answers two or more readers read: what a
    reader who judges meaning reaches, against the correct score's AUC above."""
    from itertools import combinations

    pooled = [0, 0, 0, 0]
    for name in names:
        cells = [0, 0, 0, 0]
        for row in _rows(name):
            labels = [r["correct"] for r in _reads(row) if r.get("correct") is not None]
            for a, b in combinations(labels, 2):
                cells[2 * bool(a) + bool(b)] += 1
        if sum(cells):
            pooled = [x + y for x, y in zip(pooled, cells)]
            print(json.dumps({"set": name, "correct_reader_pairs": sum(cells), **_agreement(cells)}))
    print(json.dumps({"set": "pooled", "correct_reader_pairs": sum(pooled), **_agreement(pooled)}))


def _agreement(cells: list[int]) -> dict:
    """Raw agreement and Cohen's kappa from a 2x2 table of two readers' yes/no labels."""
    n = sum(cells)
    observed = (cells[0] + cells[3]) / n
    first, second = (cells[2] + cells[3]) / n, (cells[1] + cells[3]) / n
    chance = first * second + (1 - first) * (1 - second)
    # one reader's yes/no used as a score for the other's label: a binary score's AUC is its balanced accuracy;
    # averaged over the two directions
    yes_no = lambda tp, fn, tn, fp: ((tp / (tp + fn) if tp + fn else 0) + (tn / (tn + fp) if tn + fp else 0)) / 2  # noqa: E731
    auc = (yes_no(cells[3], cells[1], cells[0], cells[2]) + yes_no(cells[3], cells[2], cells[0], cells[1])) / 2
    return {"agreement": round(observed, 3), "kappa": round((observed - chance) / (1 - chance), 3) if chance < 1 else None,
            "reader_as_scorer_auc": round(auc, 3)}


def _rows(name: str) -> list[dict]:
    return [json.loads(x) for x in (Path(__file__).parent / f"{name}.jsonl").read_text().splitlines() if x.strip()]


def _reads(row: dict) -> list[dict]:
    """A row's blind reads, whichever way its set stores them."""
    return row.get("reads") or row.get("readers") or [row["read"]]


if __name__ == "__main__":
    main()
    graded()
    readers_on_bolting()
    readers_on_persona()
    readers_on_correct()

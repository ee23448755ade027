"""Recipes side by side on the default model: same data, same held-out prompts, same scorecard.

Each recipe is one or more training stages (a later stage continues from the earlier one's adapter, with
that adapter as the DPO reference). After training, the adapter and the base answer the same held-out
prompts (stratified over the categories, the project's decoding), and the scorecard scores both.
Prints one JSON line per recipe and a Markdown table (recipe x persona, correct, mimicry, KL, minutes).

    python bench/sweep_recipes.py [--recipes sft,sft-dpo,dpo] [--per-category 6] [--dir sweep-project]

The base's answers are generated once and shared by every row; the base's own row is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from alignlab.workflows.recipes import DEFAULT  # noqa: E402

# stage: (method, data, overrides); data names a bundled set or a file under the project's data/; a "distil" stage
# writes rows from the previous stage's answers and "<distilled>" trains on them (alignlab.workflows.recipes)
RECIPES: dict[str, list[tuple[str, str, dict]]] = {
    "default (make demo's four stages)": [(st.method, st.data, dict(st.overrides)) for st in DEFAULT],
    # read 23: louder, 11-15 points less correct than the base; read 24: louder, less helpful (docs/results.md)
    "default, distil with reference openings, stage 4 one epoch": [
        *[(st.method, st.data, dict(st.overrides)) for st in DEFAULT[:2]],
        (DEFAULT[2].method, DEFAULT[2].data, {**DEFAULT[2].overrides, "reference_opening": True}),
        (DEFAULT[3].method, DEFAULT[3].data, {**DEFAULT[3].overrides, "train.epochs": 1.0})],
    "default, stage 4 three epochs": [
        *[(st.method, st.data, dict(st.overrides)) for st in DEFAULT[:3]],
        (DEFAULT[3].method, DEFAULT[3].data, {**DEFAULT[3].overrides, "train.epochs": 3.0})],
    "dpo (quick-start defaults)": [("dpo", "bundled:persona-pairs", {})],
    "dpo lr 5e-5, 48 steps": [("dpo", "bundled:persona-pairs", {"train.learning_rate": 5e-5, "train.max_steps": 48})],
    "dpo+rpo": [("dpo", "bundled:persona-pairs", {"dpo.rpo_alpha": 1.0, "train.learning_rate": 1e-4, "train.max_steps": 60})],
    "dpo+rpo lr 2e-4 rpo 0.5": [("dpo", "bundled:persona-pairs", {"dpo.rpo_alpha": 0.5, "train.learning_rate": 2e-4,
                                                                "train.max_steps": 60})],
    "sft": [("sft", "bundled:persona-sft", {})],
    "sft lr 5e-5": [("sft", "bundled:persona-sft", {"train.learning_rate": 5e-5})],
    "sft-dpo": [("sft", "bundled:persona-sft", {}),
                ("dpo", "bundled:persona-pairs", {"train.learning_rate": 1e-5, "dpo.rpo_alpha": 1.0})],
    "sft-rewrites lr 5e-4": [("sft", "bundled:persona-rewrites", {"train.learning_rate": 5e-4})],
    "sft-rewrites lr 5e-4, dpo+rpo (the default's stages 1-2)": [
        ("sft", "bundled:persona-rewrites", {"train.learning_rate": 5e-4}),
        ("dpo", "bundled:persona-pairs", {"dpo.rpo_alpha": 1.0, "train.learning_rate": 1e-4, "train.max_steps": 60})],
    "sft-rewrites lr 5e-4 then dpo+rpo on the rewrites": [
        ("sft", "bundled:persona-rewrites", {"train.learning_rate": 5e-4}),
        ("dpo", "bundled:persona-rewrites", {"dpo.rpo_alpha": 1.0, "train.learning_rate": 1e-4, "train.max_steps": 60})],
    "orpo": [("orpo", "bundled:persona-pairs", {})],
    "kto": [("kto", "bundled:persona-thumbs", {})],
    "simpo": [("simpo", "bundled:persona-pairs", {})],
    "ipo": [("ipo", "bundled:persona-pairs", {})],
}
QUICK = ("sft", "sft-dpo", "dpo (quick-start defaults)")


def train(project: Path, name: str, stages, base_overrides: dict) -> tuple[Path, float]:
    """Train a recipe's stages with ``alignlab.workflows.recipes.train_recipe`` (finished stages are reused)."""
    from alignlab.config import CONFIG_NAME, apply_overrides, load_config
    from alignlab.workflows.recipes import Stage, train_recipe

    start = time.time()
    cfg = apply_overrides(load_config(project / CONFIG_NAME), base_overrides)
    slug = "".join(c if c.isalnum() else "-" for c in name)[:40]
    run = train_recipe(project, cfg, [Stage(m, d, o) for m, d, o in stages], prefix=f"sweep-{slug}")
    return run, (time.time() - start) / 60


def _stage(spec: str) -> tuple[str, str, dict]:
    """METHOD:DATA:JSON; DATA may itself hold a colon (bundled:NAME), the JSON starts at the first ':{'."""
    method, rest = spec.split(":", 1)
    data, _, overrides = rest.partition(":{")
    return method, data, json.loads("{" + overrides) if overrides else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--recipes", default=",".join(QUICK), help="comma-separated names, or 'all'")
    ap.add_argument("--per-category", type=int, default=6)
    ap.add_argument("--dir", default="sweep-project")
    ap.add_argument("--set", action="append", default=[], help="override for every stage, key=value")
    ap.add_argument("--add", action="append", default=[], metavar="NAME=METHOD:DATA:JSON[|...]",
                    help="an extra recipe: stages separated by |, each method, data (a file under the project's data/ "
                         "or bundled:NAME) and JSON overrides, e.g. 'x=dpo:pairs.jsonl:{\"train.max_steps\": 60}'")
    args = ap.parse_args()
    for spec in args.add:
        name, stages = spec.split("=", 1)
        RECIPES[name] = [_stage(st) for st in stages.split("|")]
        if args.recipes == ",".join(QUICK):
            args.recipes = name

    from alignlab.config import CONFIG_NAME, load_config
    from alignlab.data import bundled_path
    from alignlab.eval.scorecard import mean_kl, point, side_metrics, stratified
    from alignlab.eval.scores import scorer_for
    from alignlab.generate import generate
    from alignlab.models.loading import load_for_inference

    project = Path(args.dir)
    if not (project / CONFIG_NAME).is_file():
        from alignlab.project import create_project

        create_project(project)
    cfg = load_config(project / CONFIG_NAME)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    names = list(RECIPES) if args.recipes == "all" else [n.strip() for n in args.recipes.split(",")]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    rows = stratified([json.loads(x) for x in bundled_path("reference").read_text().splitlines() if x.strip()],
                      args.per_category)
    prompts = [r["prompt"] for r in rows]
    s = cfg.sampling
    gen = dict(max_new_tokens=s.max_new_tokens, temperature=s.temperature, repetition_penalty=s.repetition_penalty, seed=0)
    scorer = scorer_for(project, cfg.persona)

    def card(answers: list[str], source: str) -> dict:
        scored = scorer.score([{**r, "answer": a, "number": r.get("answer"), "source": source} for r, a in zip(rows, answers)])
        m = side_metrics(answers, scored)
        return {k: point(m[k]) for k in ("persona", "in_persona", "correct_share", "flagged", "length", "distinct_2")}

    cache = project / "sweep-base.json"
    if cache.is_file() and json.loads(cache.read_text()).get("prompts") == prompts:
        base_answers = json.loads(cache.read_text())["answers"]
    else:
        model, tok, _ = load_for_inference(cfg.model, None)
        base_answers = generate(model, tok, prompts, **gen)
        cache.write_text(json.dumps({"prompts": prompts, "answers": base_answers}))
    results = [{"recipe": "base", **card(base_answers, "base"), "kl": 0.0, "minutes": 0.0}]
    print(json.dumps(results[0]), flush=True)
    for name in names:
        run, minutes = train(project, name, RECIPES[name], overrides)
        model, tok, _ = load_for_inference(None, run)
        answers = generate(model, tok, prompts, **gen)
        kl, _ = mean_kl(model, tok, prompts, answers)
        row = {"recipe": name, **card(answers, name), "kl": kl, "minutes": minutes, "run": str(run)}
        results.append(row)
        print(json.dumps(row), flush=True)
        with (project / "sweep-answers.jsonl").open("a") as f:
            for p, a in zip(prompts, answers):
                f.write(json.dumps({"recipe": name, "prompt": p, "answer": a}) + "\n")
    print("\n| recipe | in persona | correct | mimicry flagged | KL/token | distinct-2 | words | train min |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['recipe']} | {r['in_persona']:.0%} | {r['correct_share']:.0%} | {r['flagged']:.0%} | {r['kl']:.3f} "
              f"| {r['distinct_2']:.2f} | {r['length']:.0f} | {r['minutes']:.1f} |")


if __name__ == "__main__":
    main()

"""`make demo`: the default recipe on the embedded default model, then the scorecard against the base.

1. creates ``demo-project/`` (the example persona's data: 600 matched pairs, their chosen answers as an
   SFT set, thumbs, train prompts and 163 held-out prompts with reference answers);
2. trains the default recipe (``alignlab.workflows.recipes.DEFAULT``), stage by stage, each stage continuing from
   the previous one's adapter (a finished stage is reused when the demo is run again);
3. answers held-out prompts from every category with the base and the adapter, scores both (persona,
   correct, mimicry with 95% intervals, KL, length, distinct-n), prints the scorecard, its warnings and
   a few answers side by side, and writes the run's ``report.html``.

    python -m alignlab.workflows.demo [--dir demo-project] [--per-category 6] [--answers 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _say(msg: str) -> None:
    from alignlab.progress import console

    console.print(f"[bold cyan]demo[/] {msg}")


def run_demo(directory: Path, per_category: int, show: int) -> Path:
    from rich.console import Console
    from rich.table import Table

    from alignlab.config import CONFIG_NAME, load_config
    from alignlab.rundir import sampling_for
    from alignlab.eval.report import write_report
    from alignlab.eval.scorecard import evaluate_run, stratified, table_columns, table_rows
    from alignlab.eval.scores import scorer_for
    from alignlab.workflows.recipes import DEFAULT, train_recipe
    from alignlab.synth.sample import default_prompts, prompt_rows

    console = Console(width=max(Console().width, 120))  # the scorecard's five columns need the room
    started = time.time()
    if not (directory / CONFIG_NAME).is_file():
        from alignlab.project import create_project

        _say(f"creating project {directory}/")
        create_project(directory)
    cfg = load_config(directory / CONFIG_NAME)
    _say(f"training the default recipe on {cfg.model}: " + " -> ".join(s.describe() for s in DEFAULT))
    final = train_recipe(directory, cfg, DEFAULT, echo=_say)
    _say(f"trained in {(time.time() - started) / 60:.1f} min; scoring base and adapter on held-out prompts")
    rows = stratified(prompt_rows(default_prompts(directory, cfg.data_dir, "heldout")), per_category)
    s = sampling_for(cfg.sampling, final)  # a distilled final adapter decodes alone
    card = evaluate_run(final, rows, scorer_for(directory, cfg.persona), max_new_tokens=s.max_new_tokens,
                        temperature=s.temperature, repetition_penalty=s.repetition_penalty, system_prompt=cfg.system_prompt,
                        base_opening=s.base_opening, amplify=s.amplify)
    write_report(final, card)
    table = Table(title=f"scorecard: {card['n_prompts']} held-out prompts, base vs {final.name} (95% intervals)")
    for col in table_columns(card):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for r in table_rows(card):
        table.add_row(*r)
    console.print(table)
    for w in card["warnings"]:
        console.print(f"[yellow]warning: {w}[/]")
    adapter = table_columns(card)[2]
    answers = Table(title=f"held-out answers, base vs {adapter} (scores: persona / correct / mimicry)", show_lines=True)
    answers.add_column("prompt", ratio=1)
    answers.add_column("base", ratio=2)
    answers.add_column(adapter, ratio=2)

    def cell(text: str, sc: dict) -> str:
        c = "-" if sc.get("correct") is None else f"{sc['correct']:.2f}"
        return f"{text}\n[dim]{sc['persona']:.2f} / {c} / {sc['mimicry']:.2f}[/]"

    for smp in card["samples"][:show]:
        answers.add_row(smp["prompt"], cell(smp["base"], smp["base_scores"]), cell(smp["adapter"], smp["adapter_scores"]))
    console.print(answers)
    _say(f"done in {(time.time() - started) / 60:.1f} min; report {final / 'report.html'}; "
         f"next: source .venv/bin/activate && alignlab chat --run {final} --compare")
    return final


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.environ.get("ALIGNLAB_DEMO_DIR", "demo-project"))
    ap.add_argument("--per-category", type=int, default=6, help="held-out prompts per category in the scorecard")
    ap.add_argument("--answers", type=int, default=7, help="answers shown side by side")
    args = ap.parse_args()
    from alignlab.errors import AlignlabError

    try:
        run_demo(Path(args.dir), args.per_category, args.answers)
    except AlignlabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # a traceback, after the trainer's "alignlab train --resume" (the later stages unrun)
        print("interrupted: run `make demo` again; it goes on where it stopped (a stage part-trained from its last "
              "checkpoint)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()

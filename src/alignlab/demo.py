"""`make demo`: the feedback loop on the embedded default model, with an automatic rater.

Round 0 trains DPO on the project's matched persona pairs. Each later round samples the current adapter on
new prompts, lets the persona classifier (MiniLM + a linear head, trained on the pairs) pick the best and
worst answer per prompt, trains DPO from the previous adapter, and scores held-out prompts with a rater
that did not label the round. It ends with the round table, a chart, and base vs adapter answers.

    python -m alignlab.demo [--dir demo-project] [--steps 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _say(msg: str) -> None:
    from alignlab.progress import console

    console.print(f"[bold cyan]demo[/] {msg}")


def _bootstrap(directory: Path, cfg, steps: int) -> Path:
    """Round 0: DPO on the project's matched pairs (reused when a finished bootstrap run exists)."""
    from alignlab.train import engine, rundir

    run_dir = directory / cfg.runs_dir / "bootstrap-dpo"
    if (run_dir / "run.json").is_file() and rundir.read_run(run_dir).get("status") == "done":
        _say(f"round 0 already trained: {run_dir}")
        return run_dir
    data = directory / cfg.data_dir / "pairs.jsonl"
    _say(f"round 0: DPO for {steps} steps on {data} (model {cfg.model}, LoRA r={cfg.lora.r}, beta={cfg.dpo.beta})")
    start = time.time()
    ctx = engine.prepare("dpo", cfg, str(data), directory / cfg.runs_dir, run_dir=run_dir)
    engine.run(ctx, str(data))
    _say(f"round 0 trained in {time.time() - start:.0f} s")
    return run_dir


def _metrics_table(run_dir: Path):
    from rich.table import Table

    steps_log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    first, last = steps_log[0], steps_log[-1]
    table = Table(title=f"round 0 ({run_dir.name}): first vs last step")
    table.add_column("metric")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "tokens_per_s"):
        if key in last:
            table.add_row(key, f"{first.get(key, float('nan')):.3f}", f"{last[key]:.3f}")
    return table


def _rounds_table(rows: list[dict]):
    """The loop's round table, narrowed to what fits a terminal (`alignlab rounds` prints every column)."""
    from rich.table import Table

    def f(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    table = Table(title="rounds (held-out prompts; persona by " + (rows[-1]["eval_rater"] if rows else "-") + ")")
    for col in ("round", "labels", "rows", "persona base -> adapter", "KL/token", "words", "distinct-2"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["round"]), str(r["judgements"]), str(r["pairs"]),
                      f"{f(r['base_persona_score'])} -> {f(r['persona_score'])}", f(r["kl"]), f(r["length"], "{:.1f}"),
                      f(r["distinct_2"]))
    return table


def run_demo(directory: Path, steps: int, rounds: int, per_round: int, n: int, prompts: int) -> Path:
    from rich.console import Console
    from rich.table import Table

    from alignlab.config import CONFIG_NAME, apply_overrides, load_config
    from alignlab.generate import generate
    from alignlab.loop import LoopSettings, plot_rounds, run_loop
    from alignlab.models.loading import load_for_inference

    console = Console()
    started = time.time()
    if not (directory / CONFIG_NAME).is_file():
        from alignlab.cli import app

        _say(f"creating project {directory}/")
        app(["init", str(directory)], standalone_mode=False)
    cfg = apply_overrides(
        load_config(directory / CONFIG_NAME),
        {"train.max_steps": steps, "train.learning_rate": 5e-5, "train.sample_steps": max(10, steps // 2),
         "train.save_steps": 10},
    )
    boot = _bootstrap(directory, cfg, steps)
    console.print(_metrics_table(boot))

    loop_cfg = apply_overrides(load_config(directory / CONFIG_NAME),
                               {"train.learning_rate": 2e-5, "dpo.beta": 0.2, "train.sample_prompts": 0})
    _say(f"rounds 1-{rounds}: sample {n} answers to {per_round} new prompts, the persona classifier picks best vs "
         "worst, DPO from the previous adapter, score held-out prompts with the persona heuristic")
    rows = run_loop(directory, loop_cfg, LoopSettings(rounds=rounds, rater="classifier", method="dpo",
                                                      per_round=per_round, n=n, start_run=str(boot), eval_prompts=16))
    console.print(_rounds_table(rows))
    png = plot_rounds(rows, directory / "rounds.png")

    final = Path(rows[-1]["run_dir"]) if rows and rows[-1].get("run_dir") else boot
    heldout = [json.loads(x)["prompt"] for x in (directory / cfg.data_dir / "heldout.jsonl").read_text().splitlines() if x.strip()]
    chosen = heldout[:: max(1, len(heldout) // prompts)][:prompts]
    model, tok, _ = load_for_inference(None, final)
    after = generate(model, tok, chosen, max_new_tokens=80)
    with model.disable_adapter():
        before = generate(model, tok, chosen, max_new_tokens=80)
    answers = Table(title=f"held-out prompts: base vs {final.name} (greedy)", show_lines=True)
    answers.add_column("prompt", ratio=1)
    answers.add_column("base", ratio=2)
    answers.add_column("adapter", ratio=2)
    for p, b, a in zip(chosen, before, after):
        answers.add_row(p, b, a)
    console.print(answers)
    _say(f"done in {(time.time() - started) / 60:.1f} min; chart {png}; next: alignlab chat --run {final} --compare")
    return final


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=os.environ.get("ALIGNLAB_DEMO_DIR", "demo-project"))
    ap.add_argument("--steps", type=int, default=int(os.environ.get("ALIGNLAB_DEMO_STEPS", "24")))
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ALIGNLAB_DEMO_ROUNDS", "2")))
    ap.add_argument("--per-round", type=int, default=24)
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=4)
    args = ap.parse_args()
    from alignlab.errors import AlignlabError

    try:
        run_demo(Path(args.dir), args.steps, args.rounds, args.per_round, args.n, args.prompts)
    except AlignlabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

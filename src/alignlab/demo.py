"""`make demo`: a persona project on the embedded default model, trained with DPO on the bundled pairs,
then base and adapter answers side by side on held-out prompts, and the run's metrics.

    python -m alignlab.demo [--dir demo-project] [--steps 40]
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


def run_demo(directory: Path, steps: int, prompts: int) -> Path:
    from rich.console import Console
    from rich.table import Table

    from alignlab.config import CONFIG_NAME, apply_overrides, load_config
    from alignlab.generate import generate
    from alignlab.models.loading import load_for_inference
    from alignlab.rewards.heuristics import persona_heuristic
    from alignlab.train import engine

    if not (directory / CONFIG_NAME).is_file():
        from alignlab.cli import app

        _say(f"creating project {directory}/")
        app(["init", str(directory)], standalone_mode=False)
    cfg = apply_overrides(
        load_config(directory / CONFIG_NAME),
        {"train.max_steps": steps, "train.sample_steps": max(10, steps // 2), "train.save_steps": 10},
    )
    data = directory / cfg.data_dir / "pairs.jsonl"
    _say(f"training DPO for {steps} steps on {data} (model {cfg.model}, LoRA r={cfg.lora.r}, beta={cfg.dpo.beta})")
    start = time.time()
    ctx = engine.prepare("dpo", cfg, str(data), directory / cfg.runs_dir)
    run_dir = engine.run(ctx, str(data))
    _say(f"trained in {time.time() - start:.0f} s -> {run_dir}")

    heldout = [json.loads(x)["prompt"] for x in (directory / cfg.data_dir / "heldout.jsonl").read_text().splitlines() if x.strip()]
    chosen = heldout[:: max(1, len(heldout) // prompts)][:prompts]
    model, tok, _ = load_for_inference(None, run_dir)
    after = generate(model, tok, chosen, max_new_tokens=80)
    with model.disable_adapter():
        before = generate(model, tok, chosen, max_new_tokens=80)
    console = Console()
    table = Table(title="held-out prompts: base vs DPO adapter (greedy)", show_lines=True)
    table.add_column("prompt", ratio=1)
    table.add_column("base", ratio=2)
    table.add_column("adapter", ratio=2)
    for p, b, a in zip(chosen, before, after):
        table.add_row(p, b, a)
    console.print(table)

    steps_log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    first, last = steps_log[0], steps_log[-1]
    metrics = Table(title=f"run {run_dir.name}: first vs last logged step")
    metrics.add_column("metric")
    metrics.add_column("first", justify="right")
    metrics.add_column("last", justify="right")
    for key in ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected", "tokens_per_s"):
        if key in last:
            metrics.add_row(key, f"{first.get(key, float('nan')):.3f}", f"{last[key]:.3f}")
    h_before = sum(persona_heuristic(chosen, before)) / len(chosen)
    h_after = sum(persona_heuristic(chosen, after)) / len(chosen)
    metrics.add_row("persona heuristic (held-out)", f"{h_before:.3f}", f"{h_after:.3f}")
    metrics.add_row("mean answer words (held-out)", f"{sum(len(x.split()) for x in before) / len(before):.1f}",
                    f"{sum(len(x.split()) for x in after) / len(after):.1f}")
    console.print(metrics)
    _say(f"next: alignlab chat --run {run_dir} --compare")
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=os.environ.get("ALIGNLAB_DEMO_DIR", "demo-project"))
    ap.add_argument("--steps", type=int, default=int(os.environ.get("ALIGNLAB_DEMO_STEPS", "40")))
    ap.add_argument("--prompts", type=int, default=4)
    args = ap.parse_args()
    from alignlab.errors import AlignlabError

    try:
        run_demo(Path(args.dir), args.steps, args.prompts)
    except AlignlabError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

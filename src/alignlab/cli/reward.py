"""`alignlab reward score`: score a JSONL file of prompt/completion rows with a reward spec or a reward model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from alignlab.errors import AlignlabError


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for each non-blank line; every row needs "prompt" and "completion"."""
    from alignlab.rewards.common import read_text

    rows = []
    # a directory, a missing file or one not in UTF-8 is one line naming it (and the line)
    for n, line in enumerate(read_text(path, "JSONL file").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise AlignlabError(f"not valid JSON ({err.msg})", where=f"{path}:{n}") from err
        if not isinstance(row, dict):
            raise AlignlabError("each line must be a JSON object", where=f"{path}:{n}")
        missing = [k for k in ("prompt", "completion") if k not in row]
        if missing:
            raise AlignlabError(
                f"row has no '{missing[0]}'", where=f"{path}:{n}", fix='each row needs "prompt" and "completion"'
            )
        rows.append((n, row))
    if not rows:
        raise AlignlabError(f"{path} has no rows")
    return rows


def _short(value, width: int = 40) -> str:
    from alignlab.rewards.common import completion_text

    text = " ".join(completion_text(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"  # None: the component could not score it (an unusable judge reply)


def _mean(values: list) -> float | None:
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def score(
    file: Path = typer.Argument(..., help="JSONL rows with 'prompt', 'completion' and extra columns (e.g. 'answer')"),
    spec: Optional[Path] = typer.Option(None, "--spec", help="reward spec YAML (components, weights, cap, diversity)"),
    rm: Optional[Path] = typer.Option(None, "--rm", help="score with a trained reward-model run directory instead"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object per row instead of a table"),
    device: str = typer.Option("auto", help="device for --rm: auto, cpu, cuda, ..."),
) -> None:
    """Score each row; print every component, the total, and the mean per component."""
    if (spec is None) == (rm is None):
        raise AlignlabError(
            "pass exactly one of --spec and --rm", fix="e.g. alignlab reward score --spec rewards.yaml FILE"
        )
    rows = _read_rows(file)
    # the shapes training passes (TRL's conversational format): message lists, so that a function that passes here
    # does not meet lists for the first time at step 0 of `alignlab train grpo`
    from alignlab.rewards.common import as_messages

    prompts = [as_messages(r["prompt"]) if isinstance(r["prompt"], str) else r["prompt"] for _, r in rows]
    completions = [[{"role": "assistant", "content": r["completion"]}] if isinstance(r["completion"], str)
                   else r["completion"] for _, r in rows]
    keys = [k for k in dict.fromkeys(k for _, r in rows for k in r) if k not in ("prompt", "completion")]
    columns = {k: [r.get(k) for _, r in rows] for k in keys}

    if spec is not None:
        from alignlab.rewards.compose import load_spec

        reward = load_spec(spec)
        # as training does: a row arithmetic cannot grade is refused, not 0; named by its line (blank lines skip)
        reward.check_rows([r for _, r in rows], places=[f"{file}:{n}" for n, _ in rows])
        parts = reward.components(prompts, completions, **columns)
        totals = reward.total(parts)
        label = str(spec)
    else:
        from alignlab.rewards.rm import RewardModel

        totals = RewardModel(rm, device=device)(prompts, completions, **columns)
        parts = {"rm": totals}
        label = f"reward model {rm}"

    if as_json:
        for i, (n, _) in enumerate(rows):
            print(json.dumps({"line": n, "components": {k: v[i] for k, v in parts.items()}, "total": totals[i]}))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 200)
    names = [*parts, "total"]
    # numbers are never cut; prompt and completion share what is left of the width
    free = console.width - 9 - sum(max(6, len(n)) + 3 for n in names)
    text = free >= 30  # too narrow: numbers only
    prompt_w = min(28, free // 3)
    completion_w = min(48, free - prompt_w - 6)
    table = Table(title=f"{file.name} — {label}")
    table.add_column("line", justify="right", style="dim", no_wrap=True)
    if text:
        table.add_column("prompt", no_wrap=True)
        table.add_column("completion", no_wrap=True)
    for name in names:
        table.add_column(name, justify="right", no_wrap=True, min_width=max(6, len(name)))
    for i, (n, row) in enumerate(rows):
        shown = [_short(row["prompt"], prompt_w), _short(row["completion"], completion_w)] if text else []
        table.add_row(str(n), *shown, *[_cell(parts[k][i]) for k in parts], _cell(totals[i]))
    table.add_section()
    means = [_cell(_mean(v)) for v in parts.values()]
    label_cells = ["mean", f"{len(rows)} rows"] if text else []
    table.add_row("mean" if not text else "", *label_cells, *means, _cell(_mean(totals)), style="bold")
    console.print(table)


def register(app: typer.Typer) -> None:
    reward_app = typer.Typer(help="Score completions with a reward spec or a reward model.", no_args_is_help=True)
    reward_app.command("score")(score)
    app.add_typer(reward_app, name="reward")

"""`alignlab reward score`: score a JSONL file of prompt/completion rows with a reward spec or a reward model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from alignlab.errors import AlignlabError


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for each non-blank line; every row needs "prompt" and "completion"."""
    if not path.is_file():
        raise AlignlabError(f"file not found: {path}", fix="pass a JSONL file with prompt and completion columns")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
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


def score(
    file: Path = typer.Argument(..., help="JSONL rows with 'prompt', 'completion' and any extra columns (e.g. 'answer')"),
    spec: Optional[Path] = typer.Option(None, "--spec", help="reward spec YAML (components, weights, cap, diversity)"),
    rm: Optional[Path] = typer.Option(None, "--rm", help="score with a trained reward-model run directory instead"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object per row instead of a table"),
    device: str = typer.Option("auto", help="device for --rm: auto, cpu, cuda, ..."),
) -> None:
    """Score each row; print every component, the total, and the mean per component."""
    if (spec is None) == (rm is None):
        raise AlignlabError("pass exactly one of --spec and --rm", fix="e.g. alignlab reward score --spec rewards.yaml FILE")
    rows = _read_rows(file)
    prompts = [r["prompt"] for _, r in rows]
    completions = [r["completion"] for _, r in rows]
    keys = [k for k in dict.fromkeys(k for _, r in rows for k in r) if k not in ("prompt", "completion")]
    columns = {k: [r.get(k) for _, r in rows] for k in keys}

    if spec is not None:
        from alignlab.rewards.compose import load_spec

        reward = load_spec(spec)
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

    table = Table(title=f"{file.name} — {label}", show_lines=False)
    table.add_column("line", justify="right", style="dim")
    table.add_column("prompt", max_width=28, overflow="ellipsis", no_wrap=True)
    table.add_column("completion", max_width=40, overflow="ellipsis", no_wrap=True)
    for name in parts:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right", style="bold")
    for i, (n, row) in enumerate(rows):
        cells = [f"{parts[k][i]:.3f}" for k in parts]
        table.add_row(str(n), _short(row["prompt"], 28), _short(row["completion"]), *cells, f"{totals[i]:.3f}")
    table.add_section()
    means = [f"{sum(v) / len(v):.3f}" for v in parts.values()]
    table.add_row("", "mean", f"{len(rows)} rows", *means, f"{sum(totals) / len(totals):.3f}", style="bold")
    Console(width=max(120, Console().width)).print(table)


def register(app: typer.Typer) -> None:
    reward_app = typer.Typer(help="Score completions with a reward spec or a reward model.", no_args_is_help=True)
    reward_app.command("score")(score)
    app.add_typer(reward_app, name="reward")

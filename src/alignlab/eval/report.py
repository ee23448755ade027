"""runs/<id>/eval.json and runs/<id>/report.html: the scorecard, plots (PNG, base64-embedded), answers side by side.

The HTML is one self-contained file (no scripts, no external assets), so it can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from alignlab.eval.scorecard import table_rows
from alignlab.train.rundir import read_jsonl, read_run, write_json_atomic

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.35em 0.7em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.answers td { width: 40%; white-space: pre-wrap; }
.answers td.prompt { width: 20%; font-weight: 600; }
.score { color: #777; font-size: 0.85em; }
img { max-width: 100%; }
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(card: dict, metrics: list[dict]) -> list[tuple[str, str]]:
    """(title, base64 PNG) pairs: base vs adapter bars; the training loss when metrics.jsonl has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    keys = [k for k in ("persona", "distinct_1", "distinct_2", "accuracy") if card["adapter"].get(k) is not None]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(3 * (len(keys) + 1), 2.8))
    for ax, key in zip(axes, [*keys, "length"]):
        vals = [card["base"].get(key) or 0.0, card["adapter"].get(key) or 0.0]
        ax.bar(["base", "adapter"], vals, color=["#999", "#c44"])
        ax.set_title(key, fontsize=10)
    fig.suptitle(f"held-out scorecard (persona by {card.get('rater')})", fontsize=10, y=1.06)
    out.append(("base vs adapter", _png(fig)))
    steps = [(m["step"], m["loss"]) for m in metrics if isinstance(m.get("loss"), (int, float)) and "step" in m]
    if len(steps) > 1:
        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.plot([s for s, _ in steps], [v for _, v in steps], marker=".")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training loss", fontsize=10)
        out.append(("training loss", _png(fig)))
    return out


def render(card: dict, run_dir: Path) -> str:
    esc = html.escape
    info = read_run(run_dir) if (run_dir / "run.json").is_file() else {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>alignlab eval: {esc(run_dir.name)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{esc(run_dir.name)}</h1>"]
    facts = [("method", info.get("method")), ("base model", info.get("model")), ("trained from", info.get("init_adapter")),
             ("steps", info.get("steps")), ("held-out prompts", card["n_prompts"]), ("persona rater", card.get("rater")),
             ("decoding", json.dumps(card.get("settings", {})))]
    parts.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts if v is not None) + "</table>")
    parts.append("<h2>Scorecard</h2><table><tr><th>metric</th><th>base</th><th>adapter</th><th>change</th></tr>")
    for label, b, a, d in table_rows(card):
        parts.append(f"<tr><td>{esc(label)}</td><td class=num>{b}</td><td class=num>{a}</td><td class=num>{d}</td></tr>")
    parts.append("</table>")
    for title, png in plots(card, read_jsonl(run_dir / "metrics.jsonl")):
        parts.append(f"<h3>{esc(title)}</h3><img alt='{esc(title)}' src='data:image/png;base64,{png}'>")
    parts.append("<h2>Answers, before and after</h2><table class=answers><tr><th>prompt</th><th>base</th><th>adapter</th></tr>")

    def cell(text: str, score) -> str:
        tail = f"<div class=score>score {score:.3g}</div>" if isinstance(score, (int, float)) else ""
        return f"<td>{esc(text)}{tail}</td>"

    for s in card["samples"]:
        want = f"<div class=score>answer: {esc(str(s['answer']))}</div>" if s.get("answer") is not None else ""
        parts.append(f"<tr><td class=prompt>{esc(s['prompt'])}{want}</td>{cell(s['base'], s.get('base_score'))}"
                     f"{cell(s['adapter'], s.get('adapter_score'))}</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, card: dict) -> tuple[Path, Path]:
    """Write eval.json and report.html into the run directory; return their paths."""
    run_dir = Path(run_dir)
    write_json_atomic(run_dir / "eval.json", card)
    page = run_dir / "report.html"
    tmp = page.with_name(".report.html.tmp")
    tmp.write_text(render(card, run_dir), encoding="utf-8")
    tmp.replace(page)
    return run_dir / "eval.json", page

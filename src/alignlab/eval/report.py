"""runs/<id>/eval.json and runs/<id>/report.html: the scorecard, plots (PNG, base64-embedded), answers side by side.

The HTML is one self-contained file (no scripts, no external assets), so it can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from alignlab import fsutil
from alignlab.eval.scorecard import table_columns, table_rows
from alignlab.rundir import Run, read_run, write_json_atomic

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
.warn { color: #a40; font-weight: 600; }
td.flagged { background: #fff3e0; }
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(card: dict, metrics: list[dict]) -> list[tuple[str, str]]:
    """(title, base64 PNG) pairs: the three scores base vs adapter with 95% intervals; the training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignlab.eval.scorecard import point

    out = []
    keys = [k for k in ("in_persona", "correct_share", "flagged", "distinct_2") if card["adapter"].get(k) is not None]
    fig, axes = plt.subplots(1, len(keys), figsize=(3 * len(keys), 2.8))
    for ax, key in zip(list(axes) if len(keys) > 1 else [axes], keys):
        vals, errs = [], [[], []]
        for side in ("base", "adapter"):
            v = card[side].get(key)
            m = point(v) or 0.0
            vals.append(m)
            lo, hi = (v[1], v[2]) if isinstance(v, (list, tuple)) else (m, m)
            errs[0].append(max(0.0, m - lo))
            errs[1].append(max(0.0, hi - m))
        ax.bar(["base", "adapter"], vals, yerr=errs, capsize=4, color=["#999", "#c44"])
        ax.set_ylim(0, 1)
        ax.set_title(key.replace("_", " "), fontsize=10)
    fig.suptitle("held-out scorecard (bars: 95% intervals)", fontsize=10, y=1.06)
    out.append(("base vs adapter", _png(fig)))
    steps = [(m["step"], m["loss"]) for m in metrics if isinstance(m.get("loss"), (int, float)) and "step" in m]
    if len(steps) > 1:
        fig, ax = plt.subplots(figsize=(6, 2.8))
        ax.plot([s for s, _ in steps], [v for _, v in steps], marker=".")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_ylim(bottom=0)
        ax.set_title("training loss", fontsize=10)
        out.append(("training loss", _png(fig)))
    return out


def _flag_order(sample: dict) -> tuple:
    """Flagged answers first: mimicry flagged, then wrong where the base was right, then the rest; the adapter's
    answers with the base opening and alone (the exported model's) both count."""
    b = sample.get("base_scores") or {}
    sides = [sample.get("adapter_scores") or {}, sample.get("alone_scores") or {}]
    flagged = any((a.get("mimicry") or 0) >= 0.5 for a in sides)
    lost = any(a.get("correct") is not None and b.get("correct") is not None and a["correct"] < 0.5 <= b["correct"]
               for a in sides)
    return (not flagged, not lost)


def render(card: dict, run_dir: Path) -> str:
    esc = html.escape
    info = read_run(run_dir) if (run_dir / "run.json").is_file() else {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>alignlab eval: {esc(run_dir.name)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{esc(run_dir.name)}</h1>"]
    facts = [("method", info.get("method")), ("base model", info.get("model")), ("trained from", info.get("init_adapter")),
             ("steps", info.get("steps")), ("held-out prompts", card["n_prompts"]), ("persona rater", card.get("rater")),
             ("correct by", card.get("correct_by")), ("decoding", json.dumps(card.get("settings", {})))]
    parts.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in facts if v is not None) + "</table>")
    for w in card.get("warnings", []):
        parts.append(f"<p class=warn>warning: {esc(w)}</p>")
    if card.get("note"):  # e.g. a persona scorer trained on fewer than 100 labelled answers
        parts.append(f"<p class=warn>note: {esc(card['note'])}</p>")
    cut = card.get("settings", {}).get("persona_cut") or 0.9
    parts.append(f"<h2>Scorecard</h2><p>Means with 95% bootstrap intervals, shares with 95% Wilson intervals. In persona: persona &ge; {cut:g}; "
                 "correct: correct &ge; 0.5 (prompts with a reference); flagged: mimicry &ge; 0.5. Change: adapter minus "
                 "base, paired over the prompts, with a 95% interval (a bootstrap for means, Newcombe's paired interval for "
                 "shares).</p>")
    parts.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in table_columns(card)) + "</tr>")
    for label, *cells in table_rows(card):
        parts.append(f"<tr><td>{esc(label)}</td>" + "".join(f"<td class=num>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    for title, png in plots(card, Run(run_dir).metrics()):
        parts.append(f"<h3>{esc(title)}</h3><img alt='{esc(title)}' src='data:image/png;base64,{png}'>")
    alone = any("alone" in s for s in card["samples"])
    parts.append("<h2>Answers, flagged first</h2><table class=answers><tr><th>prompt</th><th>base</th><th>adapter</th>"
                 + ("<th>adapter alone (as exported)</th>" if alone else "") + "</tr>")

    def cell(text: str, scores) -> str:
        scores = scores or {}
        bits = [f"{k} {scores[k]:.2f}" for k in ("persona", "correct", "mimicry") if isinstance(scores.get(k), (int, float))]
        flag = " flagged" if (scores.get("mimicry") or 0) >= 0.5 else ""
        return f"<td class='{flag.strip()}'>{esc(text)}<div class=score>{esc(' · '.join(bits))}{flag}</div></td>"

    for s in sorted(card["samples"], key=_flag_order):
        want = f"<div class=score>reference: {esc(str(s['reference']))}</div>" if s.get("reference") is not None else ""
        parts.append(f"<tr><td class=prompt>{esc(s['prompt'])}{want}</td>{cell(s['base'], s.get('base_scores'))}"
                     f"{cell(s['adapter'], s.get('adapter_scores'))}"
                     + (cell(s.get("alone", ""), s.get("alone_scores")) if alone else "") + "</tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, card: dict) -> tuple[Path, Path]:
    """Write eval.json and report.html into the run directory; return their paths."""
    run_dir = Path(run_dir)
    write_json_atomic(run_dir / "eval.json", card)
    page = fsutil.write_text(run_dir / "report.html", render(card, run_dir))  # temp name, fsync, rename
    return run_dir / "eval.json", page

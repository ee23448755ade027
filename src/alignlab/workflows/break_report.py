"""What `alignlab break` says: plain-words findings (console and report) and ``report.html`` with plots."""

from __future__ import annotations

import html
from pathlib import Path

from alignlab import fsutil
from alignlab.eval.report import CSS, _png


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _num(x, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def findings(summary: dict) -> list[str]:
    """The experiment's outcome in plain words, with the numbers and the step each instrument fired at."""
    return {"label-flip": _flip_lines, "kl-ablation": _kl_lines, "long-run": _long_lines}[summary["experiment"]](summary)


def _flip_lines(s: dict) -> list[str]:
    good, bad, v = s["runs"]["correct"], s["runs"]["flipped"], s["verdict"]
    out = []
    for name, side in (("correct labels", good), ("flipped labels", bad)):
        t = side["train"]
        out.append(f"{name}: training loss {_num(t['loss'])}, pair accuracy {_pct(t['pair_accuracy'])}, "
                   f"margin {_num(t['margin'])} (mean of the last {t['steps_averaged']} steps)")
    out.append("the training metrics look " + ("equally healthy in both runs" if v["training_looks_healthy"]
                                               else "unhealthy in at least one run (see the curves)"))
    acc = v["heldout_accuracy_end"]
    out.append(f"held-out implicit-reward accuracy ({s['heldout_pairs']} labelled pairs never trained on) at the end: "
               f"correct {_pct(acc['correct'])}, flipped {_pct(acc['flipped'])}")
    step = v["caught_by_heldout_reward_at_step"]
    out.append(f"caught by: held-out implicit-reward accuracy at step {step}, below 50% for the flipped run and above "
               "for the correct one" if step is not None else
               "the held-out implicit-reward accuracy never told the runs apart (at no check was the flipped run "
               "below 50% while the correct one was above)")
    p, m = v["in_persona"], v.get("persona") or {}
    out.append(f"held-out scorecard, in persona: base {_pct(p['base'])}, correct labels {_pct(p['correct'])}, "
               f"flipped {_pct(p['flipped'])}; persona score (mean) {_num(m.get('base'), '.2f')}, "
               f"{_num(m.get('correct'), '.2f')}, {_num(m.get('flipped'), '.2f')}")
    if v["training_looks_healthy"]:  # the claim holds only where the trainer's own numbers said all was well
        out.append("both instruments live outside the training loop: nothing the trainer logs can tell the flip apart")
    else:
        out.append("with training metrics that look unhealthy this run cannot show that the trainer's logs miss the "
                   "flip (try a lower --lr or more --steps)")
    return out


def _kl_lines(s: dict) -> list[str]:
    out = [f"{s['method']} with the KL coefficient at {', '.join(f'{b:g}' for b in s['betas'])}:"]
    for name, v in s["verdict"].items():
        warn = "; warnings: " + ", ".join(v["warnings"]) if v["warnings"] else "; no warnings"
        if not v["kl_recorded"]:  # what the run logged decides: at beta 0 a new adapter's KL is measured too
            warn += " (kl_budget was not watched: the run recorded no KL)"
        gold = (f"gold {_num(v['gold_end'], '.2f')} at step {v['gold_end_step']} (its last check); "
                if v.get("gold_end_step") is not None else "")
        out.append(f"{name}: reward {_num(v['reward_end'])}, length {_num(v['length_end'], '.1f')} tokens, "
                   f"distinct-2 {_num(v['distinct_2_end'], '.2f')} (mean of the last {v['steps_averaged']} "
                   f"steps); {gold}KL to the base {_num(v['kl_to_base'])}/token, in persona {_pct(v['in_persona'])}, "
                   f"correct {_pct(v['correct_share'])} on held-out prompts{warn}")
    return out


def _long_lines(s: dict) -> list[str]:
    v = s["verdict"]
    k = v["proxy_steps"]
    window = "the first and the last step" if k == 1 else f"means of the first {k} and of the last {k} steps"
    out = [f"proxy reward (persona classifier) {_num(v['proxy_start'])} -> {_num(v['proxy_end'])} over {s['steps']} "
           f"steps ({window})"]
    if v["gold_peak"]:
        out.append(f"gold (arithmetic correct, never in the reward) {_pct(v['gold_start'])} at the start, "
                   f"peak {_pct(v['gold_peak'][1])} at step {v['gold_peak'][0]}, {_pct(v['gold_end'])} at the end")
    for w in v["warnings"]:
        out.append(f"caught by the hacking monitor at step {w['step']}: {w['warning']}: {w['message']}")
    if not v["warnings"]:
        out.append("no monitor warning fired in this run")
    return out


# report.html ------------------------------------------------------------------------------------------


def _lines_plot(panels: list[tuple[str, dict]]) -> str:
    """One row of panels; each panel is (title, {label: [(step, value), ...]})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.8))
    for ax, (title, lines) in zip(list(axes) if len(panels) > 1 else [axes], panels):
        for i, (label, pts) in enumerate(lines.items()):
            if pts:  # a run keeps its colour in every panel, also where another run logged nothing
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=label, color=f"C{i}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if len(lines) > 1:
            ax.legend(fontsize=7)
    return _png(fig)


def _plot(summary: dict) -> str:
    runs = summary["runs"]
    if summary["experiment"] == "label-flip":
        return _lines_plot([
            ("training loss", {k: v["curves"]["loss"] for k, v in runs.items()}),
            ("training pair accuracy", {k: v["curves"]["rewards/accuracies"] for k, v in runs.items()}),
            ("held-out implicit-reward accuracy", {k: v["heldout_reward_accuracy"] for k, v in runs.items()}),
        ])
    keys = [("reward", "reward"), ("kl", "KL per token"), ("completions/mean_length", "mean length (tokens)"),
            ("distinct_2", "distinct-2")]
    panels = [(title, {k: v["curves"][key] for k, v in runs.items()}) for key, title in keys]
    if any(v["curves"]["gold"] for v in runs.values()):
        panels.insert(1, ("gold (never in the reward)", {k: v["curves"]["gold"] for k, v in runs.items()}))
    return _lines_plot(panels)


def _answers(summary: dict) -> str:
    esc = html.escape
    runs = summary["runs"]
    names = list(runs)
    first = runs[names[0]]["scorecard"]["answers"]
    head = "<tr><th>prompt</th><th>base</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>"
    rows = []
    for i, a in enumerate(first):
        cells = "".join(f"<td>{esc(runs[n]['scorecard']['answers'][i]['adapter'])}</td>" for n in names)
        rows.append(f"<tr><td class='prompt'>{esc(a['prompt'])}</td><td>{esc(a['base'])}</td>{cells}</tr>")
    return f"<table class='answers'>{head}{''.join(rows)}</table>"


def _samples(summary: dict) -> str:
    """The answers to the fixed prompts as each run went (online experiments)."""
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(name)}</td><td class='num'>{r['step']}</td><td>{esc(r['prompt'])}</td>"
                   f"<td>{esc(r['completion'])}</td></tr>"
                   for name, side in summary["runs"].items() for r in side.get("samples") or [])
    if not rows:
        return ""
    return ("<h2>Answers at each checkpoint</h2><table><tr><th>run</th><th>step</th><th>prompt</th><th>answer</th></tr>"
            f"{rows}</table>")


def _scores(summary: dict) -> str:
    rows = []
    for name, side in summary["runs"].items():
        c = side["scorecard"]
        for label, vals in (("base", c["base"]), (name, c["adapter"])):
            if label == "base" and rows:
                continue
            rows.append(f"<tr><td>{html.escape(label)}</td><td class='num'>{_num(vals.get('persona'), '.2f')}</td>"
                        f"<td class='num'>{_pct(vals['in_persona'])}</td>"
                        f"<td class='num'>{_pct(vals['correct_share'])}</td><td class='num'>{_pct(vals['flagged'])}</td>"
                        f"<td class='num'>{_num(vals['distinct_2'], '.2f')}</td>"
                        f"<td class='num'>{_num(c['kl'] if label != 'base' else 0.0)}</td></tr>")
    head = "<tr><th>model</th><th>persona (mean)</th><th>in persona</th><th>correct</th><th>mimicry flagged</th><th>distinct-2</th><th>KL/token</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def write_report(out: Path, summary: dict) -> Path:
    import base64

    esc = html.escape
    lines = "".join(f"<li>{esc(x)}</li>" for x in findings(summary))
    plot = _plot(summary)
    fsutil.write_bytes(Path(out) / "curves.png", base64.b64decode(plot))  # the report's curves, for slides and READMEs
    prompts = next(iter(summary["runs"].values()))["scorecard"]["prompts"]
    body = (f"<h1>alignlab break {esc(summary['experiment'])}</h1>"
            f"<p>{esc(summary['model'])}, {summary['steps']} steps per run, learning rate {summary['learning_rate']:g}</p>"
            f"<h2>What happened</h2><ul>{lines}</ul>"
            f"<img src='data:image/png;base64,{plot}'>"
            f"<h2>Held-out scorecard ({prompts} prompts)</h2>{_scores(summary)}"
            f"<h2>Answers on held-out prompts</h2>{_answers(summary)}{_samples(summary)}")
    page = f"<!doctype html><meta charset='utf-8'><title>alignlab break</title><style>{CSS}</style>{body}"
    return fsutil.write_text(Path(out) / "report.html", page)

"""Refit the utilization factors from recorded runs (``run.json`` -> ``plan``).

Each run's stored workload is re-estimated with the current arithmetic and factor 1, so the fit does
not depend on the factors in force when the run was recorded. A step without generation is modelled as
FLOPs / (peak x ``train``) + layer passes x ``pass_layer_overhead_s`` (launches, Python):

- runs whose FLOPs per layer pass differ by :data:`SPREAD` or more (models or batches of different sizes): both
  terms at once, by least squares on the relative error;
- otherwise the two cannot be told apart, and the gap between measured and predicted goes where the run's step
  time is: to the per-layer cost when the step's FLOPs, had it done nothing else, ran at under :data:`FLOP_BOUND`
  of the peak (a small model on a GPU, where a step is kernel launches, or a test-sized model anywhere), else to
  the FLOP share. A launch-bound second put into the share made a 7B plan 170 times too slow; the test uses no
  share, as one assumed (0.35) classed a FLOP-bound 8B run at 0.15 of the peak as launch-bound, 24x the cost;
- decoding (online runs): what is left of the measured step after the fitted training time, divided
  by the decoding time the current factors predict, scales ``layer_overhead_s`` up and ``decode_bw``
  down by the median of those ratios.

The factors are written atomically to ``$ALIGNLAB_HOME/plan-factors.json`` per device kind, with the sizes of the
models they came from, and used by every later plan on that kind of device (:func:`load_factors` checks them).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.paths import home
from alignlab.plan.estimate import DEFAULT_FACTORS, ONLINE, Device, Workload, step_seconds
from alignlab.plan.shapes import ModelShape


def factors_path() -> Path:
    return home() / "plan-factors.json"


# what each factor may be: a share (above 0) or a cost in seconds (0 or more); train_fp32 0 switches its cap off
POSITIVE = ("train", "decode_bw")
SPREAD = 4.0  # runs whose FLOPs per layer pass differ this much fit the FLOP share and the per-layer cost together
# a step whose FLOPs alone reach less of the peak than this is launch-bound: measured 0.002 (SmolLM2 DPO on an
# H200) and 0.03 (the 2-layer test model on a CPU) against 0.07-0.3 (SmolLM2 on CPUs, FLOP-bound at fp32 speed)
FLOP_BOUND = 0.05
_WARNED: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _WARNED:
        _WARNED.add(text)
        from alignlab.progress import console

        console.print(f"[yellow]warning[/]: {text}", markup=True, highlight=False)


def _saved() -> dict:
    """plan-factors.json as a dict; {} (with a warning) when it is missing, unreadable or not an object."""
    path = factors_path()
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        _warn_once(f"{path} cannot be read ({type(err).__name__}); the default factors are used")
        return {}
    if not isinstance(data, dict):
        _warn_once(f"{path} holds no object of device kinds; the default factors are used")
        return {}
    return data


def checked_factors(kind: str, given) -> dict:
    """The defaults for ``kind`` with every valid value of ``given`` over them; a value that is not a finite
    number (0 or more; above 0 for a share) is left out with a warning: a 0 share divided a plan by zero."""
    out = dict(DEFAULT_FACTORS[kind])
    if not isinstance(given, dict):
        return out
    for key, value in given.items():
        if key not in out:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and (value > 0 or (value == 0 and key not in POSITIVE)):
            out[key] = float(value)
        else:
            _warn_once(f"{factors_path()}: {kind} factor {key} = {value!r} is not a usable number "
                       f"({'above 0' if key in POSITIVE else '0 or more'}); the default {out[key]} is used")
    return out


def load_factors(kind: str) -> dict:
    entry = _saved().get(kind, {})
    return checked_factors(kind, entry.get("factors", {}) if isinstance(entry, dict) else {})


def calibrated_sizes(kind: str) -> dict | None:
    """{"params": [smallest, largest], "runs", "how"} of the runs the saved ``kind`` factors were fitted on, or None."""
    entry = _saved().get(kind)
    sizes = entry.get("params") if isinstance(entry, dict) else None
    if not (isinstance(sizes, list) and len(sizes) == 2 and all(isinstance(x, (int, float)) for x in sizes)):
        return None
    return {"params": sizes, "runs": entry.get("runs"), "how": entry.get("how")}


def measured_seconds(rec: dict) -> float | None:
    """Seconds per step to fit against: CPU busy time on CPUs (robust to other jobs), wall time elsewhere."""
    m = rec.get("measured") or {}
    return m.get("step_busy_seconds") or m.get("step_seconds")


def _records(runs: list[Path]) -> list[dict]:
    out = []
    for run in runs:
        try:
            info = json.loads((run / "run.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        plan = info.get("plan") if isinstance(info, dict) else None
        if not isinstance(plan, dict):
            continue
        m = plan.get("measured") or {}
        if not (plan.get("workload") and isinstance(m, dict) and m.get("step_seconds") and plan.get("model_shape")):
            continue
        try:  # a record from another version, or edited by hand, is skipped with a word, not the end of the fit
            _unit({"run": str(run), **plan}, DEFAULT_FACTORS.get(plan["device"]["kind"], DEFAULT_FACTORS["cpu"]))
            got = measured_seconds(plan)
            if isinstance(got, bool) or not (isinstance(got, (int, float)) and math.isfinite(got) and got > 0):
                raise ValueError(f"step seconds {got!r}")
        except (AlignlabError, KeyError, TypeError, ValueError, AttributeError) as err:
            from alignlab.progress import console

            console.print(f"[yellow]warning[/]: {run / 'run.json'}: its plan record cannot be read ({type(err).__name__}); skipped")
            continue
        out.append({"run": str(run), **plan})
    return out


def _unit(rec: dict, factors: dict) -> dict:
    shape = ModelShape(**rec["model_shape"])
    d = rec["device"]
    dev = Device(key=d["kind"], name=d["name"], memory_bytes=d["memory_bytes"], peak_flops=d["peak_flops"],
                 bandwidth=d["bandwidth"], kind=d["kind"], bf16=d.get("bf16", True), measured=d.get("measured") or {})
    return step_seconds(shape, Workload(**rec["workload"]), dev, factors)


def _terms(rec: dict, factors: dict) -> tuple[float, float]:
    """(seconds of FLOPs at the full peak, layer passes) of one run's step: measured = x / train + y x overhead."""
    bare = {**factors, "train_fp32": 0.0}
    x = _unit(rec, {**bare, "train": 1.0, "pass_layer_overhead_s": 0.0})["train"]
    y = _unit(rec, {**bare, "train": 1e30, "pass_layer_overhead_s": 1.0})["train"]
    return x, y


def _joint(rows: list[tuple[float, float, float]]) -> tuple[float, float] | None:
    """(train share, per-layer cost) minimising the squared relative error over (x, y, measured) rows; None when the
    rows do not pin a positive share down."""
    u = [x / t for x, _, t in rows]
    v = [y / t for _, y, t in rows]
    suu, svv, suv = sum(a * a for a in u), sum(b * b for b in v), sum(a * b for a, b in zip(u, v))
    su, sv, det = sum(u), sum(v), suu * svv - suv * suv
    if det <= 1e-12 * suu * svv:
        return None
    inv, over = (su * svv - sv * suv) / det, (sv * suu - su * suv) / det  # 1 / share, seconds per layer pass
    if over < 0:  # no fixed cost at all: the share alone
        inv, over = su / suu, 0.0
    if inv < 1.0:  # above the peak cannot be: the share at 1, the rest a fixed cost
        inv, over = 1.0, max(0.0, (sv - sum(a * b for a, b in zip(u, v))) / svv)
    return (1.0 / inv, over) if inv > 0 else None


def reached_share(rows: list[tuple[float, float, float]]) -> float:
    """The median share of the peak the runs' FLOPs reached had their steps been FLOPs alone (x / measured): a
    measurement, with no assumed share in it."""
    return statistics.median(x / t for x, _, t in rows)


def _fit_train(recs: list[dict], factors: dict) -> str:
    """Fit ``train`` and ``pass_layer_overhead_s`` in place from runs without generation; says how."""
    rows = [(*_terms(r, factors), measured_seconds(r)) for r in recs]
    per_pass = [x / y for x, y, _ in rows if y > 0]
    joint = _joint(rows) if len(rows) > 1 and per_pass and max(per_pass) >= SPREAD * min(per_pass) else None
    if joint is not None:
        factors["train"], factors["pass_layer_overhead_s"] = joint
        if "train_fp32" in factors:
            factors["train_fp32"] = 0.0  # the fitted share is the whole rate: 0 turns the fp32 cap off
        return "joint"
    fixed = [y * factors.get("pass_layer_overhead_s", 0.0) for _, y, _ in rows]
    if reached_share(rows) < FLOP_BOUND:
        # the FLOPs explain little of these steps: the gap is launches and Python, whatever the FLOP share
        flop_s = [_unit(r, {**factors, "pass_layer_overhead_s": 0.0})["train"] for r in recs]
        factors["pass_layer_overhead_s"] = statistics.median(
            max(t - g, 0.1 * t) / y for (_, y, t), g in zip(rows, flop_s) if y > 0)
        return "overhead"
    factors["train"] = statistics.median(x / max(t - f, 0.1 * t) for (x, _, t), f in zip(rows, fixed))
    if "train_fp32" in factors:
        factors["train_fp32"] = 0.0  # the fitted share is the whole rate: 0 turns the fp32 cap off
    return "share"


def fit(records: list[dict], kind: str, start: dict | None = None) -> dict:
    """New factors for one device kind from records of that kind; raises when there is nothing to fit."""
    return fit_details(records, kind, start)[0]


def fit_details(records: list[dict], kind: str, start: dict | None = None) -> tuple[dict, str | None]:
    """(factors, how the training terms were fitted: joint, overhead, share or None without offline runs)."""
    factors = dict(start or DEFAULT_FACTORS[kind])
    recs = [r for r in records if r["device"]["kind"] == kind]
    if not recs:
        raise AlignlabError(f"no recorded {kind} runs with a plan and a measurement to calibrate from")
    offline = [r for r in recs if r["workload"]["method"] not in ONLINE]
    how = _fit_train(offline, factors) if offline else None
    online = [r for r in recs if r["workload"]["method"] in ONLINE]
    ratios = []
    for r in online:
        t = _unit(r, factors)
        left = measured_seconds(r) - t["train"]
        if t["generate"] > 0 and left > 0:
            ratios.append(left / t["generate"])
    if ratios:
        k = statistics.median(ratios)
        factors["layer_overhead_s"] = factors["layer_overhead_s"] * k
        factors["decode_bw"] = factors["decode_bw"] / k
    return {k: round(v, 6) if v >= 1e-3 else float(f"{v:.6g}") for k, v in factors.items()}, how


def fit_note(kind: str, how: str | None, recs: list[dict]) -> str | None:
    """One line on what a fit could not tell: from one size of run, the split between its two training terms."""
    if how not in ("overhead", "share"):
        return None
    reached = reached_share([(*_terms(r, DEFAULT_FACTORS[kind]), measured_seconds(r)) for r in recs
                             if r["workload"]["method"] not in ONLINE])
    term = (f"the fixed cost per layer pass (launches, Python): its FLOPs alone would run at {reached:.2%} of the peak, "
            f"under the {FLOP_BOUND:.0%} a FLOP-bound step reaches" if how == "overhead" else
            f"the FLOP share of the peak: its FLOPs alone run at {reached:.1%} of the peak, a FLOP-bound step")
    sizes = sorted({r["model_shape"]["name"] for r in recs})
    return (f"{kind}: fitted from {len(recs)} run(s) of one size ({', '.join(sizes)}), which cannot tell the FLOP share "
            f"from the per-layer cost; the gap went to {term}. Plans for much larger models stay rough until a run "
            "of another size (another model, or batch) is recorded")


def calibrate(runs_dir: str | Path) -> dict:
    """Fit and save factors from every run under runs_dir (or one run directory); returns the report."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise AlignlabError(f"runs directory not found: {root}", fix="pass the folder that holds your run directories")
    runs = [root] if (root / "run.json").is_file() else sorted(p for p in root.iterdir() if (p / "run.json").is_file())
    records = _records(runs)
    if not records:
        raise AlignlabError(
            f"no run under {root} records a plan and a measurement",
            fix="train with this version of alignlab first; every finished run becomes a calibration point",
        )
    path = factors_path()
    saved = _saved()  # an unreadable file (edited by hand) is replaced, with the warning _saved gave
    report = {}
    for kind in sorted({r["device"]["kind"] for r in records}):
        recs = [r for r in records if r["device"]["kind"] == kind]
        new, how = fit_details(records, kind)
        rows = []
        for r in recs:
            pred = _unit(r, new)["total"]
            got = measured_seconds(r)
            rows.append({"run": r["run"], "method": r["workload"]["method"], "measured_s": got,
                         "predicted_s": round(pred, 3), "ratio": round(pred / got, 3)})
        params = [ModelShape(**r["model_shape"]).total_params for r in recs]
        saved[kind] = {"factors": new, "runs": len(rows), "params": [min(params), max(params)], "how": how}
        report[kind] = {"factors": new, "runs": rows, "how": how, "note": fit_note(kind, how, recs)}
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(saved, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    report["path"] = str(path)
    return report

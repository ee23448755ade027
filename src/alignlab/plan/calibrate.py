"""Refit the utilization factors from recorded runs (``run.json`` -> ``plan``).

Each run's stored workload is re-estimated with the current arithmetic and factor 1, so the fit does
not depend on the factors in force when the run was recorded:

- ``train``: for runs without generation, measured = FLOPs / (peak x train) + the fixed per-layer
  pass cost, so train is the median of (FLOPs / peak) / (measured - fixed cost);
- decoding (online runs): what is left of the measured step after the fitted training time, divided
  by the decoding time the current factors predict, scales ``layer_overhead_s`` up and ``decode_bw``
  down by the median of those ratios.

The factors are written atomically to ``$ALIGNLAB_HOME/plan-factors.json`` per device kind and used
by every later plan on that kind of device.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.paths import home
from alignlab.plan.estimate import DEFAULT_FACTORS, ONLINE, Device, Workload, step_seconds
from alignlab.plan.shapes import ModelShape


def factors_path() -> Path:
    return home() / "plan-factors.json"


def load_factors(kind: str) -> dict:
    out = dict(DEFAULT_FACTORS[kind])
    path = factors_path()
    if path.is_file():
        try:
            out.update(json.loads(path.read_text()).get(kind, {}).get("factors", {}))
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
    return out


def measured_seconds(rec: dict) -> float | None:
    """Seconds per step to fit against: CPU busy time on CPUs (robust to other jobs), wall time elsewhere."""
    m = rec.get("measured") or {}
    return m.get("step_busy_seconds") or m.get("step_seconds")


def _records(runs: list[Path]) -> list[dict]:
    out = []
    for run in runs:
        try:
            info = json.loads((run / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        plan = info.get("plan") if isinstance(info, dict) else None
        if not isinstance(plan, dict):
            continue
        m = plan.get("measured") or {}
        if not (plan.get("workload") and isinstance(m, dict) and m.get("step_seconds") and plan.get("model_shape")):
            continue
        try:  # a record from another version, or edited by hand, is skipped with a word, not the end of the fit
            _unit({"run": str(run), **plan}, DEFAULT_FACTORS.get(plan["device"]["kind"], DEFAULT_FACTORS["cpu"]))
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


def fit(records: list[dict], kind: str, start: dict | None = None) -> dict:
    """New factors for one device kind from records of that kind; raises when there is nothing to fit."""
    factors = dict(start or DEFAULT_FACTORS[kind])
    recs = [r for r in records if r["device"]["kind"] == kind]
    if not recs:
        raise AlignlabError(f"no recorded {kind} runs with a plan and a measurement to calibrate from")
    offline = [r for r in recs if r["workload"]["method"] not in ONLINE]
    if offline:
        ratios = []
        for r in offline:
            bare = {**factors, "train_fp32": 0.0}  # the fitted share replaces the fp32 cap
            ideal = _unit(r, {**bare, "train": 1.0, "pass_layer_overhead_s": 0.0})["train"]  # FLOPs / peak
            fixed = _unit(r, {**bare, "train": 1e30})["train"]  # the per-layer pass overhead alone
            got = measured_seconds(r)
            ratios.append(ideal / max(got - fixed, 0.1 * got))
        factors["train"] = statistics.median(ratios)
        if "train_fp32" in factors:
            factors["train_fp32"] = 0.0  # the fitted share is the whole rate: 0 turns the fp32 cap off
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
    return {k: round(v, 6) for k, v in factors.items()}


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
    saved = json.loads(path.read_text()) if path.is_file() else {}
    report = {}
    for kind in sorted({r["device"]["kind"] for r in records}):
        new = fit(records, kind)
        rows = []
        for r in (r for r in records if r["device"]["kind"] == kind):
            pred = _unit(r, new)["total"]
            got = measured_seconds(r)
            rows.append({"run": r["run"], "method": r["workload"]["method"], "measured_s": got,
                         "predicted_s": round(pred, 3), "ratio": round(pred / got, 3)})
        saved[kind] = {"factors": new, "runs": len(rows)}
        report[kind] = {"factors": new, "runs": rows}
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(saved, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    report["path"] = str(path)
    return report

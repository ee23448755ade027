"""Every run records the plan and the measurement in run.json; `plan --calibrate` refits from them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from alignlab.plan.calibrate import fit
from alignlab.plan.estimate import Workload, step_seconds
from alignlab.plan.shapes import resolve_shape


def test_run_json_records_estimate_and_measurement(tiny_model, tmp_path, monkeypatch):
    from helpers import cfg_for, write_pairs

    from alignlab.train import engine

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    data = write_pairs(tmp_path / "pairs.jsonl", 8)
    cfg = cfg_for(tiny_model, **{"train.max_steps": 3})
    ctx = engine.prepare("dpo", cfg, str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    plan = json.loads((run_dir / "run.json").read_text())["plan"]
    w = plan["workload"]
    assert w["method"] == "dpo" and w["batch"] == 4 and w["mode"] == "lora" and w["steps"] == 3
    assert 5 < w["prompt_len"] < 128 and w["completion_len"] > 5  # measured from the data with the chat template
    est = plan["estimate"]
    for key in ("peak_memory_gib", "step_seconds", "total_hours", "memory_gib"):
        assert key in est
    m = plan["measured"]
    assert m["peak_memory_source"] == "peak RSS of this run (VmHWM, reset at its first step)" and m["peak_memory_gib"] > 0.2
    assert len(m["step_durations"]) == 3 and m["step_seconds"] > 0 and 0 < m["step_busy_seconds"] <= m["step_seconds"] * 1.05
    assert plan["ratio"]["memory"] == pytest.approx(est["peak_memory_gib"] / m["peak_memory_gib"], rel=1e-2)
    assert plan["device"]["kind"] == "cpu" and plan["device"]["measured"]["fp32_gflops"] > 0

    foreign = tmp_path / "runs" / "foreign"  # a record from another version: skipped with a word, not a TypeError
    foreign.mkdir()
    (foreign / "run.json").write_text(json.dumps({"plan": {"workload": {"method": "dpo"}, "model_shape": {"name": "x"},
                                                           "measured": {"step_seconds": 1.0}, "device": {"kind": "cpu"}}}))
    (tmp_path / "runs" / "listed").mkdir()
    (tmp_path / "runs" / "listed" / "run.json").write_text("[1, 2]")
    r = subprocess.run([sys.executable, "-m", "alignlab", "plan", "--calibrate", str(tmp_path / "runs"), "--json"],
                       capture_output=True, text=True, env={**__import__("os").environ, "ALIGNLAB_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr
    assert "foreign/run.json: its plan record cannot be read" in r.stderr.replace("\n", "")
    rep = json.loads(r.stdout)
    assert rep["cpu"]["runs"][0]["ratio"] == pytest.approx(1.0, rel=1e-3)  # one offline run: fitted exactly
    saved = json.loads((tmp_path / "home" / "plan-factors.json").read_text())
    assert saved["cpu"]["factors"]["train"] == rep["cpu"]["factors"]["train"]


def _record(method, seconds, shape, w_extra=None, measured=None):
    w = Workload(method=method, batch=2, prompt_len=20, completion_len=30, **(w_extra or {}))
    return {
        "workload": w.__dict__, "model_shape": shape.to_dict(),
        "device": {"kind": "cpu", "name": "x", "peak_flops": 1e11, "bandwidth": 1e10, "memory_bytes": 1e10,
                   "measured": measured or {}},
        "measured": {"step_seconds": seconds * 3, "step_busy_seconds": seconds},
    }


def test_fit_recovers_known_factors():
    """Runs timed as if training reached 20% of peak and decoding cost 3x the default estimate."""
    shape = resolve_shape("smollm2-135m")
    truth = {"train": 0.2, "decode_bw": 0.5, "layer_overhead_s": 4e-4}
    recs = []
    for method in ("sft", "dpo"):
        w = Workload(method=method, batch=2, prompt_len=20, completion_len=30)
        dev_t = step_seconds(shape, w, _dev(), truth)["total"]
        recs.append(_record(method, dev_t, shape))
    g = Workload(method="grpo", batch=2, prompt_len=20, completion_len=30)
    parts = step_seconds(shape, g, _dev(), truth)
    recs.append(_record("grpo", parts["train"] + 3 * parts["generate"], shape))
    f = fit(recs, "cpu", start=truth)
    assert f["train"] == pytest.approx(0.2, rel=1e-3)  # busy seconds are used, not the 3x wall clock
    assert f["layer_overhead_s"] == pytest.approx(3 * 4e-4, rel=1e-3)
    assert f["decode_bw"] == pytest.approx(0.5 / 3, rel=1e-3)


def _dev():
    from alignlab.plan.estimate import Device

    return Device(key="cpu", name="x", memory_bytes=1e10, peak_flops=1e11, bandwidth=1e10, kind="cpu")


def test_calibration_replaces_the_fp32_cap_with_the_fitted_share():
    shape = resolve_shape("smollm2-135m")
    w = Workload(method="dpo", batch=2, prompt_len=20, completion_len=30)
    dev = _dev()
    dev.measured = {"fp32_gflops": 10.0}  # cap 7 GFLOP/s, below the 0.45 x 100 the bf16 share alone gives
    capped = {"train": 0.45, "train_fp32": 0.7, "decode_bw": 0.5, "layer_overhead_s": 4e-4, "pass_layer_overhead_s": 1e-3}
    t = step_seconds(shape, w, dev, capped)["total"]
    f = fit([_record("dpo", t, shape, measured=dev.measured)], "cpu", start=capped)
    assert f["train_fp32"] == 0.0
    assert f["train"] == pytest.approx(0.07, rel=1e-3)  # 7 GFLOP/s of a 100 GFLOP/s peak
    assert step_seconds(shape, w, dev, f)["total"] == pytest.approx(t, rel=1e-3)

"""Devices: the bundled GPU table (published specs) with the dated price table, and this CPU measured live."""

from __future__ import annotations

import json
import os
import platform
import time
from functools import lru_cache
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.plan.estimate import Device

HERE = Path(__file__).parent


@lru_cache(maxsize=1)
def gpu_table() -> dict[str, dict]:
    data = json.loads((HERE / "devices.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


@lru_cache(maxsize=1)
def price_table() -> dict:
    return json.loads((HERE / "prices.json").read_text())


def gpu(key: str) -> Device:
    table = gpu_table()
    k = key.lower().replace(" ", "-")
    if k not in table:
        raise AlignlabError(f"unknown GPU '{key}'", fix="one of: " + ", ".join(table) + " (or --cpu for this machine)")
    d = table[k]
    price = price_table()["prices"].get(k, {})
    usable = d.get("usable_fraction", 1.0)
    return Device(
        key=k,
        name=d["name"],
        # what the card reports (MiB), not the GB on the box: an "80 GB" H100 holds 79.6 GiB, as torch sees it
        memory_bytes=d["memory_mib"] * 2**20 * usable,
        peak_flops=d["bf16_tflops"] * 1e12,
        bandwidth=d["bandwidth_gbs"] * 1e9,
        kind=d["kind"],
        bf16=d.get("bf16", True),
        usd_per_hour=price.get("usd_per_hour"),
        price_source=price.get("source"),
        label_gb=d["memory_gb"],
    )


def mps_device(chip: str, memory_bytes: float) -> Device:
    """A Mac's GPU as a Device: its row of the table when the chip has one ("Apple M2 Max"), else the table's slowest
    Apple figures; ``memory_bytes``: what Metal lets a process use (torch.mps.recommended_max_memory)."""
    import re

    words = set(re.split(r"[^a-z0-9]+", chip.lower()))
    rows = {k: d for k, d in gpu_table().items() if d.get("kind") == "mps"}
    key = next((k for k in rows if set(k.split("-")) <= words), None)
    spec = rows[key] if key else min(rows.values(), key=lambda d: d["bf16_tflops"])
    return Device(key=key or "mps", name=chip or "Apple GPU", memory_bytes=float(memory_bytes),
                  peak_flops=spec["bf16_tflops"] * 1e12, bandwidth=spec["bandwidth_gbs"] * 1e9, kind="mps", bf16=False)


def all_gpus() -> list[Device]:
    return [gpu(k) for k in gpu_table()]


def _busy_seconds(t_wall: float, t_cpu: float, threads: int) -> float:
    """Seconds the work would take on idle cores: process CPU time over threads, never more than the wall time.

    Another job sharing the cores stretches the wall clock but not the CPU time this process used.
    """
    return max(min(t_wall, t_cpu / max(1, threads)), 1e-9)


def _matmul_flops(dtype, n: int = 1024, seconds: float = 0.6) -> float:
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    reps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or reps < 1:
        torch.mm(a, b)
        reps += 1
    busy = _busy_seconds(time.perf_counter() - t0, time.process_time() - c0, torch.get_num_threads())
    return 2 * n**3 * reps / busy


def _copy_bandwidth(mib: int = 256) -> float:
    import torch

    src = torch.empty(mib * 1024 * 1024 // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        dst.copy_(src)
        best = min(best, _busy_seconds(time.perf_counter() - t0, time.process_time() - c0, torch.get_num_threads()))
    return 2 * src.numel() * 4 / best  # read + write


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, v = line.split(":", 1)
            out[k] = int(v.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cached_cpu() -> dict:
    """The last live measurement of this CPU at this thread count (``$ALIGNLAB_HOME/plan-cpu.json``), measuring
    once when there is none. Training uses this so that every run does not spend seconds benchmarking."""
    import torch

    from alignlab.paths import home

    path = home() / "plan-cpu.json"
    key = f"{_cpu_model()}|{torch.get_num_threads()}"
    try:
        cache = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        cache = {}
    if not isinstance(cache, dict):  # edited by hand: measured again and rewritten
        cache = {}
    if isinstance(cache.get(key), dict) and {"fp32_gflops", "bf16_gflops", "bandwidth_gbs", "threads"} <= set(cache[key]):
        m = dict(cache[key])
        m.update({k: v for k, v in _memory().items()})
        return m
    m = measure_cpu()
    cache[key] = m
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=2))
    os.replace(tmp, path)
    return m


def _memory() -> dict:
    mem = _meminfo()
    return {"memory_total_gib": round(mem.get("MemTotal", 0) / 2**30, 2),
            "memory_available_gib": round(mem.get("MemAvailable", 0) / 2**30, 2)}


def measure_cpu() -> dict:
    """This machine, live: fp32 and bf16 matmul GFLOP/s at torch's thread count, copy bandwidth, memory.

    Times are process CPU seconds over threads (see _busy_seconds), so a busy machine still shows
    what its cores can do; the wall clock of a contended run is another matter (run.json keeps both)."""
    import torch

    from alignlab.models.loading import cpu_has_fast_bf16

    mem = _meminfo()
    return {
        "threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "fp32_gflops": round(_matmul_flops(torch.float32) / 1e9, 2),
        "bf16_gflops": round(_matmul_flops(torch.bfloat16, n=1024 if cpu_has_fast_bf16() else 256, seconds=0.3) / 1e9, 2),
        "native_bf16": cpu_has_fast_bf16(),
        "bandwidth_gbs": round(_copy_bandwidth() / 1e9, 2),
        "memory_total_gib": round(mem.get("MemTotal", 0) / 2**30, 2),
        "memory_available_gib": round(mem.get("MemAvailable", 0) / 2**30, 2),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }


def cpu_device(measured: dict | None = None) -> Device:
    """This CPU as a Device; training runs fp32 unless the CPU multiplies bf16 natively (then bf16 autocast)."""
    m = measured or measure_cpu()
    peak = m["bf16_gflops"] if m.get("native_bf16") else m["fp32_gflops"]
    avail = m.get("memory_available_gib") or m.get("memory_total_gib") or 0
    return Device(
        key="cpu",
        name=f"this CPU ({m['threads']} threads)",
        memory_bytes=avail * 2**30,
        peak_flops=peak * 1e9,
        bandwidth=m["bandwidth_gbs"] * 1e9,
        kind="cpu",
        bf16=bool(m.get("native_bf16")),
        measured=m,
    )

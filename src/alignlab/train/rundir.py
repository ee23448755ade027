"""The run directory: the contract between training, evaluation, serving and the UI.

runs/<id>/
  config.yaml    resolved config, every default written out
  run.json       method, base model, data, status, steps, final metrics
  env.json       package versions, device, seed, git commit
  adapter/       adapter_model.safetensors + adapter_config.json (plain PEFT loads it)
  metrics.jsonl  one JSON object per logged step
  samples.jsonl  generations on fixed held-out prompts every N steps
  checkpoints/   for --resume; each written under a temporary name, then renamed
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from datetime import datetime
from pathlib import Path

from alignlab import fsutil
from alignlab.errors import AlignlabError


def new_run_dir(runs_dir: str | Path, method: str, name: str | None = None) -> Path:
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    base = name or f"{datetime.now():%Y%m%d-%H%M%S}-{method}"
    path, i = runs_dir / base, 1
    while path.exists():
        i += 1
        path = runs_dir / f"{base}-{i}"
    path.mkdir()
    return path


def check_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise AlignlabError(f"run directory not found: {path}", fix="see `alignlab runs` for the runs you have")
    if not (path / "run.json").is_file():
        raise AlignlabError(f"'{path}' is not an alignlab run (no run.json)", fix="see `alignlab runs`")
    return path


def read_run(path: str | Path) -> dict:
    return json.loads((Path(path) / "run.json").read_text())


def write_json_atomic(path: Path, data) -> None:
    """Temp name, fsync, rename (``alignlab.fsutil``): run.json is never half-written."""
    fsutil.write_json(path, data)


def update_run(path: str | Path, **fields) -> dict:
    path = Path(path)
    info = read_run(path) if (path / "run.json").is_file() else {}
    info.update(fields)
    write_json_atomic(path / "run.json", info)
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_env(path: Path, device: str, seed: int) -> None:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("alignlab", "torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    import torch

    env = {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "seed": seed,
        "git_commit": _git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json_atomic(path / "env.json", env)


def list_runs(runs_dir: str | Path) -> list[dict]:
    """Every run under runs_dir, oldest first, with its run.json and on-disk size."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for d in sorted(p for p in runs_dir.iterdir() if (p / "run.json").is_file()):
        info = read_run(d)
        info["path"] = str(d)
        info["size_bytes"] = sum(f.stat().st_size for f in (d / "adapter").glob("*") if f.is_file()) if (
            d / "adapter"
        ).is_dir() else 0
        out.append(info)
    return out


def read_jsonl(path: Path, note=None) -> list[dict]:
    """Records of metrics.jsonl / samples.jsonl; a torn last line (training killed mid-write) is skipped."""
    return fsutil.read_jsonl(path, note=note)


def resume_logs(run_dir: str | Path, step: int, checkpoint: str) -> None:
    """Before a run continues from ``checkpoint`` (at ``step``): drop log records of later steps (the killed
    attempt's; they are logged again) and mark the resume point in metrics.jsonl."""
    run_dir = Path(run_dir)
    for name in ("metrics.jsonl", "samples.jsonl"):
        path = run_dir / name
        if path.is_file():
            records = read_jsonl(path)
            kept = [r for r in records if not isinstance(r.get("step"), int) or r["step"] <= step]
            if len(kept) != len(records) or not path.read_bytes().endswith(b"\n"):
                fsutil.rewrite_jsonl(path, kept)
    fsutil.append_jsonl(run_dir / "metrics.jsonl", {"step": step, "event": "resumed", "checkpoint": checkpoint})

"""The run directory: the contract between training, evaluation, serving and the UI. Its one home.

runs/<id>/
  config.yaml    resolved config, every default written out
  run.json       method, base model, data, status, steps, final metrics
  env.json       package versions, device, seed, git commit of the start (each resume's under "resumed")
  adapter/       adapter_model.safetensors + adapter_config.json (plain PEFT loads it)
  metrics.jsonl  one JSON object per logged step
  samples.jsonl  generations on fixed held-out prompts every N steps
  checkpoints/   for --resume; each written under a temporary name, then renamed

``Run`` is the object that owns one such directory; the module's functions are its plain-path forms. Nothing
here imports training, evaluation or serving: they all import this.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alignlab import fsutil
from alignlab.errors import AlignlabError


def check_run_name(name: str) -> None:
    """Refuse a run name that is not one plain directory name (empty, '.', '..', a slash)."""
    if not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise AlignlabError(f"run name '{name}' is not a plain directory name",
                            fix="give a name without slashes, e.g. --name snark-v2")


def new_run_dir(runs_dir: str | Path, method: str, name: str | None = None) -> Path:
    runs_dir = Path(runs_dir)
    if name is not None:
        check_run_name(name)
    runs_dir.mkdir(parents=True, exist_ok=True)
    base = name or f"{datetime.now():%Y%m%d-%H%M%S}-{method}"
    path, i = runs_dir / base, 1
    while True:  # mkdir is the claim: two processes asking for one name at once get two directories
        try:
            path.mkdir()
            return path
        except FileExistsError:
            i += 1
            path = runs_dir / f"{base}-{i}"


def check_run_dir(path: str | Path, runs_dir: str | Path | None = None) -> Path:
    """The run directory ``path`` names: a path, or a run's name (``dpo`` for ``runs/dpo``) in ``runs_dir`` (the
    command's project's, which --project may name), else in the enclosing project's."""
    path = Path(path)
    if not path.is_dir():
        from alignlab.config import project_config

        if runs_dir is None:
            cfg, root = project_config()
            runs_dir = root / cfg.runs_dir if root is not None else None
        guess = Path(runs_dir) / path if runs_dir is not None and not path.is_absolute() else None
        if guess is not None and (guess / "run.json").is_file():
            return guess  # a run's name alone, inside its project
        raise AlignlabError(f"run directory not found: {path}", fix="see `alignlab runs` for the runs you have")
    if not (path / "run.json").is_file():
        raise AlignlabError(f"'{path}' is not an alignlab run (no run.json)", fix="see `alignlab runs`")
    return path


def read_run(path: str | Path) -> dict:
    """run.json's fields; one clear error naming the file when it cannot be read."""
    file = Path(path) / "run.json"
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise AlignlabError(f"{file} cannot be read: {str(err).splitlines()[0]}",
                            fix="restore it, or remove the run directory") from err
    if not isinstance(info, dict):
        raise AlignlabError(f"{file} holds no run record (a JSON object)", fix="restore it, or remove the run directory")
    return info


def config_fields(run_dir: str | Path) -> dict:
    """A run's config.yaml as plain fields, read leniently ({} when there is none): what export and serve take from
    it (the system prompt) must not fail on a key this version does not know. A damaged file is one clear line."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as err:
        where = getattr(err, "problem_mark", None)
        raise AlignlabError(f"{path}{f':{where.line + 1}' if where else ''} cannot be read: "
                            f"{str(err).splitlines()[0]}", fix="restore it from the run's checkpoint or a backup") from err
    if cfg is not None and not isinstance(cfg, dict):
        raise AlignlabError(f"{path} holds no settings (a YAML mapping)", fix="restore it from a backup")
    return cfg or {}


def run_named(path) -> Path | None:
    """A run directory, also given by its name inside the enclosing project ("d1" for runs/d1); None when none is."""
    if path is None:
        return None
    try:
        return check_run_dir(path)
    except AlignlabError:
        return Path(path) if Path(path).is_dir() else None


def trained_under(run_dirs, project_prompt: str | None, why: str = "they answer under one",
                  fix: str = "use runs trained under one system prompt") -> str | None:
    """The system prompt runs were trained and are exported with (each run's config.yaml, as its Modelfile's SYSTEM),
    else the project's: answering under another (a project whose prompt changed since), an adapter would answer
    unlike its export, and eval would score answers nobody gets. Runs trained under different prompts are refused."""
    found = {config_fields(p).get("system_prompt") or None for p in map(run_named, run_dirs)
             if p is not None and (p / "config.yaml").is_file()}
    if len(found) > 1:
        raise AlignlabError(f"the runs were trained under different system prompts; {why}", fix=fix)
    return found.pop() if found else project_prompt


def relocated(run_dir: str | Path, recorded: str | None, info: dict | None = None) -> str | None:
    """A path a run recorded (its data, the run it started from, a local base model, a reward file), found again
    after its project was moved or renamed: run.json records absolute paths, so a moved project's resume looked
    for its data at the old place. A path that is there, or not inside the old project, is kept as recorded. The
    old project is run.json's ``project``; a run recorded before that key existed is matched by the longest end of
    the path that the project now holds ("data/pairs.jsonl")."""
    if not recorded or not Path(recorded).is_absolute():
        return recorded
    from alignlab.config import find_project

    root = find_project(run_dir)
    old = (info if info is not None else read_run(run_dir)).get("project")
    if root is not None and old and Path(old) != root:  # moved: the file under the project it lives in now, even
        try:                                             # when a new project at the old place holds one of the name
            mine = root / Path(recorded).relative_to(old)
        except ValueError:
            mine = None
        if mine is not None and mine.exists():
            return str(mine)
    if Path(recorded).exists() or root is None or old:
        return recorded
    parts = Path(recorded).parts
    tails = [Path(*parts[i:]) for i in range(1, len(parts))]
    found = next((root / tail for tail in tails if (root / tail).exists()), None)
    return str(found) if found is not None else recorded


def recorded_config(run_dir: str | Path):
    """The config a run started with (its config.yaml), the local paths in it found again if the project moved."""
    from alignlab.config import load_config

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():  # load_config's fix, `alignlab init`, is for a project's alignlab.yaml
        raise AlignlabError(f"{path} is missing: the settings the run started with are gone",
                            fix="restore it from a backup, or start a new run")
    cfg, info = load_config(path), read_run(run_dir)
    update = {"model": relocated(run_dir, cfg.model, info)}
    if cfg.online.rewards:
        update["online"] = cfg.online.model_copy(update={"rewards": relocated(run_dir, cfg.online.rewards, info)})
    return cfg.model_copy(update=update)


def run_decoding(path: str | Path | None) -> dict:
    """Sampling settings a run asks for over the project's (run.json's ``decoding``): a run trained on distilled
    rows writes its own opening, so it decodes alone ({"base_opening": None, "amplify": 0.0}); {} for others."""
    if path is None:
        return {}
    try:  # a run's name alone too ("dist" for runs/dist)
        return dict(read_run(check_run_dir(path)).get("decoding") or {})
    except AlignlabError:
        return {}


def decodes_alone(path: str | Path | None) -> bool:
    """Whether the run records that it decodes without the base's opening (trained on distilled rows)."""
    own = run_decoding(path)
    return "base_opening" in own and own["base_opening"] is None


def sampling_for(sampling, run_dir):
    """A project's sampling settings (config.SamplingConfig) with what ``run_dir`` records for itself
    (:func:`run_decoding`) put over them. A full fine-tune decodes alone: there is no adapter to switch off, so
    no base to write an opening or to amplify against."""
    own = run_decoding(run_dir)
    if run_dir is not None and full_fine_tune(run_dir):
        own = {**own, "base_opening": None, "amplify": 0.0}
    return sampling.model_copy(update=own) if own else sampling


def full_fine_tune(path: str | Path) -> bool:
    """Whether the run (a path, or a run's name) saved whole weights rather than a LoRA adapter."""
    try:
        adapter = check_run_dir(path) / "adapter"
    except AlignlabError:  # not a run: loading it says so
        return False
    return adapter.is_dir() and not (adapter / "adapter_config.json").is_file()


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


def write_env(path: Path, device: str, seed: int, resumed: bool = False) -> None:
    """env.json: versions, device, seed, commit and time of the run's start. A resume keeps them (the time is when the
    run started: `alignlab runs` sorts by it) and appends its own under ``resumed``."""
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
    first = _read_env(path) if resumed else None
    if first is not None:
        earlier = first.get("resumed") if isinstance(first.get("resumed"), list) else []
        env = {**first, "resumed": [*earlier, env]}
    write_json_atomic(path / "env.json", env)


def _read_env(path: Path) -> dict | None:
    try:
        env = json.loads((path / "env.json").read_text())
    except (OSError, ValueError):
        return None
    return env if isinstance(env, dict) else None


def list_runs(runs_dir: str | Path) -> list[dict]:
    """Every run under runs_dir, oldest first (by when it started: env.json's time; the name breaks ties), with its
    run.json and on-disk size; an unfinished run's steps are the last step it logged."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for d in sorted((p for p in runs_dir.iterdir() if (p / "run.json").is_file()), key=lambda p: (_started(p), p.name)):
        try:
            info = read_run(d)
        except AlignlabError:
            info = {"status": "unreadable"}  # listed, not the end of the listing
        if not isinstance(info, dict):
            info = {"status": "unreadable"}
        if "steps" not in info and (d / "metrics.jsonl").is_file():
            logged = [r["step"] for r in read_jsonl(d / "metrics.jsonl") if isinstance(r.get("step"), int)]
            if logged:
                info["steps"] = max(logged)
        info["path"] = str(d)
        info["size_bytes"] = sum(f.stat().st_size for f in (d / "adapter").glob("*") if f.is_file()) if (
            d / "adapter"
        ).is_dir() else 0
        out.append(info)
    return out


def _started(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "env.json").read_text()).get("time") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def read_jsonl(path: Path, note=None) -> list[dict]:
    """Records of metrics.jsonl / samples.jsonl; a torn last line (training killed mid-write) is skipped."""
    return fsutil.read_jsonl(path, note=note)


def resume_logs(run_dir: str | Path, step: int, checkpoint: str) -> None:
    """Before a run continues from ``checkpoint`` (at ``step``): drop log records of later steps (the killed
    attempt's; they are logged again) and mark the resume point in metrics.jsonl. ``step`` -1: no checkpoint, every
    step's record goes."""
    run_dir = Path(run_dir)
    for name in ("metrics.jsonl", "samples.jsonl"):
        path = run_dir / name
        if path.is_file():
            records = read_jsonl(path)
            kept = [r for r in records if not isinstance(r.get("step"), int) or r["step"] <= step]
            if len(kept) != len(records) or not path.read_bytes().endswith(b"\n"):
                fsutil.rewrite_jsonl(path, kept)
    fsutil.append_jsonl(run_dir / "metrics.jsonl", {"step": max(step, 0), "event": "resumed", "checkpoint": checkpoint})


def run_base(run_dir: str | Path) -> str:
    """The base model a run's adapter was trained on (run.json, else the adapter's own config)."""
    run_dir = Path(run_dir)
    meta = run_dir / "run.json"
    if meta.is_file():
        info = read_run(run_dir)  # a damaged run.json: one line naming it
        if not info.get("model"):
            raise AlignlabError(f"{meta} names no base model (no \"model\" key)",
                                fix="was it written by `alignlab train`? its config.yaml's model: is the base")
        return relocated(run_dir, info["model"], info)
    cfg = run_dir / "adapter" / "adapter_config.json"
    if cfg.is_file():
        return json.loads(cfg.read_text())["base_model_name_or_path"]
    raise AlignlabError(f"'{run_dir}' is not an alignlab run (no run.json)", fix="pass a directory under runs/")


def _local_base(name: str) -> str | None:
    """Where a base model lies on this machine: a registry name's converted directory, an existing path resolved;
    None for anything else (a hub id is matched by its name alone)."""
    from alignlab.models.registry import REGISTRY
    from alignlab.paths import home

    if name in REGISTRY:
        return str((home() / "models" / name).resolve())  # where resolve_model converts it to
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else None


def same_base(recorded: str, model: str, run_dir: str | Path | None = None) -> bool:
    """A run's recorded base is ``model``: the same name, or the same local directory however either is written. A
    new run records `--model ../tiny` absolute (so the string differs from the flag); one an older version recorded
    holds the relative path as typed, or as alignlab.yaml wrote it: looked up from here and under the run's project."""
    if recorded == model:
        return True
    mine = _local_base(model)
    if mine is None:
        return False
    places = [recorded]
    if run_dir is not None and not Path(recorded).expanduser().is_absolute():
        from alignlab.config import find_project

        root = find_project(run_dir)
        places += [str(root / recorded)] if root is not None else []
    return any(_local_base(p) == mine for p in places)


def append_metrics(run_dir: str | Path, *records: dict) -> None:
    """The one writer of metrics.jsonl (training logs, warnings, held-out checks); a torn last line is cut first."""
    fsutil.append_jsonl(Path(run_dir) / "metrics.jsonl", *records)


def append_samples(run_dir: str | Path, *records: dict) -> None:
    """The one writer of samples.jsonl: ``{"step", "prompt", "completion"}`` per answer."""
    fsutil.append_jsonl(Path(run_dir) / "samples.jsonl", *records)


def save_adapter(model, target: Path, tokenizer=None, state_dict: dict | None = None) -> None:
    """Save the adapter (or full model) as safetensors, atomically, refusing non-finite weights.

    ``state_dict``: the gathered weights of a sharded run (``train.engine.gathered_state_dict``); the module's
    own parameters are then only shards, so the check and the file use the gathered values.
    """
    import torch

    model = getattr(model, "module", model)
    if state_dict is not None:
        trainable = {n.replace("_fsdp_wrapped_module.", "") for n, p in model.named_parameters() if p.requires_grad}
        values = [(k, v) for k, v in state_dict.items() if k in trainable] or list(state_dict.items())
    else:
        values = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    bad = [n for n, p in values if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise AlignlabError(
            f"refusing to write an adapter with non-finite values ({bad[0]} and {len(bad) - 1} more)",
            fix="lower the learning rate; the last checkpoint is intact",
        )
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    extra = {"state_dict": state_dict} if state_dict is not None else {}
    adapters = list(getattr(model, "peft_config", None) or [])
    if len(adapters) > 1:  # GRPO/RLOO continued from a run: TRL's frozen "ref" copy is not the run's adapter
        extra["selected_adapters"] = ["default" if "default" in adapters else model.active_adapter]
    model.save_pretrained(str(tmp), safe_serialization=True, **extra)
    if tokenizer is not None and not (tmp / "adapter_config.json").is_file():
        tokenizer.save_pretrained(str(tmp))  # full fine-tune: a self-contained model directory
    from alignlab.export.card import finish_adapter  # portable base name, model card instead of PEFT's template

    finish_adapter(tmp, target.parent)
    fsutil.replace_dir(tmp, target)  # fsynced; the new adapter is in place before the old one is removed


@dataclass(frozen=True)
class Run:
    """One run directory: its files by name, its record, its logs, its adapter and the base it was trained on."""

    path: Path

    @classmethod
    def create(cls, runs_dir: str | Path, method: str, name: str | None = None) -> "Run":
        return cls(new_run_dir(runs_dir, method, name))

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """An existing run; one clear error when ``path`` is not one."""
        return cls(check_run_dir(path))

    config_path = property(lambda self: self.path / "config.yaml")
    adapter_dir = property(lambda self: self.path / "adapter")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    samples_path = property(lambda self: self.path / "samples.jsonl")

    @property
    def info(self) -> dict:
        return read_run(self.path)

    @property
    def base(self) -> str:
        return run_base(self.path)

    def update(self, **fields) -> dict:
        return update_run(self.path, **fields)

    def write_env(self, device: str, seed: int, resumed: bool = False) -> None:
        write_env(self.path, device, seed, resumed)

    def log(self, *records: dict) -> None:
        append_metrics(self.path, *records)

    def log_samples(self, *records: dict) -> None:
        append_samples(self.path, *records)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def samples(self) -> list[dict]:
        return read_jsonl(self.samples_path)

    def require_weights(self) -> None:
        """One clear error when the run holds no trained weights (a failed or interrupted run)."""
        weights = ("adapter_config.json", "model.safetensors", "model.safetensors.index.json")
        if not any((self.adapter_dir / f).is_file() for f in weights):
            raise AlignlabError(f"run {self.path} holds no trained weights (status: {self.info.get('status', 'unknown')})",
                                fix="see `alignlab runs` for finished runs, or train it again")

    def require_chat_model(self) -> None:
        """One clear error when the run is a reward model (it scores answers; it does not write them)."""
        from alignlab import methods

        name = self.info.get("method")
        if name in methods.NAMES and methods.get(name).task == methods.SEQ_CLS:
            raise AlignlabError(f"run {self.path} is a reward model ({name}): it scores answers, it does not write them",
                                fix="score with it (`alignlab reward score`, or `fn: reward_model` in a reward spec), "
                                    "or pick a chat model's run")

    def save_adapter(self, model, tokenizer=None, state_dict: dict | None = None) -> None:
        save_adapter(model, self.adapter_dir, tokenizer, state_dict)


def refuse_if_live(path: str | Path) -> None:
    """One clear error when another process is training in ``path`` now (its run.json says running and its pid lives
    on this host): deleting or resuming it would mix two trainings in one directory."""
    path = Path(path)
    if not (path / "run.json").is_file():
        return
    try:
        info = read_run(path)
    except AlignlabError:
        return
    if shown_status(info) == "running":
        raise AlignlabError(f"run {path} is still training (process {info.get('pid')})",
                            fix="wait for it to finish or stop it first")


def shown_status(info: dict) -> str:
    """A run's status as `alignlab runs` shows it: "running" only while the process that wrote it lives (checked on
    this host); one killed from outside (SIGKILL, the OOM killer, a lost machine) never marked itself, so it reads
    "died". Resume it with `alignlab train ... --resume RUN`."""
    import os
    import socket

    status = info.get("status", "?")
    pid = info.get("pid")
    if status != "running" or not isinstance(pid, int) or info.get("host") != socket.gethostname():
        return status
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "died"
    except PermissionError:  # alive, another user's
        pass
    return status

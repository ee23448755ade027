"""`alignlab train METHOD`: one command for every method; flags override alignlab.yaml."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from alignlab import methods
from alignlab.config import DEFAULT_MODEL, DEFAULT_PERSONA
from alignlab.config import field_help as fh
from alignlab.data.formats import HOW_TO_MAKE
from alignlab.errors import AlignlabError

DEFAULT_DATA = {
    "preference": ("pairs.jsonl", "bundled:persona-pairs"),
    "unpaired": ("kto.jsonl", "bundled:persona-thumbs"),
    "sft": ("sft.jsonl", "bundled:persona-sft"),
    "prompts": ("prompts.jsonl", "bundled:prompts-train"),
}
METHOD_HELP = methods.help_list()


def _beta_help() -> str:
    """Each method's beta default, read from the config (so --help cannot drift from it)."""
    from alignlab.config import ProjectConfig

    cfg, seen = ProjectConfig(), {}
    for m in methods.REGISTRY.values():
        if m.beta:
            seen.setdefault(f"{m.beta_value(cfg):g}", []).append(m.name)
    return "the method's beta: " + ", ".join(f"{'/'.join(ms)} {v}" for v, ms in seen.items())


def default_data(method: str, root: Path | None, data_dir: str, persona: str = DEFAULT_PERSONA) -> str:
    """The project's own file for the method's kind of data, else the bundled one. The bundled persona sets are
    snark examples: a project with another persona gets an error naming what to write instead of training snark."""
    from alignlab.train.engine import data_kind

    name, fallback = DEFAULT_DATA[data_kind(method)]
    if root is not None and (root / data_dir / name).is_file():
        return str(root / data_dir / name)
    if fallback and fallback.startswith("bundled:persona-") and persona != DEFAULT_PERSONA:
        raise AlignlabError(f"no {data_dir}/{name} in this project, and the bundled {fallback} are examples of the "
                            f"persona '{DEFAULT_PERSONA}', not '{persona}'",
                            fix=f"make {data_dir}/{name} for your persona ({HOW_TO_MAKE[name]}), "
                                f"or pass --data {fallback} to train on the snark examples anyway")
    if fallback:
        return fallback
    raise AlignlabError(f"no dataset for '{method}'", fix=f"pass --data FILE (or create {data_dir}/{name})")


def _check(run_dir: Path, cfg, root) -> None:
    """The end-of-run scorecard on a few held-out prompts per category, in plain words next to the metrics."""
    from alignlab.eval.scorecard import end_of_run_check
    from alignlab.progress import console

    console.print(f"[alignlab] checking the adapter on {cfg.train.check_per_category} held-out prompts per category "
                  "(train.check_per_category; 0 turns this off)")
    from alignlab.cli.evaluate import scorecard_progress

    try:
        with scorecard_progress("held-out check", "answering with the base and the adapter"):
            c = end_of_run_check(run_dir, cfg, root, cfg.train.check_per_category)
    except AlignlabError as err:  # the run itself is done and saved: a check that cannot run is a note, not a failure
        console.print(f"[yellow]note: the held-out check was skipped: {err}[/]")
        return
    from alignlab.export.card import write_model_card

    write_model_card(run_dir)  # the adapter's card now carries the check's figures
    alone = (f" (the adapter alone, as exported: in persona {c['alone_in_persona']:.0%}, correct "
             f"{c['alone_correct_share']:.0%}, flagged {c['alone_flagged']:.0%})") if "alone_in_persona" in c else ""
    console.print(f"held-out check ({c['prompts']} prompts): in persona {c['base_in_persona']:.0%} -> {c['adapter_in_persona']:.0%}, "
                  f"correct {c['base_correct_share']:.0%} -> {c['adapter_correct_share']:.0%}, "
                  f"mimicry flagged {c['base_flagged']:.0%} -> {c['adapter_flagged']:.0%}, KL {c['kl']:.3f}/token{alone}",
                  markup=False)
    for w in c["warnings"]:
        console.print(f"[yellow]warning: {w}[/]")
    if not c["warnings"]:
        console.print("no warnings; for the full scorecard: alignlab eval " + str(run_dir), markup=False)


def _strip_launch_flags(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--processes", "--accelerate-config"):
            skip = True
            continue
        if a.startswith(("--processes=", "--accelerate-config=")):
            continue
        out.append(a)
    return out


def check_accelerate_config(path: Path, processes: int = 1) -> None:
    """Refuse, in one line, what this build cannot run: FSDP/DeepSpeed without CUDA, DeepSpeed not installed, and
    --processes beside a config (``processes``), which sets its own count."""
    import importlib.util

    import torch
    import yaml

    if processes > 1:
        raise AlignlabError("--processes and --accelerate-config both set how many processes run",
                            fix="set num_processes in the accelerate config, or drop the config")

    if not path.is_file():
        raise AlignlabError(f"accelerate config not found: {path}", fix="pass the YAML that `accelerate config` wrote")
    try:
        conf = yaml.safe_load(path.read_text()) or {}
        kind = str(conf.get("distributed_type", "NO")).upper()
        processes = int(conf.get("num_processes") or 1) * int(conf.get("num_machines") or 1)
        zero = int((conf.get("deepspeed_config") or {}).get("zero_stage") or 0)
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError) as err:
        raise AlignlabError(f"cannot read accelerate config {path}: {err}") from err
    if kind in ("MULTI_CPU", "NO") and processes > 1 or kind == "MULTI_CPU":
        raise AlignlabError(f"{path} asks for {processes} {kind} processes, which `accelerate launch` runs as one "
                            "process here", fix="for data-parallel CPU processes use --processes N instead")
    if kind in ("FSDP", "DEEPSPEED") and not torch.cuda.is_available():
        raise AlignlabError(f"{kind} (from {path}) needs CUDA GPUs; this machine has none",
                            fix="on CPUs use --processes N (data-parallel over gloo)")
    # the log-prob kernel (train/logps.py) reads the LM head's weight directly: a shard under FSDP with several
    # processes, an empty placeholder under ZeRO-3. One FSDP process ran on a GPU and wrote a whole adapter.
    if (kind == "FSDP" and processes > 1) or (kind == "DEEPSPEED" and zero == 3):
        what = f"FSDP over {processes} processes" if kind == "FSDP" else "DeepSpeed ZeRO-3"
        raise AlignlabError(f"{what} (from {path}) is not supported yet: alignlab's log-prob kernel reads the LM head "
                            "unsharded", fix="use --processes N (data parallel; LoRA fits each GPU) or ZeRO-2")
    if kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
        raise AlignlabError(f"{path} asks for DeepSpeed, which is not installed", fix="pip install deepspeed")


def _launch(processes: int, accelerate_config: Optional[Path], run_dir: Path) -> None:
    """Re-run this command under torchrun (N local processes) or `accelerate launch` (FSDP/DeepSpeed on GPUs)."""
    from alignlab.progress import console

    console.print(f"[alignlab] launching {processes} processes -> {run_dir}")
    args = _strip_launch_flags(sys.argv[1:]) + ["--run-dir", str(run_dir)]
    if accelerate_config is not None:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    else:
        cmd = [sys.executable, "-m", "alignlab.train.launch", "--standalone", f"--nproc_per_node={processes}"]
        console.print("[yellow]note: while it runs, torch's rendezvous store listens on every network interface "
                      "without authentication; keep its ports firewalled from other machines[/]")
    cmd += ["-m", "alignlab", *args]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // max(processes, 1)))))
    # run.json records how the run was launched, so --resume can launch it the same way
    env["ALIGNLAB_LAUNCH"] = f"accelerate:{accelerate_config.resolve()}" if accelerate_config is not None else "torchrun"
    code = _supervise(cmd, env)
    if code:
        raise typer.Exit(code)


def _launched(processes: int, accelerate_config: Optional[Path], run_dir: Path) -> None:
    """_launch, and a run stopped before rank 0 began it (no run.json) leaves no directory: it has nothing to resume,
    and an empty runs/NAME was refused by --name and unusable by --resume."""
    try:
        _launch(processes, accelerate_config, run_dir)
    except (KeyboardInterrupt, typer.Exit) as stop:
        if not (run_dir / "run.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(stop, KeyboardInterrupt):
            raise typer.Exit(128 + signal.SIGINT) from None
        raise


def _supervise(cmd: list[str], env: dict) -> int:
    """Run the launcher in its own session and hand it the signals this command gets (Ctrl-C, kill, a scheduler's
    SIGTERM): it stops the workers, which mark the run interrupted, and we wait for that. Left to subprocess.run, a
    Ctrl-C SIGKILLed the launcher and a SIGTERM ended this command alone; either way the workers trained on."""
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        return subprocess.run(cmd, env=env).returncode
    got = []
    before = {sig: signal.signal(sig, lambda sig, frame: got.append(sig)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        for sig in got:  # one that came while it started
            proc.send_signal(sig)
        for sig in before:
            signal.signal(sig, lambda sig, frame: proc.send_signal(sig))
        code = proc.wait()
        # a launcher the signal killed before Python set its handlers (still starting) returns -SIG: exit 128 + SIG,
        # as a shell says it (sys.exit(-2) was 254)
        return 128 - code if code < 0 else code
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"help_option_names": ["-h", "--help"]})
    def train(
        method: str = typer.Argument(..., help=METHOD_HELP),
        data: Optional[str] = typer.Option(None, "--data", "-d", help="JSONL dataset or bundled:NAME (default: the project's data file for the method)"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help=f"base model: registry name, local dir or hub id (default: {DEFAULT_MODEL})"),
        lr: Optional[float] = typer.Option(None, "--lr", help=fh("train", "learning_rate")),
        epochs: Optional[float] = typer.Option(None, "--epochs", help=fh("train", "epochs")),
        max_steps: Optional[int] = typer.Option(None, "--max-steps", help=fh("train", "max_steps")),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help=fh("train", "batch_size")),
        grad_accum: Optional[int] = typer.Option(None, "--grad-accum", help=fh("train", "grad_accum")),
        max_length: Optional[int] = typer.Option(None, "--max-length", help=fh("train", "max_length")),
        beta: Optional[float] = typer.Option(None, "--beta", help=_beta_help()),
        seed: Optional[int] = typer.Option(None, "--seed", help=fh("train", "seed")),
        lora_r: Optional[int] = typer.Option(None, "--lora-r", help=fh("lora", "r")),
        lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", help=fh("lora", "alpha")),
        full: bool = typer.Option(False, "--full", help="full fine-tuning instead of a LoRA adapter"),
        qlora: bool = typer.Option(False, "--qlora", help="4-bit base (QLoRA); needs CUDA and bitsandbytes"),
        device: Optional[str] = typer.Option(None, "--device", help=fh("train", "device")),
        precision: Optional[str] = typer.Option(None, "--precision", help=fh("train", "precision")),
        rewards: Optional[str] = typer.Option(None, "--rewards", help="reward spec YAML for " + "/".join(methods.names(online=True))),
        allow_outside_rewards: bool = typer.Option(False, "--allow-outside-rewards", help="let the reward spec import file.py:fn from outside the project directory"),
        report_to: Optional[str] = typer.Option(None, "--report-to", help="experiment trackers, comma-separated: tensorboard (into the run's tensorboard/), wandb, trackio, mlflow"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="any config key, e.g. --set dpo.beta=0.2 --set train.trainer_overrides.optim=adafactor"),
        resume: Optional[Path] = typer.Option(None, "--resume", help="continue an interrupted run from its last checkpoint"),
        init_adapter: Optional[Path] = typer.Option(None, "--from", help="start from this run's adapter (next round)"),
        name: Optional[str] = typer.Option(None, "--name", help="run directory name (default: date-time-method)"),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="drop invalid rows (and say how many) instead of refusing"),
        processes: int = typer.Option(1, "--processes", min=1, help="data-parallel processes via torchrun (gloo on CPU, DDP on GPUs)"),
        accelerate_config: Optional[Path] = typer.Option(None, "--accelerate-config", help="hand the run to `accelerate launch` with this config (FSDP/DeepSpeed)"),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", hidden=True),
    ) -> None:
        """Train an adapter with METHOD; writes runs/<id>/ (adapter, metrics, samples, checkpoints)."""
        from alignlab import rundir
        from alignlab.progress import console
        from alignlab.train import engine

        if allow_outside_rewards:  # read by alignlab.rewards.compose, here and in launched processes
            os.environ["ALIGNLAB_ALLOW_OUTSIDE_REWARDS"] = "1"
        if resume is not None:
            _nothing_else_with_resume(locals())
            resume = rundir.check_run_dir(resume, runs_dir=_runs_of(project))
            cfg, data, init_adapter, skip_invalid, root = _resumed(resume, method)
            processes = _resumed_processes(resume, processes, accelerate_config)
            run_dir = resume
        else:
            overrides = {
                "model": model, "train.learning_rate": lr, "train.epochs": epochs, "train.max_steps": max_steps,
                "train.batch_size": batch_size, "train.grad_accum": grad_accum, "train.max_length": max_length,
                "train.seed": seed, "train.device": device, "train.precision": precision, "lora.r": lora_r,
                "lora.alpha": lora_alpha, "lora.enabled": False if full else None, "lora.qlora": True if qlora else None,
                "online.rewards": rewards,
                "train.report_to": [x.strip() for x in report_to.split(",") if x.strip()] if report_to else None,
            }
            cfg, root, data = _configured(project, method, overrides, beta, set_, data)
        runs_dir = (root / cfg.runs_dir) if root else Path(cfg.runs_dir)
        common = dict(skip_invalid=skip_invalid, init_adapter=str(init_adapter) if init_adapter else None,
                      resumed=resume is not None, lora_flags=_lora_flags(lora_r, lora_alpha, full, qlora, set_))
        _refuse_taken(runs_dir, name, run_dir)
        if processes > 1 or accelerate_config:
            _check_parallel(method)
            if "LOCAL_RANK" not in os.environ:
                engine.prepare(method, cfg, data, runs_dir, run_dir=run_dir or Path("/dev/null"), **common)
                if accelerate_config is not None:  # checked before the run directory is made
                    check_accelerate_config(accelerate_config, processes)
                target = run_dir or rundir.new_run_dir(runs_dir, method, name)
                _launched(processes, accelerate_config, target)  # rank 0 prints the run directory on stdout
                return
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
        elif name:
            rundir.check_run_name(name)
        ctx = engine.prepare(method, cfg, data, runs_dir, run_dir=run_dir, name=name, **common)
        if engine.is_main_process():
            console.print(f"[alignlab] {method} on {len(ctx.rows)} rows of {data} -> {ctx.run_dir}")
        out = engine.run(ctx, data, resume=resume is not None)
        if engine.is_main_process():
            _finished(out, method, cfg, root)


def _lora_flags(lora_r, lora_alpha, full: bool, qlora: bool, set_) -> dict[str, str]:
    """The lora.* keys this command line sets, each with the flag that set it: beside --from, one that differs from
    what the run continued from trained is refused (it was ignored while the run's config.yaml recorded it)."""
    from alignlab.config import LoraConfig, parse_set

    given = {"lora.r": lora_r is not None and "--lora-r", "lora.alpha": lora_alpha is not None and "--lora-alpha",
             "lora.enabled": full and "--full", "lora.qlora": qlora and "--qlora"}
    flags = {k: v for k, v in given.items() if v}
    for key, value in parse_set(set_).items():
        if key == "lora":  # `--set 'lora={r: 4}'`: each key of the mapping (any text: every key)
            subs = value if isinstance(value, dict) else LoraConfig.model_fields
            flags.update({f"lora.{sub}": f"--set lora.{sub}" for sub in subs})
        elif key.startswith("lora."):
            flags[key] = f"--set {key}"
    return flags


# the options that set up a new run: beside --resume they would be ignored
_NEW_RUN_FLAGS = {"data": "--data", "model": "--model", "lr": "--lr", "epochs": "--epochs", "max_steps": "--max-steps",
                  "batch_size": "--batch-size", "grad_accum": "--grad-accum", "max_length": "--max-length",
                  "beta": "--beta", "seed": "--seed", "lora_r": "--lora-r", "lora_alpha": "--lora-alpha", "full": "--full",
                  "qlora": "--qlora", "device": "--device", "precision": "--precision", "rewards": "--rewards",
                  "report_to": "--report-to", "set_": "--set", "init_adapter": "--from", "name": "--name"}


def _nothing_else_with_resume(options: dict) -> None:
    """--resume continues a run with the settings it started with: a flag beside it would be ignored, so it is refused."""
    stray = [flag for key, flag in _NEW_RUN_FLAGS.items() if options.get(key) not in (None, False)]
    if stray:
        raise AlignlabError(f"--resume continues the run with the settings it started with; {', '.join(stray)} "
                            "would be ignored", fix=f"drop {', '.join(stray)}, or start a new run")


def _resumed(resume: Path, method: str):
    """(config, data, init adapter, whether invalid rows were skipped, project root) of the interrupted run to
    continue; the root is the project the run lives in (its held-out prompts and persona scorer for the check)."""
    from alignlab import rundir
    from alignlab.config import find_project

    rundir.refuse_if_live(resume)
    info = rundir.read_run(resume)
    for key, what in (("method", "method"), ("data", "data file")):
        if not isinstance(info.get(key), str) or not info[key]:  # a raw KeyError before
            raise AlignlabError(f"{resume / 'run.json'} records no {what} (no \"{key}\" key)",
                                fix="restore run.json from a backup, or start a new run")
    cfg = rundir.recorded_config(resume)
    if info.get("method") != method:
        raise AlignlabError(f"run {resume} is a '{info.get('method')}' run, not '{method}'")
    init_adapter = rundir.relocated(resume, info.get("init_adapter"), info)
    return (cfg, rundir.relocated(resume, info["data"], info), Path(init_adapter) if init_adapter else None,
            bool(info.get("skip_invalid")), find_project(resume))


def _runs_of(project: Path | None) -> Path | None:
    """The runs directory of the project --project names (None: the enclosing project's, found where needed)."""
    from alignlab.config import project_config

    if project is None:
        return None
    cfg, root = project_config(project)
    return root / cfg.runs_dir


def _resumed_processes(resume: Path, processes: int, accelerate_config: Optional[Path]) -> int:
    """A resumed run trains in as many processes as it started with (run.json's ``processes``): with another count
    the steps differ (a 2-process run of 4 steps resumed in one process trained 8). A run launched through
    `accelerate launch` is resumed through it, its config setting the count."""
    from alignlab import rundir

    info = rundir.read_run(resume)
    recorded, launch = int(info.get("processes") or 1), str(info.get("launch") or "")
    if "LOCAL_RANK" in os.environ or "ALIGNLAB_LAUNCH" in os.environ:  # a launched process: its launcher decided
        return processes
    if accelerate_config is not None:
        if launch == "torchrun":
            raise AlignlabError(f"{resume} was launched with --processes {recorded}, not through accelerate",
                                fix="resume without --accelerate-config")
        return processes
    if launch.startswith("accelerate:"):
        raise AlignlabError(f"{resume} was launched with --accelerate-config {launch.split(':', 1)[1]}",
                            fix="resume with the same --accelerate-config")
    if processes == recorded:
        return processes
    if processes != 1:
        raise AlignlabError(f"{resume} was trained in {recorded} process{'es' if recorded > 1 else ''}, not {processes}",
                            fix="drop --processes: --resume runs it as it started")
    return recorded


def _refuse_taken(runs_dir: Path, name: str | None, run_dir: Path | None) -> None:
    """A new run's --name must be new (``run_dir`` given: a resumed or launched run, whose directory exists): a
    second run under it became NAME-2, and `--from runs/NAME` went on from the old one."""
    path = runs_dir / name if name and run_dir is None else None
    if path is not None and path.exists():
        raise AlignlabError(f"{path} already exists", fix=f"pick another --name, continue an interrupted run with "
                                                          f"--resume {path}, or remove it first")


def _configured(project, method: str, overrides: dict, beta, set_, data):
    """(config, project root, data) of a new run: the project's config with the command line's overrides."""
    from alignlab.config import apply_flags, project_config

    cfg, root = project_config(project)
    names = dict(FLAG_OF)
    if beta is not None:
        key = methods.get(method).beta
        if key is None:
            raise AlignlabError(f"'{method}' has no beta")
        overrides[key], names[key] = beta, "--beta"
    if overrides.get("online.rewards") is not None and not methods.get(method).online:
        # an offline method learns from its data's labels: the spec was recorded in run.json and never read
        online = "/".join(methods.names(online=True))
        raise AlignlabError(f"--rewards is the reward spec of the online methods ({online}); {method} learns from its "
                            "data, not from rewards", fix="drop --rewards, or train an online method")
    cfg = apply_flags(cfg, overrides, names, set_)
    return cfg, root, data or default_data(method, root, cfg.data_dir, cfg.persona)


# the config key each of train's flags sets, for errors that name the flag the value came from
FLAG_OF = {"model": "--model", "train.learning_rate": "--lr", "train.epochs": "--epochs", "train.max_steps": "--max-steps",
           "train.batch_size": "--batch-size", "train.grad_accum": "--grad-accum", "train.max_length": "--max-length",
           "train.seed": "--seed", "train.device": "--device", "train.precision": "--precision", "lora.r": "--lora-r",
           "lora.alpha": "--lora-alpha", "lora.enabled": "--full", "lora.qlora": "--qlora", "online.rewards": "--rewards",
           "train.report_to": "--report-to"}


def _check_parallel(method: str) -> None:
    if method in methods.REGISTRY and methods.get(method).own_loop:
        parallel = " and ".join(methods.names(online=True, own_loop=False))
        raise AlignlabError(f"{method.upper()} runs in one process: its loop does not synchronise gradients between processes",
                            fix=f"drop --processes / --accelerate-config ({parallel} run data-parallel)")


def _finished(out: Path, method: str, cfg, root) -> None:
    """The run's last metrics, the held-out check when the config asks for it, and the run directory on stdout."""
    from alignlab import rundir
    from alignlab.progress import console

    info = rundir.read_run(out)
    online = methods.get(method).online  # their loss says little (GRPO's is about 0 by construction): what moved
    keys = ("tokens_per_s",) if online else ("loss", "rewards/margins", "rewards/accuracies", "tokens_per_s")
    final = ", ".join(f"{k} {v:.4g}" for k, v in info.get("final", {}).items() if k in keys)
    if online:
        final = f"{_online_summary(rundir.read_jsonl(out / 'metrics.jsonl'))}; {final}"
    console.print(f"[green]done[/]: {info.get('steps')} steps; {final}", soft_wrap=True)
    if cfg.train.check_per_category and methods.get(method).task == methods.CAUSAL:
        _check(out, cfg, root)
    print(out)


def _online_summary(records: list[dict]) -> str:
    """A GRPO, RLOO or PPO run in one line from its metrics.jsonl: reward and mean completion length at the first and
    last logged step, the last KL to the reference per token, and each warning with its step."""
    import math

    def num(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    steps = [r for r in records if "warning" not in r and "event" not in r and isinstance(r.get("step"), int)]

    def first_last(key: str) -> list[float]:
        values = [r[key] for r in steps if num(r.get(key))]
        return [values[0], values[-1]] if values else []

    reward, length = first_last("reward"), first_last("completions/mean_length")
    kl = [r["kl"] for r in steps if num(r.get("kl"))]
    warned = [f"{r['warning']} (step {r.get('step')})" for r in records if isinstance(r.get("warning"), str)]
    return "; ".join([
        f"reward {reward[0]:.3f} -> {reward[1]:.3f}" if reward else "no reward recorded",
        f"KL {kl[-1]:.3g}/token" if kl else "KL not recorded",
        f"mean length {length[0]:.1f} -> {length[1]:.1f} tokens" if length else "length not recorded",
        "warnings: " + ", ".join(warned) if warned else "no warnings",
    ])

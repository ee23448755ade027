"""`alignlab plan METHOD`: memory, time and money for a run, before any weights are downloaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from alignlab import methods
from alignlab.errors import AlignlabError


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"help_option_names": ["-h", "--help"]})
    def plan(
        method: Optional[str] = typer.Argument(None, help=methods.help_list()),
        model: Optional[str] = typer.Option(
            None, "--model", "-m",
            help="bundled name (see --list), local model directory, config.json, GGUF file or ollama:NAME (default: model)"),
        lora: bool = typer.Option(
            False, "--lora", help="LoRA adapter on a bf16 base (default, unless lora.enabled is false or lora.qlora true)"),
        qlora: bool = typer.Option(False, "--qlora", help="LoRA on a 4-bit NF4 base (CUDA only)"),
        full: bool = typer.Option(False, "--full", help="full fine-tuning"),
        lora_r: Optional[int] = typer.Option(None, "--lora-r", min=1, help="LoRA rank (default: lora.r)"),
        seq_len: Optional[int] = typer.Option(
            None, "--seq-len", min=1, help="tokens of prompt + completion (sets the completion length)"),
        prompt_len: Optional[int] = typer.Option(
            None, "--prompt-len", min=1, help="prompt tokens (default: train.max_prompt_length)"),
        completion_len: Optional[int] = typer.Option(
            None, "--completion-len", min=1, help="completion tokens (default: train.max_length minus the prompt; "
            "online: generated tokens, online.max_completion_length)"),
        batch_size: Optional[int] = typer.Option(
            None, "--batch-size", "-b", min=1,
            help="examples (pairs; prompts for online methods) per step (default: train.batch_size)"),
        grad_accum: Optional[int] = typer.Option(
            None, "--grad-accum", min=1, help="gradient accumulation steps (default: train.grad_accum)"),
        generations: Optional[int] = typer.Option(
            None, "--generations", min=1,
            help="completions per prompt, grpo and rloo (default: online.num_generations; ppo draws one)"),
        gradient_checkpointing: Optional[bool] = typer.Option(
            None, "--gradient-checkpointing/--no-gradient-checkpointing",
            help="default: train.gradient_checkpointing (auto: on with QLoRA, else off, as training does)"),
        vllm: Optional[bool] = typer.Option(
            None, "--vllm/--no-vllm",
            help="grpo, rloo: generate with vLLM in colocate mode, reserving 30% of the card (default: online.use_vllm)"),
        reward_model: Optional[str] = typer.Option(
            None, "--reward-model", help="online methods: a reward model held in memory (bundled name or config)"),
        steps: Optional[int] = typer.Option(
            None, "--steps", min=1, help="optimizer steps (default: train.max_steps, else one pass over --examples)"),
        examples: int = typer.Option(1000, "--examples", min=1, help="dataset rows (pairs, prompts)"),
        epochs: Optional[float] = typer.Option(
            None, "--epochs", min=0.01, max=10_000, help="passes over the data (default: train.epochs)"),
        processes: int = typer.Option(1, "--processes", min=1, help="data-parallel processes (one per GPU): each "
                                      "takes 1/N of the examples, so 1/N of the steps; memory is per process"),
        gpu: Optional[str] = typer.Option(None, "--gpu", help="show this GPU in detail (default: the cheapest that fits)"),
        cpu: bool = typer.Option(
            False, "--cpu", help="this machine, measured now (matmul GFLOP/s, bandwidth, free memory)"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
        calibrate: Optional[Path] = typer.Option(
            None, "--calibrate", help="refit the utilization factors from the runs in this folder"),
        list_: bool = typer.Option(False, "--list", help="list the bundled models and GPUs"),
    ) -> None:
        """Estimate peak memory, time per step and in total, and rental cost; verdict and cheapest GPU.

        Inside a project (a folder at or above this one holds alignlab.yaml) every default the flags leave open
        comes from its config: model, lora.*, train.* (batch, lengths, steps, epochs, gradient checkpointing,
        shared prompt), online.* and dpo.precompute_ref, as `alignlab train` would run; elsewhere alignlab's
        defaults. The names above (lora.r, train.batch_size, ...) are those config keys.
        """
        from alignlab.config import project_config
        from alignlab.plan import report
        from alignlab.plan.shapes import resolve_shape

        if calibrate is not None:
            return _calibrate(calibrate, as_json)
        if list_:
            return _list(as_json)
        if method is None:
            raise AlignlabError("which method?",
                                fix="alignlab plan dpo (or sft, kto, grpo, ...); --list shows models and GPUs")
        methods.get(method)  # an unknown method is refused before the project's config is read
        d, root = project_config()
        flags = dict(lora=lora, qlora=qlora, full=full, lora_r=lora_r, seq_len=seq_len, prompt_len=prompt_len,
                     completion_len=completion_len, grad_accum=grad_accum, generations=generations,
                     gradient_checkpointing=gradient_checkpointing, vllm=vllm, reward_model=reward_model,
                     processes=processes, gpu=gpu, cpu=cpu)
        _check_flags(method, d, flags, root)
        w, said = _workload(method, d, flags, batch_size=batch_size, steps=steps, examples=examples, epochs=epochs)
        out = report.build(resolve_shape(model or d.model), w, device=gpu, cpu=cpu, extra_notes=said,
                           shared=d.train.shared_prompt)
        print(json.dumps(out, indent=2) if as_json else "\n".join(report.render(out)))


def _workload(method: str, d, f: dict, batch_size, steps, examples, epochs):
    """The Workload the flags and the config's defaults (``d``) describe, and a note per flag it cannot use."""
    from alignlab.plan.estimate import Workload

    t, spec = d.train, methods.get(method)
    mode = _mode(d, f)
    p = f["prompt_len"] if f["prompt_len"] is not None else t.max_prompt_length
    c = _completion_len(method, p, f["seq_len"], f["completion_len"], d)
    gc = f["gradient_checkpointing"]
    if gc is None:  # as training decides it (train.gradient_checkpointing: auto is on with QLoRA)
        gc = t.gradient_checkpointing == "on" or (t.gradient_checkpointing == "auto" and mode == "qlora")
    epochs = epochs if epochs is not None else t.epochs
    # as training decides it (preference.reference_plan): precompute_ref on, or auto from the second epoch
    choice = getattr(getattr(d, spec.section), "precompute_ref", "off") if spec.reference else "off"
    said = _ignored(method, mode, f)
    online = spec.online and method != methods.PPO
    w = Workload(
        method=method, mode=mode, lora_r=f["lora_r"] or d.lora.r, batch=batch_size or t.batch_size,
        grad_accum=f["grad_accum"] or t.grad_accum, prompt_len=p, completion_len=c,
        num_generations=f["generations"] or d.online.num_generations, grad_ckpt=gc,
        vllm=online and (f["vllm"] if f["vllm"] is not None else d.online.use_vllm),
        ppo_epochs=d.ppo.ppo_epochs, reward_params=_reward_params(spec, f["reward_model"], d),
        steps=steps or (t.max_steps if t.max_steps > 0 else None), examples=examples, epochs=epochs,
        processes=f["processes"], precompute_ref=choice == "on" or (choice == "auto" and epochs > 1),
    )
    return w, said


def _reward_params(spec, reward_model: str | None, d) -> int:
    """Parameters of the reward held in memory: --reward-model's, else the default reward's MiniLM embedder, which an
    online run without online.rewards loads (as record.workload_from_context counts it); none offline."""
    from alignlab.plan.shapes import MINILM_PARAMS, resolve_shape

    if not spec.online:
        return 0
    if reward_model:
        return resolve_shape(reward_model).total_params
    return 0 if d.online.rewards else MINILM_PARAMS


def _mode(d, f: dict) -> str:
    """lora, qlora or full: the flag, else the config's lora.enabled and lora.qlora, as training decides it."""
    return "full" if f["full"] else "qlora" if f["qlora"] else "lora" if f["lora"] else (
        "full" if not d.lora.enabled else "qlora" if d.lora.qlora else "lora")


def _config_line(root, *keys: str) -> str:
    """``alignlab.yaml:N`` of the nested key (lora, qlora) in the project's config; the file alone when not found."""
    import yaml

    from alignlab.config import CONFIG_NAME

    path = root / CONFIG_NAME
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return str(path)
    line = None
    for key in keys:
        found = next((v for k, v in node.value if k.value == key), None) if isinstance(node, yaml.MappingNode) else None
        if found is None:
            return str(path)
        line, node = found.start_mark.line + 1, found
    return f"{path}:{line}"


def _ignored(method: str, mode: str, f: dict) -> list[str]:
    """One line per flag the planned run would not use (training would not either), so none is dropped unsaid."""
    spec, out = methods.get(method), []
    if not spec.online:
        unused = [name for name, key in (("--generations", "generations"), ("--vllm", "vllm"),
                                         ("--reward-model", "reward_model")) if f[key]]
        if unused:
            out.append(f"{', '.join(unused)} apply to the online methods ({', '.join(methods.names(online=True))}); "
                       f"{method} does not use them")
    elif method == methods.PPO:  # train/ppo.py: one answer per prompt, no accumulation, transformers' generate
        if f["generations"] and f["generations"] != 1:
            out.append(f"{method} draws one answer per prompt: --generations {f['generations']} is not used")
        if f["grad_accum"] and f["grad_accum"] != 1:
            out.append(f"{method} does not accumulate gradients: --grad-accum {f['grad_accum']} is not used")
        if f["vllm"]:
            out.append(f"{method} generates with transformers: --vllm is not used")
    if mode == "full" and f["lora_r"]:
        out.append(f"--lora-r {f['lora_r']} is not used with --full (every weight trains)")
    return out


def _calibrate(folder: Path, as_json: bool) -> None:
    """Refit the utilization factors from measured runs and say how far each run was from the new prediction."""
    from alignlab.plan.calibrate import calibrate as run_calibration
    from alignlab.plan.estimate import dumps

    rep = run_calibration(folder)
    if as_json:
        print(dumps(rep))
        return
    for kind, r in rep.items():
        if kind == "path":
            continue
        f = r["factors"]
        print(f"{kind}: train {f['train']:.3g}, {f['pass_layer_overhead_s'] * 1e3:.3g} ms per layer per training pass, "
              f"decode bandwidth {f['decode_bw']:.3g}, {f['layer_overhead_s'] * 1e3:.3g} ms per layer per decoding step "
              f"(from {len(r['runs'])} runs)")
        for row in r["runs"]:
            print(f"  {row['method']:<6} measured {row['measured_s']:.3g} s/step, now predicted {row['predicted_s']:.3g} "
                  f"({row['ratio']:.2f}x)  {row['run']}")
        if r.get("note"):
            print(f"  note: {r['note']}")
    print(f"saved to {rep['path']}")


def _list(as_json: bool = False) -> None:
    """The bundled models and GPUs: their names, or with --json one object with each one's figures."""
    from alignlab.plan.devices import gpu_table
    from alignlab.plan.shapes import bundled

    if as_json:
        print(json.dumps({"models": bundled(), "gpus": gpu_table()}, indent=2))
        return
    print("models: " + ", ".join(bundled()))
    print("gpus:   " + ", ".join(gpu_table()))


def _check_flags(method: str, d, f: dict, root=None) -> None:
    """Refuse what training would refuse, before any arithmetic; ``root``: the project whose config gave ``d``."""
    if sum([f["lora"], f["qlora"], f["full"]]) > 1:
        raise AlignlabError("choose one of --lora, --qlora, --full")
    if f["gpu"] and f["cpu"]:
        raise AlignlabError("choose one of --gpu and --cpu")
    if f["cpu"] and _mode(d, f) == "qlora":  # the flag, or the project's lora.qlora: true
        if f["qlora"]:
            raise AlignlabError("QLoRA needs a CUDA GPU; --cpu plans this machine",
                                fix="use --lora, or --gpu NAME for a card")
        raise AlignlabError("lora.qlora: QLoRA needs a CUDA GPU; --cpu plans this machine",
                            where=_config_line(root, "lora", "qlora") if root is not None else None,
                            fix="pass --lora (or --full), or --gpu NAME for a card")
    spec = methods.get(method)
    if method == methods.PPO and f["processes"] > 1:
        raise AlignlabError(f"PPO runs in one process, not {f['processes']}: its loop does not synchronise gradients "
                            "between processes", fix="drop --processes (grpo and rloo run data-parallel)")
    if spec.online and method != methods.PPO and f["generations"] == 1:
        raise AlignlabError(f"{method} compares the completions of each prompt: --generations must be at least 2",
                            fix="--generations 2 or more (online.num_generations)")
    vllm = f["vllm"] if f["vllm"] is not None else (d.online.use_vllm and spec.online and method != methods.PPO)
    if vllm and spec.online and method != methods.PPO and (f["cpu"] or _apple(f["gpu"])):
        given = "--vllm" if f["vllm"] else "online.use_vllm"
        raise AlignlabError(f"{given}: vLLM needs a CUDA GPU, and this plan is for {'this CPU' if f['cpu'] else f['gpu']}",
                            fix="drop --vllm (or pass --no-vllm): generation then uses transformers")


def _apple(gpu: str | None) -> bool:
    from alignlab.plan.devices import gpu_table

    return bool(gpu) and gpu_table().get(gpu.lower().replace(" ", "-"), {}).get("kind") == "mps"


def _completion_len(method: str, prompt_len: int, seq_len, completion_len, d) -> int:
    """Completion tokens: --seq-len minus the prompt, else --completion-len, else the config's default."""
    if seq_len is not None:
        if seq_len <= prompt_len:
            raise AlignlabError(f"--seq-len {seq_len} leaves no room after a {prompt_len}-token prompt",
                                fix="raise --seq-len or lower --prompt-len")
        if completion_len is not None and completion_len != seq_len - prompt_len:
            raise AlignlabError(f"--seq-len {seq_len} after a {prompt_len}-token prompt leaves {seq_len - prompt_len} "
                                f"completion tokens, not --completion-len {completion_len}",
                                fix="give one of --seq-len and --completion-len")
        return seq_len - prompt_len
    if completion_len:
        return completion_len
    if methods.is_online(method):
        return d.online.max_completion_length
    left = d.train.max_length - prompt_len
    if left < 1:
        raise AlignlabError(f"a {prompt_len}-token prompt fills train.max_length ({d.train.max_length} tokens): no room "
                            "is left for a completion", fix="give the whole length with --seq-len N (prompt + completion) "
                            "or the answer's with --completion-len N")
    return left

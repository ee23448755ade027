"""`alignlab plan METHOD`: memory, time and money for a run, before any weights are downloaded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from alignlab import methods
from alignlab.config import DEFAULT_MODEL
from alignlab.errors import AlignlabError


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"help_option_names": ["-h", "--help"]})
    def plan(
        method: Optional[str] = typer.Argument(None, help=methods.help_list()),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="bundled name (see --list), local model directory or config.json"),
        lora: bool = typer.Option(False, "--lora", help="LoRA adapter on a bf16 base (the default)"),
        qlora: bool = typer.Option(False, "--qlora", help="LoRA on a 4-bit NF4 base (CUDA only)"),
        full: bool = typer.Option(False, "--full", help="full fine-tuning"),
        lora_r: Optional[int] = typer.Option(None, "--lora-r", min=1, help="LoRA rank (default: lora.r)"),
        seq_len: Optional[int] = typer.Option(None, "--seq-len", min=1, help="tokens of prompt + completion (sets the completion length)"),
        prompt_len: Optional[int] = typer.Option(None, "--prompt-len", min=1, help="prompt tokens (default: train.max_prompt_length)"),
        completion_len: Optional[int] = typer.Option(None, "--completion-len", min=1, help="completion tokens (online: generated tokens, default online.max_completion_length)"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", min=1, help="examples (pairs; prompts for online methods) per step"),
        grad_accum: Optional[int] = typer.Option(None, "--grad-accum", min=1, help="gradient accumulation steps"),
        generations: Optional[int] = typer.Option(None, "--generations", min=1, help="completions per prompt (grpo, rloo, ppo)"),
        gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing", help="default: on with QLoRA, else off (as training does)"),
        vllm: bool = typer.Option(False, "--vllm", help="generate with vLLM in colocate mode (reserves 30% of the card)"),
        reward_model: Optional[str] = typer.Option(None, "--reward-model", help="a reward model held in memory (bundled name or config), e.g. for PPO"),
        steps: Optional[int] = typer.Option(None, "--steps", min=1, help="optimizer steps (default: one pass over --examples)"),
        examples: int = typer.Option(1000, "--examples", min=1, help="dataset rows (pairs, prompts)"),
        epochs: float = typer.Option(1.0, "--epochs", min=0.01, max=10_000, help="passes over the data"),
        processes: int = typer.Option(1, "--processes", min=1, help="data-parallel processes (one per GPU): each "
                                      "takes 1/N of the examples, so 1/N of the steps; memory is per process"),
        gpu: Optional[str] = typer.Option(None, "--gpu", help="show this GPU in detail (default: the cheapest that fits)"),
        cpu: bool = typer.Option(False, "--cpu", help="this machine, measured now (matmul GFLOP/s, bandwidth, free memory)"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
        calibrate: Optional[Path] = typer.Option(None, "--calibrate", help="refit the utilization factors from the runs in this folder"),
        list_: bool = typer.Option(False, "--list", help="list the bundled models and GPUs"),
    ) -> None:
        """Estimate peak memory, time per step and in total, and rental cost; verdict and cheapest GPU."""
        from alignlab.config import ProjectConfig
        from alignlab.plan import report
        from alignlab.plan.estimate import Workload
        from alignlab.plan.shapes import resolve_shape

        if calibrate is not None:
            return _calibrate(calibrate, as_json)
        if list_:
            return _list()
        if method is None:
            raise AlignlabError("which method?", fix="alignlab plan dpo (or sft, kto, grpo, ...); --list shows models and GPUs")
        _check_flags(lora, qlora, full, gpu, cpu)
        d = ProjectConfig()
        p = prompt_len if prompt_len is not None else d.train.max_prompt_length
        c = _completion_len(method, p, seq_len, completion_len, d)
        mode = "full" if full else ("qlora" if qlora else "lora")
        w = Workload(
            method=method, mode=mode, lora_r=lora_r or d.lora.r, batch=batch_size or d.train.batch_size,
            grad_accum=grad_accum or d.train.grad_accum, prompt_len=p, completion_len=c,
            num_generations=generations or d.online.num_generations,
            grad_ckpt=gradient_checkpointing if gradient_checkpointing is not None else mode == "qlora", vllm=vllm,
            reward_params=resolve_shape(reward_model).total_params if reward_model else 0,
            steps=steps, examples=examples, epochs=epochs, processes=processes,
            # as training decides it (preference.reference_plan): DPO computes its reference once from the second epoch
            precompute_ref=method == methods.DPO and d.dpo.precompute_ref != "off" and epochs > 1,
        )
        out = report.build(resolve_shape(model), w, device=gpu, cpu=cpu)
        print(json.dumps(out, indent=2) if as_json else "\n".join(report.render(out)))


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
        print(f"{kind}: train {f['train']:.3g}, decode bandwidth {f['decode_bw']:.3g}, "
              f"{f['layer_overhead_s'] * 1e3:.3g} ms per layer per decoding step (from {len(r['runs'])} runs)")
        for row in r["runs"]:
            print(f"  {row['method']:<6} measured {row['measured_s']:.3g} s/step, now predicted {row['predicted_s']:.3g} "
                  f"({row['ratio']:.2f}x)  {row['run']}")
    print(f"saved to {rep['path']}")


def _list() -> None:
    from alignlab.plan.devices import gpu_table
    from alignlab.plan.shapes import bundled

    print("models: " + ", ".join(bundled()))
    print("gpus:   " + ", ".join(gpu_table()))


def _check_flags(lora: bool, qlora: bool, full: bool, gpu, cpu: bool) -> None:
    if sum([lora, qlora, full]) > 1:
        raise AlignlabError("choose one of --lora, --qlora, --full")
    if gpu and cpu:
        raise AlignlabError("choose one of --gpu and --cpu")
    if qlora and cpu:
        raise AlignlabError("QLoRA needs a CUDA GPU; --cpu plans this machine", fix="use --lora, or --gpu NAME for a card")


def _completion_len(method: str, prompt_len: int, seq_len, completion_len, d) -> int:
    """Completion tokens: --seq-len minus the prompt, else --completion-len, else the config's default."""
    if seq_len is not None:
        if seq_len <= prompt_len:
            raise AlignlabError(f"--seq-len {seq_len} leaves no room after a {prompt_len}-token prompt",
                                fix="raise --seq-len or lower --prompt-len")
        return seq_len - prompt_len
    if completion_len:
        return completion_len
    return d.online.max_completion_length if methods.is_online(method) else d.train.max_length - prompt_len

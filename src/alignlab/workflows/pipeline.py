"""The four-stage path: SFT -> reward model -> DPO -> GRPO on generated arithmetic, answers after each stage.

Each stage is an ordinary run directory under ``<out>/runs``; DPO starts from the SFT adapter and GRPO
from the DPO adapter. The reward model is trained on the same pairs and scored on held-out pairs. GRPO
uses a verifiable reward: 1 when the last number of the answer is correct, plus a brevity bonus.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from alignlab import fsutil, methods, rundir
from alignlab.config import DEFAULT_MODEL, PROGRESS_MAX_NEW_TOKENS, ProjectConfig, apply_overrides
from alignlab.data import bundled_path
from alignlab.progress import console

STAGES = (methods.SFT, methods.RM, methods.DPO, methods.GRPO)  # in order; DPO continues SFT, GRPO continues DPO
SHOW_PROMPTS = ["What is 12 plus 30?", "How do I keep basil alive on a windowsill?", "What is a prime number?"]

REWARD_SPEC = """\
# GRPO reward for the pipeline: correctness first, then a bonus for brevity.
components:
  - {name: correct, fn: arithmetic, weight: 1.0}
  - {name: length, fn: length_penalty, weight: -0.2, args: {target: 12}}
"""


@dataclass
class StageSettings:
    sft_steps: int = 30
    rm_steps: int = 30
    dpo_steps: int = 30
    grpo_steps: int = 15
    batch_size: int = 4
    grpo_prompts: int = 64
    num_generations: int = 4
    max_completion_length: int = 32


def arithmetic_prompts(n: int, seed: int = 0, exclude: list[str] | tuple[str, ...] = ()) -> list[dict]:
    """``n`` different single-digit sums, differences and products with their answers: {"prompt", "answer"}.

    Kept easy on purpose: GRPO learns only from groups where some answers are right and some wrong. Drawn without
    repeats (64 draws with repeats held 7 to 9 copies, which the data check warns about), and none of ``exclude``.
    """
    rng = random.Random(seed)
    left = 9 * 9 * 3 - len(set(exclude))
    if n > left:
        raise ValueError(f"there are {left} different single-digit prompts to draw, not {n}")
    rows: list[dict] = []
    seen = set(exclude)
    while len(rows) < n:  # the draws of the earlier generator, its repeats skipped: the same first prompts
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        op = rng.choice(["plus", "minus", "times"])
        prompt = f"What is {a} {op} {b}? Answer with the number."
        if prompt not in seen:
            seen.add(prompt)
            rows.append({"prompt": prompt, "answer": str({"plus": a + b, "minus": a - b, "times": a * b}[op])})
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return fsutil.write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _show(stage: str, run_dir: Path | None, model_name: str) -> list[str]:
    from alignlab.generate import generate
    from alignlab.models.loading import load_for_inference

    model, tok, _ = load_for_inference(model_name if run_dir is None else None, run_dir)
    answers = generate(model, tok, SHOW_PROMPTS, max_new_tokens=PROGRESS_MAX_NEW_TOKENS)
    console.print(f"[bold]after {stage}[/]")
    for p, a in zip(SHOW_PROMPTS, answers):
        console.print(f"  [dim]{p}[/]\n    {a}")
    return answers


def write_inputs(out: Path, s: StageSettings) -> tuple[Path, Path, Path]:
    """The pipeline's own input files (SFT rows, arithmetic prompts, GRPO reward spec), each written whole: a kill
    mid-write leaves the earlier file, never half of one."""
    out.mkdir(parents=True, exist_ok=True)
    pairs = [json.loads(x) for x in bundled_path("persona-pairs").read_text().splitlines() if x.strip()]
    sft_data = _write_jsonl(out / "data" / "sft.jsonl",
                            [{"prompt": r["prompt"], "completion": r["chosen"]} for r in pairs])
    grpo_data = _write_jsonl(out / "data" / "arithmetic.jsonl", arithmetic_prompts(s.grpo_prompts))
    return sft_data, grpo_data, fsutil.write_text(out / "rewards.yaml", REWARD_SPEC)


def run_pipeline(out: Path, model: str = DEFAULT_MODEL, s: StageSettings | None = None, show: bool = True) -> dict:
    """Run all four stages into ``out``; returns {stage: run_dir} (plus answers per stage when shown). ``out`` is held
    (a lock) while it runs: a second pipeline there rewrote the first's inputs and deleted its finished SFT stage,
    which the first's DPO stage was about to start from."""
    out.mkdir(parents=True, exist_ok=True)
    with fsutil.exclusive(out / ".alignlab-pipeline.lock", "an alignlab pipeline"):
        return _run_stages(out, model, s or StageSettings(), show)


def _run_stages(out: Path, model: str, s: StageSettings, show: bool) -> dict:
    from alignlab.train import engine

    runs = out / "runs"
    sft_data, grpo_data, spec = write_inputs(out, s)
    pair_data = str(bundled_path("persona-pairs"))

    def cfg(steps: int, **extra) -> ProjectConfig:
        return apply_overrides(
            ProjectConfig(),
            {"model": model, "train.max_steps": steps, "train.batch_size": s.batch_size, "train.sample_prompts": 0,
             "train.save_steps": 1000, **extra},
        )

    result: dict = {"answers": {}}
    if show:
        result["answers"]["base"] = _show("nothing (base model)", None, model)
    sft, rm, dpo, grpo = STAGES
    stages = [
        (sft, str(sft_data), cfg(s.sft_steps), None),
        (rm, pair_data, cfg(s.rm_steps), None),
        (dpo, pair_data, cfg(s.dpo_steps, **{"train.learning_rate": 3e-5}), sft),
        (grpo, str(grpo_data), cfg(s.grpo_steps, **{
            "online.rewards": str(spec), "online.num_generations": s.num_generations,
            "online.max_completion_length": s.max_completion_length, "train.batch_size": s.num_generations,
            "train.learning_rate": 5e-5}), dpo),
    ]
    for method, data, c, start_from in stages:
        console.print(f"[bold cyan]pipeline[/] stage {method} on {data}")
        init = str(result[start_from]) if start_from else None
        rundir.refuse_if_live(runs / method)
        shutil.rmtree(runs / method, ignore_errors=True)  # a rerun into the same --out starts each stage afresh
        ctx = engine.prepare(method, c, data, runs, run_dir=runs / method, init_adapter=init)
        ctx.resume_hint = False  # a stage resumed alone leaves the later ones unrun: the CLI says to run it again
        result[method] = engine.run(ctx, data)
        if show and methods.get(method).task == methods.CAUSAL:
            result["answers"][method] = _show(method, result[method], model)
    return result

"""Run a training method end to end: validate, set up the run directory, load, train, save safely.

The recipes (the modules :mod:`alignlab.methods` names, implementing its recipe protocol) only check their
settings and build a TRL trainer (or run their own loop) from a :class:`RunContext`; everything around it
(data checks before any model loads, the run directory, device-aware defaults, resume, the adapter written
atomically and only when finite) lives here once.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab import fsutil, methods
from alignlab.config import ProjectConfig, dump_config
from alignlab.data import bundled_path, resolve_data
from alignlab.data.formats import load_dataset_rows
from alignlab.errors import AlignlabError
from alignlab.progress import console
from alignlab import rundir


@dataclass
class RunContext:
    method: str
    cfg: ProjectConfig
    run_dir: Path
    rows: list[dict]
    tokenizer: Any
    device: str
    model: Any = None
    init_adapter: Path | None = None
    eval_rows: list[dict] = field(default_factory=list)
    callbacks: list = field(default_factory=list)
    extra_callbacks: list = field(default_factory=list)  # added to the run's own (e.g. `alignlab break` instruments)
    sample_prompts: list[str] = field(default_factory=list)
    skip_invalid: bool = False  # invalid rows were dropped (--skip-invalid): a resume drops them again
    resume_hint: bool = True  # False: a workflow (break, pipeline) that says how to go on after Ctrl-C itself

    @property
    def lora(self) -> bool:
        return self.cfg.lora.enabled

    def training_args(self, **extra) -> dict:
        """Keyword arguments shared by every TRL config class, chosen for the device."""
        import torch

        t = self.cfg.train
        from alignlab.models.loading import autocast_bf16

        bf16 = (self.model is not None and next(self.model.parameters()).dtype == torch.bfloat16) or autocast_bf16(
            self.device, t.precision
        )
        gc = t.gradient_checkpointing == "on" or (t.gradient_checkpointing == "auto" and self.cfg.lora.qlora)
        args = dict(
            output_dir=str(self.run_dir / "checkpoints"),
            per_device_train_batch_size=t.batch_size,
            gradient_accumulation_steps=t.grad_accum,
            learning_rate=t.learning_rate,
            num_train_epochs=t.epochs,
            max_steps=t.max_steps,
            lr_scheduler_type=t.lr_scheduler,
            warmup_steps=t.warmup_ratio,
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm,
            seed=t.seed,
            data_seed=t.seed,
            logging_steps=t.logging_steps,
            save_strategy="steps",
            save_steps=t.save_steps,
            save_total_limit=None,
            report_to=list(t.report_to) or "none",
            disable_tqdm=True,
            use_cpu=self.device == "cpu",
            bf16=bf16,
            # fp16 weights on a GPU (T4-class): mixed precision with loss scaling, the LoRA factors in fp32 (PEFT keeps
            # them so); without it fp16 activations' gradients underflow. A full fine-tune in fp16 is not scaled
            fp16=t.precision == "fp16" and self.device.startswith("cuda") and self.lora,
            gradient_checkpointing=gc,
            dataloader_num_workers=0,
            # with --processes: every LoRA factor takes part in every forward, so DDP need not search the graph for
            # unused parameters each step (it warned so, twice per run)
            ddp_find_unused_parameters=False if self.lora else None,
            train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        )
        args.update(extra)
        args.update(t.trainer_overrides)
        return args

    def peft_config(self, task_type: str = "CAUSAL_LM"):
        """A fresh LoRA config, or None (full fine-tuning, or an adapter loaded to continue from)."""
        if not self.lora or self.init_adapter is not None:
            return None
        from peft import LoraConfig

        lc = self.cfg.lora
        targets = lc.target_modules
        if self.model is not None:
            targets = lora_targets(targets, linear_names(self.model), methods.get(self.method))
        return LoraConfig(
            r=lc.r,
            lora_alpha=lc.alpha,
            lora_dropout=lc.dropout,
            target_modules=targets,
            task_type=task_type,
        )


HEADS = ("lm_head", "score")  # not offered as LoRA targets: a reward model's score head trains whole (rm.py)


def linear_names(model) -> list[str]:
    """The last names of a model's linear layers: what lora.target_modules may name."""
    import torch

    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def lora_targets(targets, linear: list[str] | None, spec):
    """lora.target_modules checked against the model's linear layers (``linear``; None: not known): the default Llama
    names on a model that names its projections otherwise become all-linear. The TRL trainers read the LM head's
    weight directly for their log-probs and refuse an adapter on it (a ValueError once the model had loaded); PPO's
    own loop runs the head as a module, so it may adapt it."""
    from alignlab.config import LLAMA_PROJECTIONS

    if not isinstance(targets, list):
        return targets
    if "lm_head" in targets and not spec.own_loop:
        raise AlignlabError(f"lora.target_modules: {spec.name} cannot adapt lm_head (TRL reads the LM head's weight "
                            "directly for the log-probs, so an adapter there would never train)",
                            fix="drop lm_head from lora.target_modules")
    missing = [m for m in targets if linear is not None and m not in linear]
    if missing and tuple(targets) == LLAMA_PROJECTIONS:  # the default, on a model that names them otherwise
        return "all-linear"
    if missing:
        shown = [n for n in linear if n not in HEADS]
        raise AlignlabError(f"lora.target_modules: no linear layer named {', '.join(missing)} in this model",
                            fix=f"use some of {', '.join(shown)}, or all-linear")
    return targets


def _named_targets(cfg: ProjectConfig) -> bool:
    """lora.target_modules is a list other than the default (which falls back to all-linear, so cannot fail)."""
    from alignlab.config import LLAMA_PROJECTIONS

    targets = cfg.lora.target_modules
    return isinstance(targets, list) and tuple(targets) != LLAMA_PROJECTIONS


def _meta_linear_names(cfg: ProjectConfig, task: str) -> list[str] | None:
    """The base's linear layers from its config.json alone (built on the meta device: no weights read), so a bad
    lora.target_modules is refused before the run directory exists; None when the model cannot be built so."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from alignlab.models.registry import resolve_model

    try:
        path = resolve_model(cfg.model)
        conf = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        auto = AutoModelForSequenceClassification if task == methods.SEQ_CLS else AutoModelForCausalLM
        with torch.device("meta"):
            model = auto.from_config(conf, trust_remote_code=cfg.trust_remote_code)
    except Exception:  # noqa: BLE001 - an exotic model: the check runs on the loaded model instead
        return None
    return linear_names(model)


def data_kind(method: str) -> str:
    return methods.get(method).kind


def _heldout_prompts(k: int) -> list[str]:
    import json

    lines = bundled_path("prompts-heldout").read_text().splitlines() if k else []
    return [json.loads(line)["prompt"] for line in lines[:k] if line.strip()]


# DPOConfig's loss options: the DPO family's loss is computed by PreferenceTrainer, which reads none of them
OWN_LOSS_KEYS = frozenset({"loss_type", "loss_weights", "label_smoothing", "ld_alpha", "use_weighting",
                           "f_divergence_type", "f_alpha_divergence_coef", "rpo_alpha", "beta", "sft_weight",
                           "simpo_gamma", "cpo_alpha", "discopop_tau"})
# DPOConfig's batching options: PreferenceTrainer's collator (PrefixCollator) reads none of them; it keeps each pair's
# start (the prompt whole, completions cut at train.max_length) and pads to the batch's longest
OWN_COLLATOR_KEYS = frozenset({"truncation_mode", "padding_free", "pad_to_multiple_of"})


# TRL / transformers arguments alignlab sets from its own config (the key to set instead): as an override one would
# win silently while the run's config.yaml and model card showed alignlab's value
OWNED_ARGS = {
    "learning_rate": "train.learning_rate (--lr)", "num_train_epochs": "train.epochs (--epochs)",
    "max_steps": "train.max_steps (--max-steps)", "per_device_train_batch_size": "train.batch_size (--batch-size)",
    "gradient_accumulation_steps": "train.grad_accum (--grad-accum)", "seed": "train.seed (--seed)",
    "data_seed": "train.seed (--seed)", "lr_scheduler_type": "train.lr_scheduler", "warmup_steps": "train.warmup_ratio",
    "warmup_ratio": "train.warmup_ratio", "weight_decay": "train.weight_decay", "max_grad_norm": "train.max_grad_norm",
    "logging_steps": "train.logging_steps", "save_steps": "train.save_steps", "bf16": "train.precision",
    "fp16": "train.precision", "report_to": "train.report_to (--report-to)", "output_dir": "the run directory (--name)",
    "use_cpu": "train.device (--device)", "gradient_checkpointing": "train.gradient_checkpointing",
    "max_length": "train.max_length (--max-length)", "beta": "the method's beta (--beta)",
    "num_generations": "online.num_generations", "max_completion_length": "online.max_completion_length",
    "temperature": "online.temperature", "top_p": "online.top_p", "desirable_weight": "kto.desirable_weight",
    "undesirable_weight": "kto.undesirable_weight", "train_sampling_strategy": "train.group_by_length",
    "completion_only_loss": "sft.completion_only", "eval_steps": "train.save_steps",
    "use_vllm": "online.use_vllm",
}
# arguments alignlab sets for its own machinery, with no key of its own: not overridable at all
FIXED_ARGS = {"assistant_only_loss", "remove_unused_columns", "disable_dropout", "eval_strategy", "eval_on_start",
              "dataloader_num_workers", "ddp_find_unused_parameters", "save_strategy", "save_total_limit", "disable_tqdm"}


def _start_adapter(init_adapter: str, cfg: ProjectConfig, runs_dir: Path, spec) -> Path:
    """The adapter (or a full fine-tune's weights) a run continued with --from starts from: a run of the same base and
    task, with weights. A reward model continued as a chat model (or the other way) finished 'done' with a score
    head saved as a chat adapter, or failed after loading."""
    src = rundir.check_run_dir(init_adapter, runs_dir=runs_dir)
    base = rundir.run_base(src)
    if not _same_model(base, cfg.model, src):
        raise AlignlabError(f"run {src} was trained on '{base}', not '{cfg.model}'", fix=f"use --model {base} or a matching run")
    rundir.Run(src).require_weights()  # an interrupted run that never saved an adapter is no start
    other = rundir.read_run(src).get("method")
    if other in methods.NAMES and methods.get(other).task != spec.task:
        what = {methods.CAUSAL: "a chat model", methods.SEQ_CLS: "a reward model"}
        raise AlignlabError(f"run {src} is {what[methods.get(other).task]} ({other}); {spec.name} trains "
                            f"{what[spec.task]}", fix=f"continue from a run that trains {what[spec.task]}, or start "
                                                      "from the base (drop --from)")
    return src / "adapter"


def _start_lora(adapter: Path) -> dict | None:
    """The LoRA settings the start adapter was trained with (its adapter_config.json, which PEFT goes on with);
    None for a full fine-tune's whole weights."""
    import json

    file = adapter / "adapter_config.json"
    if not file.is_file():
        return None
    try:
        conf = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise AlignlabError(f"{file} cannot be read: {str(err).splitlines()[0]}",
                            fix="restore it, or continue from another run") from err
    own = {"enabled": True, "r": conf.get("r"), "alpha": conf.get("lora_alpha"), "dropout": conf.get("lora_dropout")}
    targets = conf.get("target_modules")
    if isinstance(targets, list):  # by last names, as lora.target_modules names them: PEFT saves all-linear's dotted
        own["target_modules"] = sorted({t.rsplit(".", 1)[-1] for t in targets})
    elif targets == "all-linear":
        own["target_modules"] = targets
    return {k: v for k, v in own.items() if v is not None}


def _adopt_start(cfg: ProjectConfig, adapter: Path, spec, flags: dict[str, str]) -> ProjectConfig:
    """A run continued with --from trains what it starts from: the start's LoRA adapter with its own rank, alpha,
    dropout and targets (PEFT loads them from adapter_config.json; the project's were ignored while config.yaml and
    the model card showed them), or a full fine-tune's whole weights. ``flags``: config key -> the flag that set it;
    a flag that asks for something else is refused."""
    own = _start_lora(adapter)
    want = own if own is not None else {"enabled": False, "qlora": False}
    src = adapter.parent
    if own is None and (flag := next((f for k, f in flags.items() if k != "lora.enabled"), None)):
        raise AlignlabError(f"{flag} sets up a LoRA adapter, but run {src} is a full fine-tune, which a run continued "
                            "from it trains whole", fix=f"drop {flag}; for a LoRA adapter on its weights pass --model "
                                                        f"{adapter} instead of --from")
    for key, value in want.items():
        flag = flags.get(f"lora.{key}")
        if flag is not None and not _same_setting(key, getattr(cfg.lora, key), value, cfg, spec):
            on_full = "" if own else f"; for a LoRA adapter on its weights pass --model {adapter} instead of --from"
            raise AlignlabError(f"{flag} asks for {_lora_shown(key, getattr(cfg.lora, key))}, but run {src} trained "
                                f"{_lora_shown(key, value)}, which a run continued from it keeps",
                                fix=f"drop {flag}, or start from the base{on_full}")
    if own is None and spec.own_loop:  # PPO: its reference is the adapter switched off (train/ppo.py)
        raise AlignlabError(f"{spec.name.upper()} trains a LoRA adapter, and run {src} is a full fine-tune",
                            fix=f"pass --model {adapter} instead of --from: a LoRA adapter on its weights")
    if own is None and getattr(getattr(cfg, spec.section), "reference", None) == "base":
        raise AlignlabError(f"{spec.section}.reference is base, but run {src} is a full fine-tune: no bare base is "
                            "kept beside its weights", fix=f"set {spec.section}.reference to auto (the start is the "
                                                           "reference), or pass --model to start from the base")
    return cfg.model_copy(update={"lora": cfg.lora.model_copy(update=want)})


def _lora_shown(key: str, value) -> str:
    if key == "enabled":
        return "a LoRA adapter" if value else "a full fine-tune"
    return f"lora.{key} {value}"


def _same_setting(key: str, mine, theirs, cfg: ProjectConfig, spec) -> bool:
    """One lora.* setting asked for beside --from is the start adapter's; target modules are compared by the layers'
    last names (as lora.target_modules names them), all-linear as every linear layer but the heads."""
    if mine == theirs or key != "target_modules":
        return mine == theirs
    short = [{t.rsplit(".", 1)[-1] for t in x} if isinstance(x, list) else x for x in (mine, theirs)]
    if all(isinstance(x, set) for x in short):
        return short[0] == short[1]
    linear = _meta_linear_names(cfg, spec.task)
    named = next((x for x in short if isinstance(x, set)), None)
    return linear is not None and named == set(linear) - set(HEADS)


def _local_model(cfg: ProjectConfig) -> ProjectConfig:
    """A model given as a local path, made absolute and plain as data paths are: run.json and config.yaml recorded
    `--model ../tiny` as typed (a resume from elsewhere looked it up as a hub id) and `/x/tiny/` with its slash
    (`--from` a run of `/x/tiny` then called it another base)."""
    from alignlab.models.registry import REGISTRY

    name = cfg.model
    if name in REGISTRY or name.startswith("ollama:") or not Path(name).expanduser().exists():
        return cfg
    local = str(Path(name).expanduser().resolve())
    return cfg if local == name else cfg.model_copy(update={"model": local})


def _same_model(recorded: str, model: str, run: Path) -> bool:
    """A run's recorded base is this model (rundir.same_base: a relative path an older version recorded is found
    from here or under the run's project, as alignlab.yaml's relative model paths were written)."""
    return rundir.same_base(recorded, model, run)


def _check_trainer_overrides(cfg: ProjectConfig, method: str, spec, device: str, resumed: bool = False) -> None:
    """train.trainer_overrides pass through to TRL's arguments: refused, before anything loads, when a key is not an
    argument of the method's TRL class (it failed with a TypeError after the model had loaded, leaving a failed run),
    when alignlab sets that argument itself, or when TRL refuses its value; a method with its own loop (PPO) says it
    ignores them. A resumed run goes on with the config it started with."""
    import dataclasses
    import difflib

    keys = sorted(cfg.train.trainer_overrides)
    if not keys or resumed:
        return
    cls = spec.load_recipe().args_class(method)
    if cls is None:
        from alignlab.progress import console

        console.print(f"[yellow]note: {method} runs its own loop and ignores train.trainer_overrides ({', '.join(keys)})[/]")
        return
    if owned := [k for k in keys if k in OWNED_ARGS or k in FIXED_ARGS]:
        instead = f"set {OWNED_ARGS[owned[0]]} instead" if owned[0] in OWNED_ARGS else "drop it"
        raise AlignlabError(f"train.trainer_overrides.{owned[0]} would replace what alignlab sets itself (two values "
                            "for one setting, and the override would win)", fix=instead)
    if cfg.train.trainer_overrides.get("save_only_model"):
        raise AlignlabError("train.trainer_overrides.save_only_model leaves the optimizer, scheduler and RNG states out "
                            "of each checkpoint: --resume would restart them (AdamW's moments at zero, the schedule "
                            "from its start)", fix="drop it (--set train.trainer_overrides.save_only_model=null)")
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := [k for k in keys if k not in known]:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        raise AlignlabError(f"train.trainer_overrides.{unknown[0]} is not an argument of TRL's {cls.__name__}"
                            + (f" (did you mean {close[0]}?)" if close else ""),
                            fix=f"see the arguments of trl.{cls.__name__}")
    _check_override_values(cfg, method, cls, device)


def _check_override_values(cfg: ProjectConfig, method: str, cls, device: str) -> None:
    """TRL checks the values when its arguments are built, after the model has loaded: an `optim` typo failed the run
    there. The class is built here as the run builds it (batch and group sizes too: GRPO checks overrides against
    them), with and without the overrides; only what the overrides add is refused."""
    import dataclasses
    import tempfile
    import warnings

    overrides = cfg.train.trainer_overrides
    bare = cfg.model_copy(update={"train": cfg.train.model_copy(update={"trainer_overrides": {}, "report_to": []})})
    ctx = RunContext(method=method, cfg=bare, run_dir=Path(tempfile.gettempdir()), rows=[], tokenizer=None,
                     device=device)
    o, fields = cfg.online, {f.name for f in dataclasses.fields(cls)}
    group = dict(per_device_train_batch_size=cfg.train.batch_size * o.num_generations, num_generations=o.num_generations,
                 max_completion_length=o.max_completion_length) if "num_generations" in fields else {}
    # a reward model evaluates its held-out pairs as it saves (train/rm.py), which decides what TRL lets pass
    evals = dict(eval_strategy="steps", eval_steps=cfg.train.save_steps, eval_on_start=True) if (
        methods.get(method).task == methods.SEQ_CLS) else {}
    plain = {k: v for k, v in ctx.training_args(**group, **evals).items() if k in fields}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library's deprecation notes, which the run prints once anyway
        try:
            cls(**plain)
        except Exception:  # noqa: BLE001 - this machine's setup, not the overrides: the run itself will say
            return
        failed = None
        for key in [*sorted(overrides), None]:  # one at a time, to name the one refused; then all together
            try:
                cls(**plain, **({key: overrides[key]} if key is not None else overrides))
            except Exception as err:  # noqa: BLE001 - TRL and transformers raise ValueError, TypeError, KeyError ...
                failed = err
                break
        if failed is None:
            return
    first = " ".join(str(failed).split()) or type(failed).__name__  # TRL's reasons run over lines ("... but found")
    first = first if len(first) <= 300 else first[:300].rsplit(" ", 1)[0] + " …"
    which = f"train.trainer_overrides.{key}" if key is not None else "train.trainer_overrides together"
    raise AlignlabError(f"{which}: TRL's {cls.__name__} refuses it: {first}",
                        fix="correct or drop the override (--set train.trainer_overrides.KEY=null)") from failed


def _refuse_loss_overrides(cfg: ProjectConfig, method: str, spec) -> None:
    """PreferenceTrainer computes the DPO family's losses and batches its pairs itself (train/preference.py): TRL's loss
    and batching options do nothing."""
    ignored = sorted(set(cfg.train.trainer_overrides) & OWN_LOSS_KEYS) if spec.kind == "preference" else []
    if ignored:
        raise AlignlabError(f"train.trainer_overrides.{ignored[0]} has no effect on {method}: alignlab computes its loss "
                            "itself (README: Losses, written from the math)",
                            fix=f"set the method's own section ({spec.section}.beta, and dpo.rpo_alpha for the NLL term)"
                                " or drop the override")
    if spec.policy_on_pairs and (batching := sorted(set(cfg.train.trainer_overrides) & OWN_COLLATOR_KEYS)):
        raise AlignlabError(f"train.trainer_overrides.{batching[0]} has no effect on {method}: alignlab batches the "
                            "pairs itself, keeping each prompt whole and cutting completions at train.max_length",
                            fix="drop the override (train.max_length, --max-length, sets where completions are cut)")


# a scheduler's own arguments (train.trainer_overrides.lr_scheduler_kwargs) without which transformers refuses it
SCHEDULER_KWARGS = {"cosine_with_min_lr": "{min_lr_rate: 0.1}", "cosine_warmup_with_min_lr": "{min_lr_rate: 0.1}",
                    "warmup_stable_decay": "{num_decay_steps: 10}"}
# schedulers that step on the evaluation loss: TrainingArguments refuses them without an eval strategy
ON_EVAL = ("reduce_lr_on_plateau", "greedy")


def _check_scheduler(cfg: ProjectConfig, spec, rows: list) -> None:
    """train.lr_scheduler built as the run will build it (on a one-parameter optimizer at the run's learning rate,
    with its lr_scheduler_kwargs): a name the config accepts still failed after the model had loaded, leaving a failed
    run (cosine_with_min_lr without min_lr, warmup_stable_decay without num_decay_steps, reduce_lr_on_plateau without
    evaluation). The run's rate, not a stand-in: polynomial checks lr_end against it. Only a reward model with held-out
    pairs evaluates (rm.py)."""
    import torch
    from transformers import get_scheduler

    name = cfg.train.lr_scheduler
    evaluates = spec.task == methods.SEQ_CLS and cfg.rm.eval_fraction > 0 and len(rows) > 1
    if name in ON_EVAL and not evaluates:
        raise AlignlabError(f"train.lr_scheduler {name} steps on the evaluation loss, and {spec.name} does not "
                            "evaluate while it trains", fix="use another scheduler (constant, linear, cosine, ...)")
    kwargs = {} if spec.own_loop else cfg.train.trainer_overrides.get("lr_scheduler_kwargs") or {}
    if not isinstance(kwargs, dict):
        return  # TRL's own check of the overrides names it
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.learning_rate or 1e-3)
    try:
        get_scheduler(name, optimizer, num_warmup_steps=int(cfg.train.warmup_ratio * 10), num_training_steps=10,
                      scheduler_specific_kwargs=kwargs)
    except Exception as err:  # noqa: BLE001 - ValueError, TypeError: each scheduler says it its own way
        reason = " ".join(str(err).split()) or type(err).__name__
        if spec.own_loop:  # PPO builds its scheduler without train.trainer_overrides
            fix = f"use another scheduler: {spec.name.upper()} runs its own loop, which passes it no arguments"
        else:
            example = SCHEDULER_KWARGS.get(name, "{...}")
            fix = f"set its arguments: --set 'train.trainer_overrides.lr_scheduler_kwargs={example}'"
        raise AlignlabError(f"train.lr_scheduler {name} cannot be built: {reason}", fix=fix) from err


def data_digest(path: str | Path) -> str:
    """sha256 of a data file: run.json records it, so a resume trains on the rows the run started with."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_resumed_data(run_dir: Path, path: Path) -> None:
    """A resumed run's data file is the one it started with: replaced, the resume trained on other rows without a
    word. A run recorded before run.json kept the digest is not checked."""
    if not (run_dir / "run.json").is_file():
        return
    info = rundir.read_run(run_dir)
    recorded = info.get("data_sha256")
    if recorded and Path(path).is_file() and data_digest(path) != recorded:
        raise AlignlabError(f"{path} changed since run {run_dir} started ({info.get('rows', '?')} rows then): a resume "
                            "would train its remaining steps on other rows",
                            fix="restore the file the run started with, or start a new run on this one")


def prepare(
    method: str,
    cfg: ProjectConfig,
    data: str,
    runs_dir: Path,
    run_dir: Path | None = None,
    skip_invalid: bool = False,
    init_adapter: str | None = None,
    name: str | None = None,
    resumed: bool = False,
    lora_flags: dict[str, str] | None = None,
) -> RunContext:
    """Everything that can fail cheaply, before a model loads: method, data, device, adapter to continue.
    ``lora_flags``: the lora.* keys the command line set (key -> flag), refused beside --from when they differ
    from what the run continued from trained."""
    from alignlab.models.loading import load_tokenizer, pick_device

    spec = methods.get(method)
    kind = spec.kind
    cfg = _local_model(cfg)
    if cfg.train.learning_rate is None:  # the method's own default, written into the run's config.yaml
        cfg = cfg.model_copy(deep=True)
        cfg.train.learning_rate = spec.learning_rate
    device = pick_device(cfg.train.device)
    adapter = _start_adapter(init_adapter, cfg, runs_dir, spec) if init_adapter else None
    if adapter is not None:  # before the checks that read lora: it is what the start trained
        cfg = _adopt_start(cfg, adapter, spec, lora_flags or {})
    _check_weights_setup(cfg, spec, device)
    path = resolve_data(data)
    if resumed and run_dir is not None:
        _check_resumed_data(run_dir, Path(path))
    # everything that needs no tokenizer first: a bad row, run or reward spec is reported before the base model
    # is converted (the first time, tens of seconds) or loaded
    rows = load_dataset_rows(path, kind, skip_invalid=skip_invalid)
    _check_scheduler(cfg, spec, rows)
    check_trackers(cfg.train.report_to)
    _refuse_loss_overrides(cfg, method, spec)
    _check_trainer_overrides(cfg, method, spec, device, resumed=resumed)  # `--resume`: the run's recorded config
    if spec.own_loop and cfg.train.report_to:
        raise AlignlabError(f"{method.upper()} runs its own loop, which reports to no tracker",
                            fix=f"drop --report-to; {method} writes every step to the run's metrics.jsonl")
    # recipe-specific checks (reward specs, vLLM); they read the rows and config, never the tokenizer
    spec.load_recipe().check(RunContext(method=method, cfg=cfg, run_dir=Path("."), rows=rows, tokenizer=None, device=device))
    tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, check_architecture=True)
    if not getattr(tokenizer, "chat_template", None):  # every method trains on chats; TRL would fail after loading
        raise AlignlabError(
            f"model '{cfg.model}' has no chat template (a base model rather than an instruct one?): alignlab trains "
            "on chats", fix="use the instruct version (…-Instruct, …-it), or add a chat_template to its "
            "tokenizer_config.json")
    _check_system_prompt(tokenizer, cfg.system_prompt)
    if cfg.lora.enabled and adapter is None and _named_targets(cfg):
        lora_targets(cfg.lora.target_modules, _meta_linear_names(cfg, spec.task), spec)  # and on the loaded model
    rows = load_dataset_rows(
        path,
        kind,
        tokenizer=tokenizer,
        max_length=cfg.train.max_length,
        max_prompt_length=cfg.train.max_prompt_length,
        system_prompt=cfg.system_prompt if spec.online else None,  # the online methods sample under it
        skip_invalid=skip_invalid,
        echo=lambda m: console.print(f"[yellow]{m}[/]"),
    )
    if run_dir is None:  # made only once everything above passed: a refused run leaves no directory behind
        run_dir = rundir.new_run_dir(runs_dir, method, name)
    ctx = RunContext(
        method=method,
        cfg=cfg,
        run_dir=run_dir,
        rows=rows,
        tokenizer=tokenizer,
        device=device,
        init_adapter=adapter,
        sample_prompts=_heldout_prompts(cfg.train.sample_prompts),
        skip_invalid=skip_invalid,
    )
    return ctx


def _check_weights_setup(cfg: ProjectConfig, spec, device: str) -> None:
    """How the weights train, checked before any model loads."""
    if cfg.train.precision == "fp16" and not cfg.lora.enabled:  # pure fp16 weights and AdamW state, no loss scale
        raise AlignlabError("a full fine-tune in fp16 is not loss-scaled and diverges (loss 8.3 -> 12.2 in 3 steps on a "
                            "small model)", fix="use --precision bf16 or fp32 for --full, or train a LoRA adapter in fp16")
    if cfg.lora.qlora and spec.task == methods.SEQ_CLS:  # load_sequence_classifier has no 4-bit path
        raise AlignlabError("a reward model trains on a bf16/fp32 base: QLoRA is not supported for it",
                            fix="drop --qlora (LoRA still adapts the base)")
    if cfg.lora.qlora and not device.startswith("cuda"):
        raise AlignlabError("QLoRA (4-bit base) needs a CUDA GPU; this machine has none", fix="drop --qlora")


TRACKERS = {  # --report-to name: (module that must import, pip package)
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
    "mlflow": ("mlflow", "mlflow"),
}


def _check_system_prompt(tokenizer, system_prompt: str | None) -> None:
    """A chat template that refuses a system turn (Gemma's) fails on the project's system_prompt now, not after the
    model has loaded."""
    if not system_prompt:
        return
    from jinja2 import TemplateError

    from alignlab.generate import chat_prompt

    try:
        chat_prompt("hi", tokenizer, system_prompt)
    except TemplateError as err:
        raise AlignlabError(f"the model's chat template refuses the project's system_prompt: {err}",
                            where="alignlab.yaml: system_prompt",
                            fix="remove system_prompt (or put its text in each prompt) for this model") from err


def check_trackers(names: list[str]) -> None:
    """Every tracker named is known and installed, checked before the run directory says 'running'."""
    import importlib.util

    for name in names:
        if name not in TRACKERS:
            raise AlignlabError(f"unknown tracker '{name}' in --report-to", fix=f"use one of: {', '.join(TRACKERS)}")
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise AlignlabError(f"--report-to {name} needs the '{package}' package, which is not installed",
                                fix=f"pip install {package} (into this environment), or drop --report-to {name}")


def _load_model(ctx: RunContext, task: str = methods.CAUSAL):
    """The base, with the adapter a run continues from; a run continued from a full fine-tune loads its whole weights
    instead (its adapter/ is a model directory), and TRL's reference copy is then that model, the start."""
    from alignlab.models.loading import load_base

    cfg = ctx.cfg
    whole = ctx.init_adapter is not None and not (ctx.init_adapter / "adapter_config.json").is_file()
    weights = str(ctx.init_adapter) if whole else cfg.model
    if task == methods.SEQ_CLS:
        from alignlab.models.loading import load_sequence_classifier

        model = load_sequence_classifier(weights, device=ctx.device, precision=cfg.train.precision,
                                         trust_remote_code=cfg.trust_remote_code)
    else:
        model = load_base(
            weights,
            device=ctx.device,
            precision=cfg.train.precision,
            load_in_4bit=cfg.lora.qlora,
            trust_remote_code=cfg.trust_remote_code,
        )
    if ctx.init_adapter is not None and not whole:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(ctx.init_adapter), is_trainable=True)
    return model


def quiet_libraries() -> None:
    """Silence per-step library chatter (dataset map bars, deprecation notes); our own bar shows progress."""
    import warnings

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """How many processes train this run (torchrun and accelerate set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _whole(path: str) -> str:
    """A file as run.json and the run's config.yaml record it: resolved when it is there (a resume from another
    directory finds it), else as given (``bundled:`` names)."""
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _digest_of(data: str) -> str | None:
    try:
        return data_digest(resolve_data(data))
    except (AlignlabError, OSError):
        return None


def _project_of(run_dir: Path) -> str | None:
    from alignlab.config import find_project

    root = find_project(run_dir)
    return str(root) if root is not None else None


def run(ctx: RunContext, data: str, resume: bool = False) -> Path:
    """Train ``ctx.method`` into ``ctx.run_dir``; returns the run directory."""
    import torch

    quiet_libraries()
    cfg, run_dir = ctx.cfg, ctx.run_dir
    run = rundir.Run(run_dir)
    main = is_main_process()
    spec = methods.get(ctx.method)
    # chosen before the run reads 'running': a damaged checkpoint with none before it is refused, the run left as it was
    last = last_checkpoint(run.checkpoints_dir, echo=main) if resume and not spec.own_loop else None
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        if cfg.online.rewards:
            cfg = ctx.cfg = cfg.model_copy(update={"online": cfg.online.model_copy(
                update={"rewards": _whole(cfg.online.rewards)})})
        fsutil.write_text(run.config_path, dump_config(cfg))
        run.write_env(ctx.device, cfg.train.seed, resumed=resume)  # a resume keeps the start's, adding its own
        run.update(
            method=ctx.method,
            model=cfg.model,
            data=_whole(data),
            data_sha256=_digest_of(data),  # a resume refuses another file's rows (prepare)
            skip_invalid=ctx.skip_invalid,
            rows=len(ctx.rows),
            status="running",
            pid=os.getpid(),
            host=socket.gethostname(),
            init_adapter=str(ctx.init_adapter.parent.resolve()) if ctx.init_adapter else None,
            project=_project_of(run_dir),  # finds the recorded paths again if the project is moved
            lora=cfg.lora.enabled,
            decoding=_decoding(ctx),
            processes=world_size(),  # a resume relaunches as many: another count trains other steps
            **({"launch": os.environ["ALIGNLAB_LAUNCH"]} if "ALIGNLAB_LAUNCH" in os.environ else {}),
        )
    torch.manual_seed(cfg.train.seed)
    recipe = spec.load_recipe()
    if "tensorboard" in cfg.train.report_to:  # transformers' TensorBoard callback writes where this says
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    with _failure_marked(run, main, ctx.resume_hint):
        return _train(ctx, spec, recipe, data, resume, main, last)


def _decoding(ctx) -> dict | None:
    """What the run records for eval, chat and serve to decode it with: alone (no base opening, no amplify) when it
    trains on rows `alignlab distil` wrote, which teach it the base's opening, or continues from a run that does."""
    from alignlab.data.formats import DISTIL_SOURCE

    if ctx.rows and all(isinstance(r, dict) and r.get("source") == DISTIL_SOURCE for r in ctx.rows):
        return {"base_opening": None, "amplify": 0.0}
    if ctx.init_adapter is not None:
        return rundir.run_decoding(ctx.init_adapter.parent) or None
    return None


@contextmanager
def _failure_marked(run: rundir.Run, main: bool, resume_hint: bool = True):
    """A run that stops on an error, Ctrl-C or SIGTERM (kill, timeout, a scheduler's preemption) says so in run.json
    instead of staying 'running', and an interrupted one says how to go on (unless its workflow says it instead)."""
    from alignlab.progress import sigterm_as_ctrl_c

    try:
        with sigterm_as_ctrl_c():
            yield
    except KeyboardInterrupt:
        if main:
            run.update(status="interrupted")
            method = run.info.get("method", "METHOD")
            if resume_hint:
                console.print(f"[yellow]interrupted[/]: continue with `alignlab train {method} --resume {run.path}`"
                              + (f" (it runs {world_size()} processes again)" if world_size() > 1 else ""))
        else:  # the main process speaks for the run: no bare "interrupted" from each of the others
            console.said_interrupted = True
        raise
    except BaseException:
        if main and run.info.get("status") == "running":
            run.update(status="failed")
        raise


def _train(ctx: RunContext, spec, recipe, data: str, resume: bool, main: bool, last: str | None) -> Path:
    """The body of :func:`run` once the run directory says 'running'; ``last``: the checkpoint a resume goes on from."""
    from transformers.trainer_callback import PrinterCallback

    from alignlab.train.callbacks import MetricsCallback, RichProgressCallback, SamplesCallback

    cfg, run_dir = ctx.cfg, ctx.run_dir
    run = rundir.Run(run_dir)
    ctx.model = _load_model(ctx, task=spec.task)
    ctx.callbacks = [
        MetricsCallback(run_dir, watch_chosen=spec.policy_on_pairs, beta=spec.beta_value(cfg), per_token=spec.reference_free),
        RichProgressCallback(f"{ctx.method}"),
    ]
    from alignlab.plan.record import PlanRecorder  # the plan before training, the measurement after: run.json "plan"

    ctx.callbacks.insert(0, PlanRecorder(ctx))
    if spec.task == methods.CAUSAL and cfg.train.sample_prompts:
        ctx.callbacks.append(
            SamplesCallback(run_dir, ctx.sample_prompts, cfg.train.sample_steps, ctx.tokenizer)
        )
    ctx.callbacks += ctx.extra_callbacks
    if spec.own_loop:  # methods with our own loop (PPO): same run-directory contract
        model, steps, final = recipe.train_loop(ctx, resume=resume)  # type: ignore[union-attr]
        if main:
            run.save_adapter(model, ctx.tokenizer)
            run.update(status="done", steps=steps, final=final)
        return run_dir
    trainer = recipe.build_trainer(ctx)  # type: ignore[union-attr]
    trainer.remove_callback(PrinterCallback)  # our progress bar and metrics.jsonl replace its stdout dicts
    if resume:
        _resume_at(trainer, run_dir, last, main)
    if last is not None and _finished_at(last):
        _restore_finished(trainer, last)  # killed after its last checkpoint: nothing left to train
    else:
        trainer.train(resume_from_checkpoint=last)
    if world_size() > 1:
        _record_rank_digest(trainer.model, run_dir)
    state_dict = gathered_state_dict(trainer)  # every process takes part; None when nothing is sharded
    if main:
        run.save_adapter(trainer.accelerator.unwrap_model(trainer.model), ctx.tokenizer, state_dict=state_dict)
        final = {k: v for k, v in trainer.state.log_history[-1].items()} if trainer.state.log_history else {}
        last_log = next((h for h in reversed(trainer.state.log_history) if "loss" in h), {})
        run.update(
            status="done",
            steps=trainer.state.global_step,
            final={k: v for k, v in last_log.items() if isinstance(v, (int, float))},
            train_runtime=final.get("train_runtime"),
        )
    return run_dir


def _resume_at(trainer, run_dir: Path, last: str | None, main: bool) -> None:
    """Before a resumed run trains on from ``last`` (None: from the beginning): its logs cut back to that step, and
    what the trainer does only at a run's start switched off."""
    from alignlab.train.callbacks import sharded

    if last is not None and getattr(trainer.args, "eval_on_start", False):
        trainer.args.eval_on_start = False  # evaluated when the run started: logged again at the checkpoint's step
    if last is not None and not sharded(trainer.accelerator) and not any(
            (Path(last) / f).is_file() for f in ("optimizer.pt", "optimizer.bin")):
        console.print(f"[yellow]note: {Path(last).name} holds no optimizer state (save_only_model?): AdamW and the "
                      "schedule start afresh from it[/]")
    if last is None:
        console.print("[yellow]no checkpoint to resume from; starting from the beginning[/]")
        if main:  # the killed attempt's records go: the run logs every step again
            rundir.resume_logs(run_dir, -1, "none")
    elif main:
        rundir.resume_logs(run_dir, int(Path(last).name.split("-")[-1]), Path(last).name)


def last_checkpoint(root: Path, echo: bool = True) -> str | None:
    """The newest checkpoint a resume can load. A damaged one (trainer_state.json cut short, its weights gone) failed
    the run with a raw JSONDecodeError or ValueError after the model had loaded; the one before it is used, with a
    note."""
    def step(p: Path) -> int:
        return int(p.name.split("-")[-1])

    found = sorted((p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                   key=step, reverse=True) if root.is_dir() else []
    damaged = []
    for ckpt in found:
        why = _damaged(ckpt)
        if why is None:
            if damaged and echo:
                console.print(f"[yellow]note: {damaged[0]}; resuming from {ckpt.name} (step {step(ckpt)}) instead[/]")
            return str(ckpt)
        damaged.append(why)
    if damaged:
        raise AlignlabError(f"{damaged[0]}, and no other checkpoint can be resumed from",
                            fix=f"remove {root} to train the run again from the beginning, or start a new run")
    return None


CHECKPOINT_WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json",
                      "adapter_model.bin", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _sharded_weights(checkpoint: Path) -> bool:
    """The weights of a run whose state dict stays sharded, where save_model writes no weights file: FSDP's
    pytorch_model_fsdp_0/ (SHARDED_STATE_DICT; torch.distributed.checkpoint writes its .metadata last) or its
    per-rank pytorch_model_fsdp*.bin, DeepSpeed's global_stepN/ (*model_states.pt); a resume loads them through
    accelerate."""
    return (any((d / ".metadata").is_file() for d in checkpoint.glob("pytorch_model_fsdp_*") if d.is_dir())
            or any(f.is_file() for f in checkpoint.glob("pytorch_model_fsdp*.bin"))
            or any(any(d.glob("*model_states.pt")) for d in checkpoint.glob("global_step*") if d.is_dir()))


def _damaged(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (None: it can)."""
    from safetensors import safe_open
    from transformers import TrainerState

    state = checkpoint / "trainer_state.json"
    try:
        TrainerState.load_from_json(str(state))
    except (OSError, ValueError, TypeError) as err:
        return f"{state} cannot be read ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    weights = next((checkpoint / w for w in CHECKPOINT_WEIGHTS if (checkpoint / w).is_file()), None)
    if weights is None and _sharded_weights(checkpoint):
        return None
    if weights is None:
        return f"{checkpoint} holds no weights (no {' or '.join(CHECKPOINT_WEIGHTS[:2])})"
    if weights.suffix == ".safetensors":
        try:
            with safe_open(str(weights), "pt"):
                pass
        except Exception as err:  # noqa: BLE001 - safetensors' own error types, a cut file among them
            return f"{weights} cannot be read ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return None


def _finished_at(checkpoint: str) -> bool:
    """True when ``checkpoint`` was written at the run's last step. transformers' resume would train one step
    past ``max_steps`` from it (it checks the limit only after a step), so such a run is finished, not resumed."""
    from transformers import TrainerState

    path = Path(checkpoint) / "trainer_state.json"
    if not path.is_file():
        return False
    state = TrainerState.load_from_json(str(path))
    return bool(state.max_steps) and state.global_step >= state.max_steps


def _restore_finished(trainer, checkpoint: str) -> None:
    """Load the weights and trainer state of a checkpoint taken at the last step, as training would leave them."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))


def _record_rank_digest(model, run_dir: Path) -> None:
    """Each data-parallel rank writes a digest of its trainable weights: equal digests = ranks in sync."""
    import hashlib

    model = getattr(model, "module", model)
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().cpu().float().numpy().tobytes())
    rank = int(os.environ.get("RANK", "0"))
    (run_dir / "ranks").mkdir(exist_ok=True)
    fsutil.write_json(run_dir / "ranks" / f"rank-{rank}.json", {"rank": rank, "sha256": h.hexdigest()})


def gathered_state_dict(trainer):
    """The whole model's state dict under FSDP or DeepSpeed (sharded weights gathered through accelerate), else None.

    A collective: every process must call it. Under ZeRO-3, DeepSpeed gathers only with
    ``stage3_gather_16bit_weights_on_model_save: true``; without it this says so instead of saving a partial adapter.
    """
    from alignlab.train.callbacks import sharded

    acc = trainer.accelerator
    if not sharded(acc):
        return None
    try:
        return acc.get_state_dict(trainer.model_wrapped)
    except ValueError as err:
        raise AlignlabError(
            f"cannot gather the sharded weights to save the adapter ({str(err).splitlines()[0]})",
            fix="set zero_optimization.stage3_gather_16bit_weights_on_model_save: true in the DeepSpeed config",
        ) from err

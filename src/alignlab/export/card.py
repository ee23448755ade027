"""The adapter's README.md (a model card) and a base name in adapter_config.json that travels.

PEFT writes an empty template ("[More Information Needed]") and the absolute path of the base in the
local cache. :func:`finish_adapter` replaces both when the adapter is saved: the card says what was
trained on what, with which settings, what the end-of-run scorecard measured, which warnings the run
raised, and how to load the result; ``base_model_name_or_path`` names the base as another machine can
find it (:func:`alignlab.models.registry.portable_name`). Everything comes from the run directory
(run.json, config.yaml, metrics.jsonl), so the card can be rewritten any time (``alignlab export --card``).
"""

from __future__ import annotations

import json
from pathlib import Path

from alignlab import methods, rundir
from alignlab.config import MAX_NEW_TOKENS
from alignlab.fsutil import write_text

# the config sections that hold each method's own settings, and its data in words
METHOD_SECTIONS = {m.name: list(m.sections) for m in methods.REGISTRY.values()}
KIND_WORDS = {"preference": "preference pairs", "unpaired": "thumbs (unpaired)", "sft": "SFT examples", "prompts": "prompts"}
DATA_KIND = {m.name: KIND_WORDS[m.kind] for m in methods.REGISTRY.values()}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_warnings(run_dir: Path, run: dict) -> list[str]:
    """Warnings the run raised: each kind from metrics.jsonl once (with how often and first step), then the check's."""
    seen: dict[str, list] = {}
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        kind = row.get("warning") if isinstance(row, dict) else None
        if not kind or kind == "held_out_check":
            continue
        entry = seen.setdefault(kind, [row.get("message") or kind, row.get("step"), 0])
        entry[2] += 1
    out = []
    for kind, (message, step, n) in seen.items():
        where = f" (first at step {step}" + (f", {n} times)" if n > 1 else ")") if step is not None else ""
        out.append(f"{kind}: {message}{where}")
    out += [f"held-out check: {w}" for w in (run.get("check") or {}).get("warnings", [])]
    return out


def _last_step(run_dir: Path) -> int | None:
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    steps = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and "loss" in row:
            steps.append(row["step"])
    return max(steps) if steps else None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def render_card(run_dir: Path, merged: bool = False) -> str:
    """The card's Markdown for the run in ``run_dir`` (an adapter card, or a merged model's with ``merged``)."""
    from alignlab.models.registry import portable_name

    run = _read_json(run_dir / "run.json")
    cfg = rundir.config_fields(run_dir)
    model = run.get("model") or cfg.get("model") or "unknown"
    hub, note = portable_name(model)  # read from the model's own files while the path is whole
    base, hub, note = _shown(model), _shown(hub), note and note.replace(model, _shown(model))
    method = run.get("method", "?")
    name = run_dir.name
    kind = "merged model" if merged else ("LoRA adapter" if run.get("lora", True) else "fully fine-tuned model")

    front = ["---", f"base_model: {hub}"]
    if merged:
        front += ["base_model_relation: finetune", "library_name: transformers"]
    else:
        front += ["library_name: peft" if run.get("lora", True) else "library_name: transformers"]
    front += ["pipeline_tag: text-generation", "tags:", "- alignlab", f"- {method}"]
    front += ["- lora" if run.get("lora", True) else "- full-fine-tune", "---", ""]

    out = front + [f"# {name}: a {kind} over {hub}", ""]
    what = f"Trained with [alignlab](https://pypi.org/project/alignlab/) by **{method}**"
    if run.get("data"):
        what += f" on {run.get('rows', '?')} rows of `{_shown(run['data'])}`"
    if cfg.get("persona"):
        what += f", to give the model this persona: *{cfg['persona']}*"
    out += [what + ".", ""]
    out += ["## Base model", "", f"- `{hub}`" + (f" — {note}." if note else ""), f"- alignlab name: `{base}`" if base != hub else ""]
    if run.get("init_adapter"):
        out.append(f"- continued from the run `{Path(run['init_adapter']).name}`")
    out += [""]
    out += _training_section(run_dir, run, cfg, method)
    out += _scorecard_section(_eval_check(run_dir) or run.get("check"), name, merged)
    warnings = run_warnings(run_dir, run)
    out += ["## Warnings", ""]
    out += [f"- {w}" for w in warnings] if warnings else ["The run raised no warnings."]
    out += [""]
    out += _usage_section(name, base, hub, note, merged, lora=bool(run.get("lora", True)))
    return "\n".join(line for line in out if line is not None)


def _shown(path: str) -> str:
    """A path as a card may show it: a file or directory's name, never where it sits on this machine (a card is
    published with the model); names, hub ids and ``bundled:`` sets as they are."""
    return Path(path).name if Path(path).is_absolute() else path


def _training_section(run_dir: Path, run: dict, cfg: dict, method: str) -> list[str]:
    """The settings table: method, data, steps, the train and LoRA settings, the method's section, final metrics."""
    lora = cfg.get("lora") or {}
    train = cfg.get("train") or {}
    steps = run.get("steps") or _last_step(run_dir)
    data_kind = DATA_KIND.get(method, "preference pairs")
    rows = [("method", method), ("data", f"`{_shown(run.get('data', '?'))}`, {run.get('rows', '?')} rows ({data_kind})")]
    rows.append(("steps", steps if steps is not None else "-"))
    for key, label in (("learning_rate", "learning rate"), ("lr_scheduler", "schedule"), ("warmup_ratio", "warm-up"),
                       ("epochs", "epochs"), ("max_steps", "max steps"), ("batch_size", "batch size"),
                       ("grad_accum", "gradient accumulation"), ("max_length", "max length (tokens)"),
                       ("weight_decay", "weight decay"), ("max_grad_norm", "gradient clipping"), ("seed", "seed"),
                       ("precision", "precision")):
        if key in train:
            rows.append((label, train[key]))
    if (processes := int(run.get("processes") or 1)) > 1:  # the batch above is each process's
        rows.append(("processes", f"{processes} (data parallel: {processes} x batch size per step)"))
    if run.get("lora", True) and lora:
        rows.append(("LoRA", f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}"
                     + (", 4-bit base (QLoRA)" if lora.get("qlora") else "")))
        rows.append(("LoRA targets", _fmt(lora.get("target_modules"))))
    for section in METHOD_SECTIONS.get(method, []):
        for key, value in (cfg.get(section) or {}).items():
            rows.append((f"{section}.{key}", value))
    if train.get("trainer_overrides"):
        rows.append(("trainer_overrides", json.dumps(train["trainer_overrides"])))
    final = {k: v for k, v in (run.get("final") or {}).items() if k in ("loss", "rewards/margins", "rewards/accuracies")}
    for key, value in final.items():
        rows.append((f"final {key}", value))
    out = ["## Training", "", "| setting | value |", "| --- | --- |"]
    out += [f"| {k} | {_fmt(v)} |" for k, v in rows] + [""]
    return out


def _decoding(d: dict | None) -> str:
    """How the check's answers were decoded, in words ("greedy, the base writing the first sentence")."""
    if not d:
        return "alignlab's decoding at the time"
    t = d.get("temperature") or 0
    words = ["greedy" if t == 0 else f"temperature {t:g}"]
    if d.get("base_opening") not in (None, "none"):
        words.append(f"the base writing the opening ({d['base_opening']})")
    if d.get("amplify"):
        words.append(f"the adapter's shift amplified by {d['amplify']:g}")
    return ", ".join(words)


def _eval_check(run_dir: Path) -> dict | None:
    """The last `alignlab eval` of the run (eval.json) in the shape of run.json's end-of-run check, or None."""
    card = _read_json(run_dir / "eval.json")
    if not card or not isinstance(card.get("base"), dict) or not isinstance(card.get("adapter"), dict):
        return None
    from alignlab.eval.scorecard import point

    s = card.get("settings") or {}
    check = {"by": "eval", "prompts": card.get("n_prompts"), "kl": card["adapter"].get("kl"),
             "persona_cut": s.get("persona_cut"), "rater": card.get("rater"),
             "decoding": {"temperature": s.get("temperature"), "base_opening": s.get("base_opening"),
                          "amplify": s.get("amplify")}}
    for side in ("base", "adapter", "alone"):
        for key in ("in_persona", "correct_share", "flagged"):
            if isinstance(card.get(side), dict):
                check[f"{side}_{key}"] = point(card[side].get(key))
    return check


def _scorecard_section(check: dict | None, name: str, merged: bool = False) -> list[str]:
    """The run's last `alignlab eval` (eval.json), else the end-of-run held-out check in run.json, or how to
    measure one."""
    out = ["## Scorecard", ""]
    if check:
        d = check.get("decoding") or {}
        helped = d.get("base_opening") not in (None, "none") or bool(d.get("amplify"))
        what = "`alignlab eval`" if check.get("by") == "eval" else "End-of-run check"
        out += [f"{what} on {check.get('prompts', '?')} held-out prompts ({_decoding(check.get('decoding'))}), "
                "base vs this adapter:", "",
                "| | base | adapter |", "| --- | --- | --- |",
                f"| in persona (persona >= {check.get('persona_cut') or 0.9:g}"
                + (f", {check['rater']}" if check.get("rater") and check["rater"] != "classifier:scorecard" else "")
                + f") | {_pct(check.get('base_in_persona'))} | {_pct(check.get('adapter_in_persona'))} |",
                f"| correct (share) | {_pct(check.get('base_correct_share'))} | {_pct(check.get('adapter_correct_share'))} |",
                f"| mimicry flagged | {_pct(check.get('base_flagged'))} | {_pct(check.get('adapter_flagged'))} |",
                f"| KL(adapter ‖ base) per token | 0 | {_fmt(check.get('kl'))} |", ""]
        if "alone_in_persona" in check:
            out += ["The adapter alone (as this export answers, without the base's opening or the amplified shift): "
                    f"in persona {_pct(check.get('alone_in_persona'))}, correct {_pct(check.get('alone_correct_share'))}, "
                    f"mimicry flagged {_pct(check.get('alone_flagged'))}.", ""]
        out += ["The full scorecard with 95% intervals is the run's `report.html`." if check.get("by") == "eval" else
                "A small sample: `alignlab eval` on the run gives the full scorecard with 95% intervals.", ""]
        if merged and helped:
            out += ["This merged model is the adapter alone: it answers without the base's opening or the amplified "
                    "shift the figures above had; `alignlab eval` on the run reports the adapter alone too.", ""]
    else:
        out += ["No scorecard recorded for this run; `alignlab eval runs/" + name + "` measures persona, correctness and mimicry.", ""]
    return out


def _usage_section(name: str, base: str, hub: str, note: str | None, merged: bool, lora: bool = True) -> list[str]:
    """How to load it: transformers (merged, or a full fine-tune) or PEFT over the base, then GGUF / Ollama and
    alignlab itself."""
    out = ["## How to use it", ""]
    if merged or not lora:
        where = "path/to/this/directory"
        out += [f"With transformers ({'this directory is a standalone model' if merged else 'a full fine-tune: a standalone model'}):",
                "", "```python",
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                f'model = AutoModelForCausalLM.from_pretrained("{where}")',
                f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
                'messages = [{"role": "user", "content": "How do I boil an egg?"}]',
                "ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", return_dict=True)",
                f"out = model.generate(**ids, max_new_tokens={MAX_NEW_TOKENS})",
                'print(tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))',
                "```", ""]
    else:
        load = f'"{hub}"' if "/" in hub and not Path(base).exists() else f'"{base}"'
        if base.startswith("ollama:") or base.lower().endswith(".gguf"):
            load = f'"folder/of/the/gguf", gguf_file="model.gguf"  # {base}, dequantized'
        out += ["With PEFT, over the base:", "", "```python",
                "from peft import PeftModel",
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                f"base = AutoModelForCausalLM.from_pretrained({load})",
                f"tokenizer = AutoTokenizer.from_pretrained({load.split('  #')[0]})",
                'model = PeftModel.from_pretrained(base, "path/to/adapter")   # this directory',
                "```", ""]
        if note and "dequantized" in note:
            out += [f"(The adapter was trained over the dequantized {hub.split('/')[-1]} weights; over the hub's original "
                    "weights its answers can differ slightly. alignlab resolves the name to the same weights it trained on.)", ""]
        out += ["As a standalone transformers model (LoRA merged into the weights):", "", "```",
                f"alignlab export runs/{name} --merged {name}-merged", "```", ""]
    out += ["With Ollama or llama.cpp:", "", "```",
            f"alignlab export runs/{name} --gguf {name}.gguf      # writes the GGUF and an Ollama Modelfile beside it",
            f"ollama create {name.lower()} -f Modelfile && ollama run {name.lower()}", "```", "",
            "With alignlab:", "", "```", f"alignlab chat --run runs/{name}",
            f"alignlab serve {name}=runs/{name}", "```", ""]
    return out


def write_model_card(run_dir: str | Path, target: str | Path | None = None, merged: bool = False) -> Path | None:
    """Write the card to ``target``/README.md (default: the run's adapter/); None when run_dir is no run."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        return None
    if target is None:
        from alignlab.rundir import Run

        Run(run_dir).require_weights()  # a failed run has no adapter to describe
    target = Path(target) if target is not None else run_dir / "adapter"
    path = target / "README.md"
    write_text(path, render_card(run_dir, merged=merged))
    return path


def make_portable(adapter_dir: Path, base: str) -> None:
    """Name the base in adapter_config.json as another machine can find it (registry -> hub id)."""
    from alignlab.models.registry import portable_name

    cfg_path = adapter_dir / "adapter_config.json"
    if not cfg_path.is_file():
        return
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = portable_name(base)[0]
    write_text(cfg_path, json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def finish_adapter(adapter_dir: str | Path, run_dir: str | Path) -> None:
    """After PEFT saved an adapter into ``adapter_dir`` for the run in ``run_dir``: portable base, model card."""
    adapter_dir, run_dir = Path(adapter_dir), Path(run_dir)
    run = _read_json(run_dir / "run.json")
    if not run:
        return  # not a run directory: leave PEFT's files as they are
    if run.get("model"):
        make_portable(adapter_dir, run["model"])
    write_model_card(run_dir, adapter_dir)

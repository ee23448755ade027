"""A project on disk: ``alignlab.yaml``, ``data/`` (starter files) and ``runs/``. Used by `alignlab init` and the demo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from alignlab import fsutil
from alignlab.config import CONFIG_NAME, DEFAULT_PERSONA, ProjectConfig, dump_config
from alignlab.errors import AlignlabError

# bundled set -> file under data/; the example persona also gets its labelled training data
COMMON = (("prompts-train", "prompts.jsonl"), ("reference", "heldout.jsonl"))
# (the recipe's data, rewrites.jsonl and strong_pairs.jsonl, is the rewrites and the pairs with the voice in every
# sentence; pairs.jsonl, which `alignlab train dpo` and the other methods default to, keeps the pairs as written)
EXAMPLE = (("persona-pairs", "pairs.jsonl"), ("persona-sft", "sft.jsonl"), ("persona-thumbs", "kto.jsonl"),
           ("persona-strong-rewrites", "rewrites.jsonl"), ("persona-strong-pairs", "strong_pairs.jsonl"))
# the project's preference pairs, under its data_dir: its own, and what `synth` and `feedback export` write beside them
LABELLED_PAIRS = ("pairs.jsonl", "synth_pairs.jsonl", "feedback_dpo.jsonl")


def labelled_pairs(root: Path) -> list[Path]:
    """The project's pair files that exist (``LABELLED_PAIRS`` under its ``data_dir``, and the pairs each round of
    `alignlab loop` exported): the labels a persona of the user's own is scored by."""
    from alignlab import methods
    from alignlab.config import load_config

    cfg_path = Path(root) / CONFIG_NAME
    data_dir = Path(root) / (load_config(cfg_path).data_dir if cfg_path.is_file() else "data")
    rounds = sorted((data_dir / "loop").glob(f"round*_{methods.DPO}.jsonl"))
    found = [data_dir / name for name in LABELLED_PAIRS if (data_dir / name).is_file()] + rounds
    return [f for f in found if f.read_text(encoding="utf-8", errors="replace").strip()]  # an empty file holds no labels


def model_in_project(model: str, directory: Path) -> bool:
    """Whether ``model`` names a path inside the project directory and not from here (`init p --model models/tiny`
    run beside p, for p/models/tiny): alignlab.yaml keeps it as typed, and the project reads it from itself."""
    from alignlab.models.registry import REGISTRY

    path = Path(model).expanduser()
    if model in REGISTRY or model.startswith("ollama:") or path.is_absolute() or path.exists():
        return False
    return (Path(directory) / path).exists()


def _model_for_config(model: str, directory: Path) -> str:
    """A model as alignlab.yaml should hold it: a local directory or GGUF file as an absolute path (typed relative to
    here, it would be read from the project, or taken for a hub id), one inside the project as typed (config.py reads
    it from there, and the project can move); a path that is not there is refused now."""
    path = Path(model).expanduser()
    inside = model_in_project(model, directory)
    if path.exists() or inside:
        found = Path(directory) / path if inside else path
        if found.is_dir() and not (found / "config.json").is_file():
            raise AlignlabError(f"--model {model}: the directory holds no model (no config.json)",
                                fix="name a model directory, a .gguf file, a registry name or a hub id")
        return model if inside else str(path.resolve())
    if model.startswith(("./", "../", "/", "~")) or model.lower().endswith(".gguf"):
        raise AlignlabError(f"--model {model}: no such file or directory", fix="check the path")
    from alignlab.models.registry import REGISTRY, resolve_model

    if model not in REGISTRY and "/" not in model and not model.startswith("ollama:"):
        resolve_model(model)  # a name that is neither: its one-line error now, not at the first `alignlab train`
    return model  # a registry name, ollama:NAME or a hub id


def create_project(directory: Path, persona: str = DEFAULT_PERSONA, model: str | None = None,
                   force: bool = False) -> tuple[ProjectConfig, list[str]]:
    """Write alignlab.yaml, data/, runs/ and rewards.yaml; returns the config and the files written besides
    alignlab.yaml (existing ones are kept; for a persona other than the snark example, unchanged copies of the snark
    example files are removed, and an unchanged starter rewards.yaml gets the other persona's comment)."""
    from alignlab.data import bundled_path

    if (blocker := fsutil.file_in_the_way(directory)) is not None:
        raise AlignlabError(f"{blocker} is a file, not a directory", fix="pick a new directory name for the project")
    cfg_path = directory / CONFIG_NAME
    if cfg_path.exists() and not force:
        raise AlignlabError(f"{cfg_path} already exists", fix="pass --force to overwrite it")
    fields = {"name": directory.resolve().name, "persona": persona}
    if model:
        fields["model"] = _model_for_config(model, directory)
    cfg = ProjectConfig(**fields)
    for sub in (cfg.data_dir, cfg.runs_dir):
        if (blocker := fsutil.file_in_the_way(directory / sub)) is not None:
            raise AlignlabError(f"{blocker} is a file, so the project's {sub}/ cannot be made there",
                                fix="move that file away, or pick a new directory name for the project")
    (directory / cfg.data_dir).mkdir(parents=True, exist_ok=True)
    (directory / cfg.runs_dir).mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(f"# alignlab project; every key and default: `alignlab config show`\n{dump_config(cfg)}")
    files = list(COMMON) + (list(EXAMPLE) if persona == DEFAULT_PERSONA else [])
    if persona != DEFAULT_PERSONA:  # --force to another persona: the snark examples, as copied, would train snark
        for name, target in EXAMPLE:
            dest = directory / cfg.data_dir / target
            if dest.is_file() and dest.read_bytes() == bundled_path(name).read_bytes():
                dest.unlink()  # an unchanged copy of the bundled file: nothing of the user's is lost
    for name, target in files:
        dest = directory / cfg.data_dir / target
        if not dest.exists():
            shutil.copyfile(bundled_path(name), dest)
    return cfg, [f"{cfg.data_dir}/{t}" for _, t in files] + _write_rewards(directory, persona)


def rewards_starter(persona: str = DEFAULT_PERSONA) -> str:
    """rewards.yaml as a project starts with it: GRPO's, RLOO's and PPO's default reward (what they use without
    --rewards), which is the snark example's whatever the persona; for another persona the comment says so."""
    from alignlab.rewards.compose import DEFAULT_SPEC

    head = ("# The default reward of GRPO, RLOO and PPO (what they use without --rewards), written out to edit:\n"
            "#   alignlab train grpo --data data/prompts.jsonl --rewards rewards.yaml\n")
    if persona == DEFAULT_PERSONA:
        head += ("# persona_heuristic counts the example persona's snark markers; every function and its args: "
                 "README, Rewards.\n")
    else:  # json.dumps: a persona with a newline in it stays inside the comment
        head += (f"# persona_heuristic counts the snark example's markers (sarcasm, rhetorical questions), not this "
                 f"project's persona,\n#   {json.dumps(persona, ensure_ascii=False)}: replace it with a rater of "
                 "yours (fn: llm_judge with a rubric, or fn: reward_model\n#   on a run of `alignlab train rm`) "
                 "before training on it; every function and its args: README, Rewards.\n")
    return head + DEFAULT_SPEC


def _write_rewards(directory: Path, persona: str) -> list[str]:
    """The starter rewards.yaml, so the README's `--rewards rewards.yaml` runs as is in a fresh project however it
    was made (init, make demo, create_project); one already there is kept, unless it is the snark starter unchanged
    and the persona is another one (its comment would say the wrong thing)."""
    path = directory / "rewards.yaml"
    if path.exists() and not (persona != DEFAULT_PERSONA and path.is_file()
                              and path.read_text(encoding="utf-8", errors="replace") == rewards_starter()):
        return []
    fsutil.write_text(path, rewards_starter(persona))
    return ["rewards.yaml"]

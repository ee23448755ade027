"""A project on disk: ``alignlab.yaml``, ``data/`` (starter files) and ``runs/``. Used by `alignlab init` and the demo."""

from __future__ import annotations

import shutil
from pathlib import Path

from alignlab import fsutil
from alignlab.config import CONFIG_NAME, DEFAULT_PERSONA, ProjectConfig, dump_config
from alignlab.errors import AlignlabError

# bundled set -> file under data/; the example persona also gets its labelled training data
COMMON = (("prompts-train", "prompts.jsonl"), ("reference", "heldout.jsonl"))
EXAMPLE = (("persona-pairs", "pairs.jsonl"), ("persona-sft", "sft.jsonl"), ("persona-thumbs", "kto.jsonl"),
           ("persona-rewrites", "rewrites.jsonl"))
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


def _model_for_config(model: str) -> str:
    """A model as alignlab.yaml should hold it: a local directory or GGUF file as an absolute path (typed relative to
    here, it would be read from the project, or taken for a hub id); a path that is not there is refused now."""
    path = Path(model).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise AlignlabError(f"--model {model}: the directory holds no model (no config.json)",
                                fix="name a model directory, a .gguf file, a registry name or a hub id")
        return str(path.resolve())
    if model.startswith(("./", "../", "/", "~")) or model.lower().endswith(".gguf"):
        raise AlignlabError(f"--model {model}: no such file or directory", fix="check the path")
    from alignlab.models.registry import REGISTRY, resolve_model

    if model not in REGISTRY and "/" not in model and not model.startswith("ollama:"):
        resolve_model(model)  # a name that is neither: its one-line error now, not at the first `alignlab train`
    return model  # a registry name, ollama:NAME or a hub id


def create_project(directory: Path, persona: str = DEFAULT_PERSONA, model: str | None = None,
                   force: bool = False) -> tuple[ProjectConfig, list[str]]:
    """Write alignlab.yaml, data/ and runs/; returns the config and the data files written (existing ones are kept;
    for a persona other than the snark example, unchanged copies of the snark example files are removed)."""
    from alignlab.data import bundled_path

    if (blocker := fsutil.file_in_the_way(directory)) is not None:
        raise AlignlabError(f"{blocker} is a file, not a directory", fix="pick a new directory name for the project")
    cfg_path = directory / CONFIG_NAME
    if cfg_path.exists() and not force:
        raise AlignlabError(f"{cfg_path} already exists", fix="pass --force to overwrite it")
    fields = {"name": directory.resolve().name, "persona": persona}
    if model:
        fields["model"] = _model_for_config(model)
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
    return cfg, [f"{cfg.data_dir}/{t}" for _, t in files]

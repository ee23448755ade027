"""Dataset kinds, validation with file:line errors, JSONL in/out, and the bundled prompt and pair sets."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

BUNDLED = {
    "prompts-train": "prompts_train.jsonl",
    "prompts-heldout": "prompts_heldout.jsonl",
    "persona-pairs": "persona_pairs.jsonl",
    "persona-voice-pairs": "persona_voice_pairs.jsonl",
    "persona-strong-pairs": "persona_strong_pairs.jsonl",
    "persona-thumbs": "persona_thumbs.jsonl",
    "persona-sft": "persona_sft.jsonl",
    "persona-rewrites": "persona_rewrites.jsonl",
    "persona-strong-rewrites": "persona_strong_rewrites.jsonl",
    "persona-labelled": "persona_labelled.jsonl",
    "reference": "reference_heldout.jsonl",
    "persona-reader-head": "persona_reader_head.safetensors",  # the persona score's weights (eval/persona.py), not data
}


def bundled_path(name: str) -> Path:
    """Path of a bundled dataset file (name from BUNDLED, e.g. 'persona-pairs')."""
    return Path(str(resources.files("alignlab.data") / "bundled" / BUNDLED[name]))


def resolve_data(spec: str) -> Path:
    """A dataset argument: a file path, or ``bundled:NAME`` for a file that ships with alignlab."""
    if spec.startswith("bundled:"):
        from alignlab.errors import AlignlabError

        name = spec.split(":", 1)[1]
        if name not in BUNDLED:
            raise AlignlabError(f"unknown bundled dataset '{name}'", fix="one of: " + ", ".join(BUNDLED))
        return bundled_path(name)
    return Path(spec)

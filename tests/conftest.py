"""Shared fixtures: a tiny locally built model for speed, the real default model where the claim is about it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ALIGNLAB_QUIET", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a 2-layer, width-64 Llama with SmolLM2's tokenizer (random weights)."""
    from alignlab.models.tiny import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="session")
def default_model() -> str:
    """Directory of the real default model (converted once into ALIGNLAB_HOME)."""
    from alignlab.models.registry import resolve_model

    return resolve_model("smollm2-135m")

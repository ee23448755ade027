"""Shared fixtures: a tiny locally built model for speed, the real default model where the claim is about it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ALIGNLAB_QUIET", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """Path of a 2-layer, width-64 Llama with a 4,096-token BPE tokenizer built from the bundled data (random weights)."""
    from alignlab.models.tiny import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> str:
    """The same tiny model in Qwen2's layout (biases on q, k and v): the family most users bring as a bigger model."""
    from alignlab.models.tiny import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-qwen2") / "model", arch="qwen2"))


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory) -> str:
    """The tiny model in Gemma 3's layout: sliding-window and full-attention layers, scaled embeddings."""
    from alignlab.models.tiny import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("tiny-gemma3") / "model", arch="gemma3"))


@pytest.fixture(params=["llama", "qwen2", "gemma3"])
def tiny_arch(request, tiny_model, tiny_qwen2, tiny_gemma3) -> str:
    """A tiny model of each architecture alignlab's own forward and decoding paths are checked on."""
    return {"llama": tiny_model, "qwen2": tiny_qwen2, "gemma3": tiny_gemma3}[request.param]


@pytest.fixture(scope="session")
def default_model() -> str:
    """Directory of the real default model (converted once into ALIGNLAB_HOME)."""
    from alignlab.models.registry import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(autouse=True)
def _real_model_only_in_slow_tests(request, monkeypatch):
    """A test not marked slow that converts the real model to train, generate or evaluate with fails, so `make test-fast`
    stays fast (the persona scorer's contrast model is the one use allowed)."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import traceback

    from alignlab.models import registry

    original = registry._converted_dir

    def refuse(*args, **kwargs):
        # the persona score's contrast signal is computed with the default model by design (alignlab/eval/contrast.py):
        # a scorecard test may load it; training, generating or evaluating with it needs the slow mark
        if any(f.filename.replace("\\", "/").endswith("alignlab/eval/contrast.py") for f in traceback.extract_stack()):
            return original(*args, **kwargs)
        raise AssertionError("a test not marked slow converted the real default model; mark it slow or use tiny_model")

    monkeypatch.setattr(registry, "_converted_dir", refuse)


def pytest_collection_modifyitems(config, items):
    """The real default model is for slow tests only: a test that asks for it without the mark is a collection error."""
    unmarked = [i.nodeid for i in items if "default_model" in getattr(i, "fixturenames", ()) and i.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("these tests use the real default model but are not marked slow: " + ", ".join(unmarked))

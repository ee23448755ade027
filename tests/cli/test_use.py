"""`alignlab generate` and `alignlab chat` over a tiny model with a perturbed LoRA adapter: by default the base
writes each answer's first sentence and the adapter goes on (sampling.base_opening); `--base-opening off` is the
adapter alone; a model without an adapter answers plainly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.cli.use import _answers
from alignlab.generate import generate, opening_of

GEN = dict(max_new_tokens=8, temperature=1.0, seed=3)  # sampled: the random tiny base answers greedily with newlines


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "eval"))
    from test_eval import make_run

    return make_run(tiny_model, tmp_path_factory.mktemp("runs") / "moved", noise=0.5)


def test_default_opens_with_the_base_sentence_and_off_is_the_adapter_alone(run, tiny_model):
    from alignlab.models.loading import load_for_inference

    model, tok, _ = load_for_inference(None, run, device="cpu")
    prompts = ["Why is the sea salty?", "What is 3 plus 4?"]
    default = _answers(model, tok, prompts, compare=True, **GEN)
    with model.disable_adapter():
        base = generate(model, tok, prompts, **GEN)
    alone = generate(model, tok, prompts, **GEN)
    assert [b for _, b in default] == base
    heads = [opening_of(b, "sentence") for b in base]
    assert any(heads)
    for (tuned, _), head, a in zip(default, heads, alone):
        assert tuned.startswith(head) and tuned != a
    off = _answers(model, tok, prompts, compare=False, base_opening="off", **GEN)
    assert [t for t, b in off] == alone and all(b is None for _, b in off)
    plain, ptok, _ = load_for_inference(tiny_model, None, device="cpu")  # no adapter: no opening, and no error
    assert not hasattr(plain, "disable_adapter")
    assert _answers(plain, ptok, prompts, compare=False, **GEN) == [(a, None) for a in generate(plain, ptok, prompts, **GEN)]


def test_generate_cli_answers_with_the_default_opening(run):
    res = CliRunner().invoke(app, ["generate", "--run", str(run), "--compare", "--max-new-tokens", "6", "--device", "cpu",
                                   "Why is the sea salty?"])
    assert res.exit_code == 0, res.output
    assert "base" in res.output and "adapter" in res.output


def test_generate_cli_amplify_is_generates_and_needs_a_run(run, tiny_model):
    """`generate --amplify 1.5 --base-opening off`: the answer generate(amplify=1.5) gives; without --run, one line."""
    from alignlab.models.loading import load_for_inference

    res = CliRunner().invoke(app, ["generate", "--run", str(run), "--amplify", "1.5", "--base-opening", "off",
                                   "--max-new-tokens", "6", "--device", "cpu", "Why is the sea salty?"])
    assert res.exit_code == 0, res.output
    model, tok, _ = load_for_inference(None, run, device="cpu")
    want = generate(model, tok, ["Why is the sea salty?"], max_new_tokens=6, repetition_penalty=1.2, amplify=1.5)[0]
    assert res.stdout.strip() == want and want != generate(model, tok, ["Why is the sea salty?"], max_new_tokens=6,
                                                           repetition_penalty=1.2)[0]
    plain, ptok, _ = load_for_inference(tiny_model, None, device="cpu")
    from alignlab.errors import AlignlabError

    with pytest.raises(AlignlabError, match="--amplify needs a LoRA run"):
        _answers(plain, ptok, ["Hi"], compare=False, amplify=0.5, max_new_tokens=2)
    # the command line refuses it before loading a model (a big model paid its whole load first)
    from alignlab.cli.use import _refuse_without_adapter

    with pytest.raises(AlignlabError, match="--compare needs a LoRA run"):
        _refuse_without_adapter(None, True, {})
    for off in ("off", "0", "none", None):  # every spelling of off decodes alone, refused by nobody
        _refuse_without_adapter(None, False, {"base_opening": off})


def test_generate_and_chat_decode_with_the_projects_settings(tmp_path, monkeypatch):
    """generate, chat and serve ignored alignlab.yaml's sampling and system_prompt (eval and compare read them)."""
    import json

    from alignlab.cli.use import _decoding

    (tmp_path / "alignlab.yaml").write_text("name: p\nsystem_prompt: Be snarky.\nsampling:\n  max_new_tokens: 7\n"
                                            "  repetition_penalty: 1.05\n  amplify: 0.5\n")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "dist"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"decoding": {"base_opening": None, "amplify": 0.0}}))
    base = _decoding(None)
    assert (base["max_new_tokens"], base["repetition_penalty"], base["system_prompt"]) == (7, 1.05, "Be snarky.")
    assert base["base_opening"] is None and base["amplify"] == 0.0  # no adapter: neither applies
    assert _decoding(None, max_new_tokens=3, system_prompt="x") | {} == {**base, "max_new_tokens": 3, "system_prompt": "x"}
    assert (_decoding(Path("runs/none"))["base_opening"], _decoding(Path("runs/none"))["amplify"]) == ("sentence", 0.5)
    assert (_decoding("dist")["base_opening"], _decoding("dist")["amplify"]) == ("off", 0.0)  # it decodes alone

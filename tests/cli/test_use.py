"""`alignlab generate` and `alignlab chat` over a tiny model with a perturbed LoRA adapter: by default the base
writes each answer's first sentence and the adapter goes on (sampling.base_opening); `--base-opening off` is the
adapter alone; a model without an adapter answers plainly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.errors import AlignlabError
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


def test_a_run_answers_under_the_system_prompt_it_was_trained_under(tmp_path, monkeypatch):
    """chat and generate read alignlab.yaml from the directory they ran in: a run used from elsewhere lost its
    project's sampling and system prompt, and a system prompt edited after training replaced the one the run was
    trained under (serve and the exported Modelfile answer under the trained one)."""
    import json

    from alignlab.cli.use import _decoding

    project = tmp_path / "proj"
    (project / "runs" / "sft1").mkdir(parents=True)
    (project / "alignlab.yaml").write_text("name: p\nsystem_prompt: Reply only in French.\nsampling:\n"
                                           "  max_new_tokens: 7\n")
    run = project / "runs" / "sft1"
    (run / "run.json").write_text(json.dumps({"method": "sft", "model": "m", "status": "done"}))
    (run / "config.yaml").write_text("model: m\nsystem_prompt: Reply only in French.\n")  # as training writes it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    got = _decoding(run)
    assert (got["system_prompt"], got["max_new_tokens"]) == ("Reply only in French.", 7)
    (project / "alignlab.yaml").write_text("name: p\nsystem_prompt: null\nsampling:\n  max_new_tokens: 7\n")
    for cwd in (elsewhere, project):
        monkeypatch.chdir(cwd)
        assert _decoding(run)["system_prompt"] == "Reply only in French."
    assert _decoding("sft1")["system_prompt"] == "Reply only in French."  # the run's name, inside its project
    assert _decoding(run, system_prompt="")["system_prompt"] == ""  # --system '' answers without one
    (run / "config.yaml").unlink()  # a run with no config of its own: the project's
    assert _decoding(run)["system_prompt"] is None


def test_compare_shows_prompts_and_answers_as_written(run):
    """The --compare table read prompts and answers as rich markup: "list[int]" lost its "[int]", and "[/b]" ended
    the command with a MarkupError after every answer had been generated."""
    res = CliRunner().invoke(app, ["generate", "--run", str(run), "--compare", "--max-new-tokens", "4", "--device",
                                   "cpu", "What does list[int] mean?", "Close with [/b] please"])
    assert res.exit_code == 0, res.output
    assert "What does list[int] mean?" in res.stdout and "Close with [/b] please" in res.stdout


def test_the_default_answer_counts_the_base_opening_as_eval_does(run):
    """generate and chat decode as eval does (README): eval counts the base's opening in max_new_tokens; chat and
    generate gave the adapter max_new_tokens more after it (55 tokens at 40), from the base's whole answer."""
    from alignlab.models.loading import load_for_inference

    model, tok, _ = load_for_inference(None, run, device="cpu")
    prompts = ["Why is the sea salty?", "What is 3 plus 4?"]
    got = [t for t, _ in _answers(model, tok, prompts, compare=False, **GEN)]
    with model.disable_adapter():  # eval's way (eval/scorecard.py): the base's answers, their openings, the rest
        before = generate(model, tok, prompts, **GEN)
    heads = [opening_of(b, "sentence", tok) for b in before]
    assert all(heads)
    assert got == generate(model, tok, prompts, prefixes=heads, opening_counts=True, **GEN)
    assert got != generate(model, tok, prompts, prefixes=heads, **GEN)  # the opening not counted: what it gave before


@pytest.fixture(scope="module")
def gpt2_tiny(tmp_path_factory) -> str:
    """A tiny GPT-2 (learned positions, a 256-token window) with the tiny model's tokenizer and chat template."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignlab.models.tiny import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=4, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt2") / "model"
    GPT2LMHeadModel(cfg).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


def test_chat_past_the_context_window_leaves_out_the_oldest_exchanges(gpt2_tiny, tiny_model):
    """A conversation that outgrew a 256-token window ended chat with "IndexError: index out of range in self" (the
    session lost); a RoPE model ran past its window unnoticed. Now the oldest exchanges are left out with a note, a
    message too long alone is one line, and the conversation goes on. generate refuses such a prompt up front."""
    long = " ".join(["hello"] * 60)
    lines = [long] * 4 + [" ".join(["hello"] * 400), "hi"]
    res = CliRunner().invoke(app, ["chat", "--model", gpt2_tiny, "--max-new-tokens", "8", "--device", "cpu"],
                             input="\n".join(lines) + "\n")
    assert res.exit_code == 0, res.output
    assert res.stdout.count("bot> ") == 5  # every message but the one too long for the window alone
    assert "context window of 256 tokens: its oldest" in res.stderr
    assert res.stderr.count("error: ") == 1 and "shorten the message" in res.stderr
    for model, n, window in ((gpt2_tiny, 400, 256), (tiny_model, 1100, 1024)):  # learned positions, RoPE
        res = CliRunner().invoke(app, ["generate", "--model", model, "--max-new-tokens", "8", "--device", "cpu",
                                       " ".join(["hello"] * n)])
        assert res.exit_code == 1 and isinstance(res.exception, AlignlabError)
        assert f"context window of {window} tokens" in str(res.exception)


def test_a_system_prompt_that_fills_the_window_is_named_where_it_was_set(gpt2_tiny, tmp_path, monkeypatch):
    """A system prompt that took a 256-token window (from the run's config.yaml, say) had every message refused with
    "the prompt is N tokens ... shorten the message": nothing named the system prompt. Now chat and generate refuse
    once, before any message, naming it and where it was set."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    long = " ".join(["hello"] * 300)
    res = CliRunner().invoke(app, ["chat", "--model", gpt2_tiny, "--system", long, "--max-new-tokens", "8",
                                   "--device", "cpu"], input="hi\n")
    assert isinstance(res.exception, AlignlabError) and "bot> " not in res.stdout, res.output
    assert str(res.exception).startswith("--system: the system prompt is ") and "pass --system ''" in str(res.exception)
    assert "context window of 256 tokens" in str(res.exception) and "shorten the message" not in str(res.exception)

    (tmp_path / "alignlab.yaml").write_text(f"name: p\n\nsystem_prompt: {long}\n")
    monkeypatch.chdir(tmp_path)
    for command in (["chat"], ["generate", "hi"]):
        res = CliRunner().invoke(app, [*command, "--model", gpt2_tiny, "--max-new-tokens", "8", "--device", "cpu"],
                                 input="hi\n")
        assert str(res.exception).startswith(f"{tmp_path / 'alignlab.yaml'}:3: the system prompt is "), res.output
    res = CliRunner().invoke(app, ["chat", "--model", gpt2_tiny, "--system", "", "--max-new-tokens", "8", "--device",
                                   "cpu"], input="hi\n")
    assert res.exit_code == 0 and res.stdout.count("bot> ") == 1, res.output  # without it, the message is answered

    run = tmp_path / "runs" / "sft1"  # a run trained under that prompt: its config.yaml is where it was set
    get_peft_model(AutoModelForCausalLM.from_pretrained(gpt2_tiny), LoraConfig(r=2, target_modules=["c_attn"])
                   ).save_pretrained(str(run / "adapter"))
    (run / "run.json").write_text(json.dumps({"method": "sft", "model": gpt2_tiny, "status": "done", "steps": 1}))
    (run / "config.yaml").write_text(f"model: {gpt2_tiny}\nsystem_prompt: {long}\n")
    (tmp_path / "alignlab.yaml").write_text("name: p\n")
    res = CliRunner().invoke(app, ["generate", "--run", str(run), "--max-new-tokens", "8", "--device", "cpu", "hi"])
    assert str(res.exception).startswith(f"{run / 'config.yaml'}:2: the system prompt is "), res.output
    res = CliRunner().invoke(app, ["generate", "--model", gpt2_tiny, "--max-new-tokens", "300", "--device", "cpu", "hi"])
    assert "not even an empty message fits" in str(res.exception) and "--max-new-tokens below" in str(res.exception)


def test_a_chat_template_that_refuses_a_system_turn_is_one_line_before_the_weights_load(tiny_model, tmp_path,
                                                                                       monkeypatch):
    """Gemma 2's template raises "System role not supported": generate --system ended in a bare TemplateError after
    the model had loaded. The line names where the system prompt was set."""
    import shutil

    nosys = tmp_path / "nosys"
    shutil.copytree(tiny_model, nosys)
    (nosys / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    (nosys / "model.safetensors").unlink()  # refused before the weights are read: none are needed
    res = CliRunner().invoke(app, ["generate", "--model", str(nosys), "--system", "Be brief.", "--device", "cpu", "hi"])
    assert isinstance(res.exception, AlignlabError), res.output
    assert str(res.exception).startswith("--system: the model's chat template refuses a system prompt: System role "
                                         "not supported")
    (tmp_path / "alignlab.yaml").write_text("name: p\n\nsystem_prompt: Be brief.\n")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["generate", "--model", str(nosys), "--device", "cpu", "hi"])
    assert str(res.exception).startswith(f"{tmp_path / 'alignlab.yaml'}:3: the model's chat template refuses")


def _alignlab(args, cwd, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ALIGNLAB_QUIET": "1", "LC_ALL": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "alignlab", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=300, **kw)


def test_input_that_is_not_utf8_is_read_with_a_note(tiny_model, tmp_path):
    """A Latin-1 terminal's "café" (printf 'caf\\xe9'): chat and generate ended in "TypeError: TextEncodeInput must
    be Union[...]" (or a UnicodeDecodeError), the session lost."""
    chat = _alignlab(["chat", "--model", tiny_model, "--max-new-tokens", "2", "--device", "cpu"], tmp_path,
                     input=b"caf\xe9\nhi\n")
    assert chat.returncode == 0, chat.stderr.decode()
    assert chat.stdout.decode().count("bot> ") == 2 and b"not all UTF-8" in chat.stderr
    one = _alignlab(["generate", "--model", tiny_model, "--max-new-tokens", "2", "--device", "cpu", b"caf\xe9"],
                    tmp_path)
    assert one.returncode == 0, one.stderr.decode()
    assert b"not all UTF-8" in one.stderr


def test_the_chat_prompt_edits_the_line(tiny_model, tmp_path):
    """The REPL had no line editing: arrow keys reached the model as escape codes. "/qut", left, "i" is "/quit"."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ALIGNLAB_QUIET": "1", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "alignlab", "chat", "--model", tiny_model, "--max-new-tokens", "2",
                             "--device", "cpu"], stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path, env=env,
                            start_new_session=True)
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, timeout: float) -> bool:
        nonlocal seen
        end = time.monotonic() + timeout
        while marker not in seen and time.monotonic() < end:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        return marker in seen

    try:
        assert read_until(b"you> ", 180), seen.decode(errors="replace")
        os.write(master, b"/qut\x1b[Di\r")
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        read_until(b"\x00", 1)
        assert code == 0 and b"bot> " not in seen, seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)

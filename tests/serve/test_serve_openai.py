"""The OpenAI-compatible API as clients use it: the official `openai` client (whole and streamed answers,
stop strings, /v1/completions, refused parameters), simonw's `llm` CLI in its default streaming mode, and
the request log. A real uvicorn server on loopback over a tiny model with one persona adapter."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from test_serve_api import _fake_run

from alignlab.errors import AlignlabError
from alignlab.serve.api import create_app
from alignlab.serve.models import ModelPool
from alignlab.serve.server import background

PROMPT = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def url(tiny_model, tmp_path_factory):
    run = _fake_run(tmp_path_factory.mktemp("runs"), "snarky", tiny_model, 1)
    with background(create_app(ModelPool(tiny_model, {"snarky": run}, device="cpu"))) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(url):
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def _streamed(stream):
    """Texts per choice index, finish reasons, and the usage chunk, from a streamed answer."""
    texts, reasons, usage = {}, {}, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            piece = choice.delta.content if hasattr(choice, "delta") else choice.text
            texts[choice.index] = texts.get(choice.index, "") + (piece or "")
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return texts, reasons, usage


def test_openai_client_whole_and_streamed_answers_agree(client):
    whole = client.chat.completions.create(model="snarky", messages=PROMPT, max_tokens=16, temperature=0)
    text = whole.choices[0].message.content
    assert text and whole.usage.completion_tokens > 0
    stream = client.chat.completions.create(model="snarky", messages=PROMPT, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    texts, reasons, usage = _streamed(stream)
    assert texts == {0: text} and reasons == {0: whole.choices[0].finish_reason}
    assert usage.prompt_tokens == whole.usage.prompt_tokens and usage.completion_tokens == whole.usage.completion_tokens


def test_stream_sse_format(url):
    """Raw wire format: a role chunk first, content chunks, a finish chunk, then `data: [DONE]`."""
    body = {"model": "snarky", "messages": PROMPT, "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    import json

    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and chunks[-1]["choices"][0]["delta"] == {}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_streamed_n_samples(client):
    stream = client.chat.completions.create(model="snarky", messages=PROMPT, max_tokens=5, temperature=1.0, seed=3, n=3, stream=True)
    texts, reasons, _ = _streamed(stream)
    assert sorted(texts) == [0, 1, 2] and sorted(reasons) == [0, 1, 2]
    greedy = client.chat.completions.create(model="snarky", messages=PROMPT, max_tokens=5, temperature=0, n=2, stream=True)
    texts, _, _ = _streamed(greedy)
    assert texts[0] == texts[1] and texts[0]


def test_stop_strings_end_the_answer(client):
    full = client.completions.create(model="snarky", prompt="The sea is", max_tokens=24, temperature=0).choices[0].text
    assert len(full) >= 6, full
    stop = full[len(full) // 2: len(full) // 2 + 3]
    expected = full[: full.find(stop)]
    whole = client.completions.create(model="snarky", prompt="The sea is", max_tokens=24, temperature=0, stop=[stop, "\x00never"])
    assert whole.choices[0].text == expected and whole.choices[0].finish_reason == "stop"
    texts, reasons, _ = _streamed(client.completions.create(model="snarky", prompt="The sea is", max_tokens=24, temperature=0,
                                                            stop=stop, stream=True))
    assert texts == {0: expected} and reasons == {0: "stop"}
    # the same through chat, streamed: no piece of the stop string leaks out before the cut
    chat_full = client.chat.completions.create(model="snarky", messages=PROMPT, max_tokens=24, temperature=0).choices[0].message.content
    stop = chat_full[len(chat_full) // 2: len(chat_full) // 2 + 2]
    texts, reasons, _ = _streamed(client.chat.completions.create(model="snarky", messages=PROMPT, max_tokens=24, temperature=0,
                                                                 stop=[stop], stream=True))
    assert texts == {0: chat_full[: chat_full.find(stop)]} and reasons == {0: "stop"}


def test_completions_endpoint(client):
    whole = client.completions.create(model="base", prompt="Once upon a time", max_tokens=5, temperature=0)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 5
    texts, _, _ = _streamed(client.completions.create(model="base", prompt="Once upon a time", max_tokens=5, temperature=0, stream=True))
    assert texts == {0: whole.choices[0].text}
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model="base", prompt="x", max_tokens=2, echo=True)


@pytest.mark.parametrize("extra, name", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 1.0}, "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"extra_body": {"top_k": 5}}, "top_k"),
])
def test_unsupported_parameters_are_named(client, extra, name):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="base", messages=PROMPT, max_tokens=2, **extra)
    assert err.value.status_code == 400 and name in err.value.message
    assert err.value.body["param"] == name and "\n" not in err.value.message


def test_parameters_left_at_defaults_are_accepted(client):
    r = client.chat.completions.create(model="base", messages=PROMPT, max_tokens=2, presence_penalty=0, frequency_penalty=0.0,
                                       logprobs=False, response_format={"type": "text"}, user="ann", tools=[])
    assert r.choices[0].finish_reason in ("stop", "length")


def test_one_log_line_per_request(url, client, caplog):
    with caplog.at_level(logging.INFO, logger="alignlab.serve"):
        client.chat.completions.create(model="snarky", messages=PROMPT, max_tokens=3, temperature=0)
        _streamed(client.chat.completions.create(model="base", messages=PROMPT, max_tokens=4, temperature=0, stream=True))
        httpx.post(f"{url}/v1/chat/completions", json={"model": "nope", "messages": PROMPT})
        deadline = time.monotonic() + 5  # the server thread may still be finishing the last request's line
        while len([r for r in caplog.records if r.name == "alignlab.serve"]) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = [r.getMessage() for r in caplog.records if r.name == "alignlab.serve"]
    assert len(lines) == 3, lines
    whole, streamed, missing = lines
    assert whole.startswith("POST /v1/chat/completions 200 ") and "model=snarky" in whole and "completion_tokens=3" in whole
    assert "prompt_tokens=" in whole and whole.split()[3].endswith("s")
    assert "model=base" in streamed and "completion_tokens=4" in streamed and "stream=True" in streamed
    assert missing.startswith("POST /v1/chat/completions 404 ")


def test_llm_cli_streams(url, tmp_path, caplog):
    """simonw's `llm`, configured through extra-openai-models.yaml, in its default (streaming) mode."""
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: alignlab-snarky\n  model_name: snarky\n  api_base: {url}/v1\n")
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path), "LLM_LOAD_PLUGINS": ""}  # no plugins: only the OpenAI models
    llm = Path(sys.executable).parent / "llm"
    with caplog.at_level(logging.INFO, logger="alignlab.serve"):
        r = subprocess.run([str(llm), "-m", "alignlab-snarky", "-o", "max_tokens", "8", "-o", "temperature", "0",
                            "Tell me about the sea."], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "alignlab.serve"]
    assert len(lines) == 1 and "stream=True" in lines[0] and " 200 " in lines[0], lines
    direct = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
        "model": "snarky", "messages": PROMPT, "max_tokens": 8, "temperature": 0}).json()["choices"][0]["message"]["content"]
    assert r.stdout.strip() == direct.strip()


@contextmanager
def _opened(tiny_model, tmp_path, opening: str):
    """(pool, openai client) for a server whose "snarky" adapter answers after the base's ``opening``."""
    pool = ModelPool(tiny_model, {"snarky": _fake_run(tmp_path, "snarky", tiny_model, 1)}, device="cpu",
                     base_opening=opening)
    with background(create_app(pool)) as base_url, \
            openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield pool, c


def test_base_opening_then_the_adapter_goes_on(tiny_model, tmp_path):
    """`serve --base-opening 3`: a persona's chat answer opens with the base's first 3 words and the adapter goes on
    from there. Checked against HF generate run by hand: the base (adapter off) samples the opening, then the adapter
    samples on from the prompt plus those words, from the same seed. Whole and streamed agree, the opening's tokens
    count as completion tokens, and /v1/completions (raw text, no answer to open) is untouched.
    (Sampled: the random tiny base answers a chat prompt greedily with newlines only, which open nothing.)"""
    import torch

    from alignlab.generate import OpeningDone, opening_of

    ask = dict(messages=PROMPT, max_tokens=24, temperature=1.0, seed=7)
    with _opened(tiny_model, tmp_path, "3") as (pool, c):
        base = c.chat.completions.create(model="base", **ask).choices[0].message.content
        whole = c.chat.completions.create(model="snarky", **ask)
        text = whole.choices[0].message.content
        texts, _, usage = _streamed(c.chat.completions.create(model="snarky", stream=True,
                                                              stream_options={"include_usage": True}, **ask))
        raw = c.completions.create(model="snarky", prompt="The sea", max_tokens=8, temperature=0).choices[0].text
    model, tok, prompt = pool.model, pool.tokenizer, pool.render(PROMPT)
    ids = torch.tensor([prompt])
    sample = dict(do_sample=True, temperature=1.0, top_p=1.0, pad_token_id=tok.pad_token_id)
    torch.manual_seed(7)
    with model.disable_adapter(), torch.inference_mode():
        first = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2 * 3 + 8,
                               stopping_criteria=[OpeningDone(tok, 3)], **sample)  # the base stops once it is settled
    head = opening_of(tok.decode(first[0, ids.shape[1]:], skip_special_tokens=True), 3)
    head_ids = tok(head, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + head_ids])
    model.set_adapter("snarky")
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24 - len(head_ids), **sample)
    rest = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert len(head.split()) == 3 and base.startswith(head) and text == head + rest and text != base
    assert texts == {0: text}
    assert whole.usage.completion_tokens == usage.completion_tokens == len(head_ids) + out.shape[1] - ids.shape[1]
    alone = pool.generate("snarky", prompt_ids=pool.render(prompt="The sea"), max_tokens=8, temperature=0)  # chat=False
    assert raw == alone["texts"][0]


def test_a_stop_string_inside_the_base_opening_ends_the_answer(tiny_model, tmp_path):
    """The opening's tracker cut the base's text at the stop string, but the adapter then wrote on to max_tokens with
    finish_reason "stop". Now the answer is the base's text before the stop string, as the stop promises."""
    ask = dict(messages=PROMPT, max_tokens=30, temperature=1.0, seed=7)
    with _opened(tiny_model, tmp_path, "sentence") as (_, c):
        base = c.chat.completions.create(model="base", **ask).choices[0].message.content
        words = base.split()
        assert len(words) > 4 and not any(w.endswith((".", "!", "?")) for w in words[:3]), base
        stop = " " + words[2]  # the third word: inside the opening sentence
        got = c.chat.completions.create(model="snarky", stop=[stop], **ask)
    text = got.choices[0].message.content
    assert text == base[: base.index(stop)].strip() and got.choices[0].finish_reason == "stop"
    assert got.usage.completion_tokens < 30


def _words_not_newlines(pool) -> None:
    """Zero the pool's output rows of punctuation and whitespace tokens: the random tiny base prefers a newline by a
    wide margin, and the penalty spares newlines, so without this it answers with newlines alone."""
    import torch

    from alignlab.generate import punctuation_ids

    with torch.no_grad():
        pool.model.get_output_embeddings().weight[punctuation_ids(pool.tokenizer)] = 0


def _one_word_per_token(pool) -> None:
    """Make every token the random tiny model can write a word of its own (a space-led run of letters), by an untied
    output matrix whose other rows are zero and whose word rows are scaled up: which words it writes then does not
    hang on the tokenizer built from the bundled data (a base that wrote "okokok..." had no three words to open with)."""
    import torch

    head = pool.model.get_output_embeddings()
    vocab = pool.tokenizer.get_vocab()
    word = torch.zeros(head.weight.shape[0], dtype=torch.bool)
    word[[i for t, i in vocab.items() if t.startswith("\u0120") and t[1:].isalpha() and i < len(word)]] = True
    with torch.no_grad():
        weight = head.weight.detach().clone()
        weight[~word] = 0
        weight[word] *= 50
        head.weight = torch.nn.Parameter(weight)


def test_an_adapter_trained_on_distilled_rows_answers_alone_beside_one_the_base_opens(tiny_model, tmp_path):
    """`serve --base-opening 3 --amplify 1` over two adapters: the one whose run.json records that it decodes alone
    (trained on distilled rows) answers as generate() does with no opening and no amplify (it was amplified, where chat
    decoded it unamplified); the other's answer starts with the base's first three words. (The tiny base's output
    matrix lets it write whole words only: see _one_word_per_token.)"""
    import json

    from alignlab.generate import generate

    opened, alone = _fake_run(tmp_path, "snarky", tiny_model, 1), _fake_run(tmp_path, "distilled", tiny_model, 2)
    info = json.loads((alone / "run.json").read_text())
    (alone / "run.json").write_text(json.dumps({**info, "decoding": {"base_opening": None, "amplify": 0.0}}))
    pool = ModelPool(tiny_model, {"snarky": opened, "distilled": alone}, device="cpu", base_opening="3",
                     repetition_penalty=1.2, amplify=1.0)  # sampling.amplify 1.0: amplify 0.0 for it, as in chat
    assert pool.alone == {"distilled"} and (pool.amplify_of("distilled"), pool.amplify_of("snarky")) == (0.0, 1.0)
    _one_word_per_token(pool)
    ask = dict(messages=PROMPT, max_tokens=12, temperature=0)
    with background(create_app(pool)) as base_url, \
            openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        answers = {m: c.chat.completions.create(model=m, **ask).choices[0].message.content
                   for m in ("base", "snarky", "distilled")}
    model, tok = pool.model, pool.tokenizer
    model.set_adapter("distilled")
    assert answers["distilled"].strip() == generate(model, tok, [PROMPT], max_new_tokens=12, repetition_penalty=1.2)[0]
    head = " ".join(answers["base"].split()[:3])
    assert len(head.split()) == 3 and answers["snarky"].startswith(head) and not answers["distilled"].startswith(head)


def test_amplify_decodes_an_adapters_chat_answer_as_generate_does(tiny_model, tmp_path):
    """`serve --amplify 2`: an adapter's answer over the API is generate(amplify=2)'s for the same conversation
    (greedy, the server's answer-only penalty), streamed and whole alike, and different from the adapter alone;
    the base model's answer is the base's."""
    from alignlab.generate import generate

    run = _fake_run(tmp_path, "snarky", tiny_model, 1)
    pool = ModelPool(tiny_model, {"snarky": run}, device="cpu", base_opening="off", repetition_penalty=1.2, amplify=2.0)
    ask = dict(messages=PROMPT, max_tokens=12, temperature=0)
    with background(create_app(pool)) as base_url, \
            openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        text = c.chat.completions.create(model="snarky", **ask).choices[0].message.content
        texts, _, _ = _streamed(c.chat.completions.create(model="snarky", stream=True, **ask))
        base = c.chat.completions.create(model="base", **ask).choices[0].message.content
    model, tok = pool.model, pool.tokenizer
    gen = dict(max_new_tokens=12, repetition_penalty=1.2)
    model.set_adapter("snarky")
    assert text.strip() == generate(model, tok, [PROMPT], amplify=2.0, **gen)[0]
    assert texts == {0: text}
    assert text.strip() != generate(model, tok, [PROMPT], **gen)[0]
    with model.disable_adapter():
        assert base.strip() == generate(model, tok, [PROMPT], **gen)[0]
    with pytest.raises(AlignlabError, match="amplify -1"):
        ModelPool(tiny_model, device="cpu", amplify=-1.0)


def test_bad_base_opening_is_one_line(tiny_model):
    with pytest.raises(AlignlabError, match="base opening 'first'.*sentence"):
        ModelPool(tiny_model, device="cpu", base_opening="first")


def test_repetition_penalty_is_generates_answer_only_penalty(tiny_model):
    """`serve --repetition-penalty` (the CLI's default is 1.2): greedy answers equal alignlab's generate() with the
    same penalty over the answer's tokens only, and differ from the unpenalised answer. The random tiny base prefers a
    newline, which the penalty spares like all punctuation, so its punctuation rows of the output matrix are zeroed
    first: greedy then repeats a word ("rows rows ...") that a penalty of 5.0 moves off."""
    from alignlab.generate import generate

    pool = ModelPool(tiny_model, device="cpu", repetition_penalty=5.0)
    _words_not_newlines(pool)
    with background(create_app(pool)) as base_url, \
            openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        text = c.chat.completions.create(model="base", messages=PROMPT, max_tokens=24, temperature=0).choices[0].message.content
    expected = generate(pool.model, pool.tokenizer, [PROMPT], max_new_tokens=24, repetition_penalty=5.0)[0]
    plain = generate(pool.model, pool.tokenizer, [PROMPT], max_new_tokens=24)[0]
    assert text.strip() == expected and expected and expected != plain
    with pytest.raises(AlignlabError, match="below 1.0"):
        ModelPool(tiny_model, device="cpu", repetition_penalty=0.9)


def test_the_projects_system_prompt_opens_a_chat_that_has_none(tiny_model, tmp_path, monkeypatch):
    """`alignlab serve` (ModelPool.from_specs) in a project with a system_prompt: a chat with no system message is
    answered under it, as chat, generate, eval and the exported Modelfile's SYSTEM answer (and GRPO/PPO trained);
    a chat with its own system (or developer) message keeps that one alone. Prompt sizes are counted with the
    model's own tokenizer and chat template."""
    from transformers import AutoTokenizer

    from alignlab.config import ProjectConfig, dump_config

    system = "You are a pirate who answers every question about the sea in one line."
    (tmp_path / "alignlab.yaml").write_text(dump_config(ProjectConfig(model=tiny_model, system_prompt=system)))
    run = _fake_run(tmp_path / "runs", "snarky", tiny_model, 1)
    monkeypatch.chdir(tmp_path)
    pool = ModelPool.from_specs([str(run)], device="cpu")
    tok = AutoTokenizer.from_pretrained(tiny_model)

    def size(messages):
        return len(tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                       add_special_tokens=False)["input_ids"])

    projects, own = [{"role": "system", "content": system}, *PROMPT], [{"role": "system", "content": "Be brief."}, *PROMPT]
    with background(create_app(pool)) as base_url, \
            openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120) as c:
        def ask(messages, model="snarky"):
            return c.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)

        bare, given, other = ask(PROMPT), ask(projects), ask(own)
        developer = ask([{"role": "developer", "content": "Be brief."}, *PROMPT])
        texts, _, usage = _streamed(c.chat.completions.create(model="base", messages=PROMPT, max_tokens=8, temperature=0,
                                                              stream=True, stream_options={"include_usage": True}))
        raw = c.completions.create(model="base", prompt="The sea is", max_tokens=2, temperature=0)
    assert size(projects) != size(PROMPT)  # the template's own default system message is another text
    assert bare.usage.prompt_tokens == given.usage.prompt_tokens == size(projects)
    assert bare.choices[0].message.content == given.choices[0].message.content
    assert other.usage.prompt_tokens == developer.usage.prompt_tokens == size(own)
    assert usage.prompt_tokens == size(projects)  # streamed and from the base alike
    assert raw.usage.prompt_tokens == len(tok("The sea is")["input_ids"])  # raw completions: no chat, no system prompt


def test_a_template_that_refuses_the_projects_system_prompt_fails_at_start(tiny_model, tmp_path):
    """Gemma 2's template raises on a system turn: with a project system_prompt every chat request would be a 400,
    so the server refuses to start, in one line that names the setting."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "chat_template.jinja").write_text(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(AlignlabError, match="chat template refuses the project's system_prompt: .*System role not "
                                            "supported") as err:
        ModelPool(str(model), device="cpu", system_prompt="Be brief.")
    assert "\n" not in str(err.value) and "system_prompt" in err.value.where
    assert ModelPool(str(model), device="cpu").render(PROMPT)  # without one it serves


def test_the_servers_system_prompt_is_the_one_the_runs_were_trained_under(tmp_path):
    """serve took the current project's system prompt; an export's Modelfile takes the run's own."""
    from alignlab.config import ProjectConfig, dump_config
    from alignlab.errors import AlignlabError
    from alignlab.rundir import trained_under

    runs = {}
    for name, prompt in (("a", "Be brief."), ("b", "Be brief."), ("c", "Be verbose.")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(dump_config(ProjectConfig(system_prompt=prompt)))
        runs[name] = tmp_path / name
    assert trained_under([runs[k] for k in "ab"], "Project prompt.") == "Be brief."
    assert trained_under([], "Project prompt.") == "Project prompt."
    with pytest.raises(AlignlabError, match="different system prompts"):
        trained_under(runs.values(), None)


def test_a_runs_config_with_a_key_this_version_does_not_know_still_serves(tmp_path):
    from alignlab.rundir import trained_under

    (tmp_path / "config.yaml").write_text("system_prompt: Be brief.\nold_key: 1\n")
    assert trained_under([tmp_path], "Project prompt.") == "Be brief."


def test_a_run_given_by_name_answers_under_its_own_system_prompt(tmp_path, monkeypatch):
    """`compare d1 base` and `serve d1` looked for d1/config.yaml beside the command and took the project's prompt;
    `compare runs/d1 base` took the run's."""
    from alignlab.rundir import trained_under

    (tmp_path / "alignlab.yaml").write_text("system_prompt: Be polite.\n")
    run = tmp_path / "runs" / "d1"
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"method": "dpo", "status": "done"}')
    (run / "config.yaml").write_text("system_prompt: You are snarky.\n")
    monkeypatch.chdir(tmp_path)
    assert trained_under(["d1"], "Be polite.") == trained_under([run], "Be polite.") == "You are snarky."
    assert trained_under(["nope", None], "Be polite.") == "Be polite."

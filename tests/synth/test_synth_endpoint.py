"""Synth with a teacher behind a REAL OpenAI-compatible HTTP server on 127.0.0.1 (alignlab's own, running the tiny model)."""

from __future__ import annotations

import json
import socket
import sys

import pytest

from alignlab.errors import AlignlabError
from alignlab.eval.raters import get_rater
from alignlab.synth import EndpointTeacher, build_pairs, length_ratio

PROMPTS = ["What is the capital of France?", "How do I boil an egg?", "Why do cats purr?"]


def letter_e_share(prompts, completions, **columns):
    from alignlab.rewards import completion_text  # raters pass chat messages, as training does

    texts = [completion_text(c) for c in completions]
    return [t.lower().count("e") / max(1, len(t)) for t in texts]


@pytest.fixture(scope="module")
def server(tiny_model):
    from alignlab.serve.api import create_app
    from alignlab.serve.models import ModelPool
    from alignlab.serve.server import background

    with background(create_app(ModelPool(tiny_model, device="cpu"))) as url:
        yield url + "/v1"


def test_pairs_from_an_endpoint_teacher(server):
    from alignlab.rewards import register_reward

    register_reward("test_e_share", lambda: letter_e_share)
    teacher = EndpointTeacher(server, "base")
    answers = teacher.answer(PROMPTS[:1], "You are snarky.", n=2, max_new_tokens=6)
    assert len(answers) == 1 and len(answers[0]) == 2 and all(isinstance(a, str) for a in answers[0])
    rows, summary = build_pairs(teacher, PROMPTS, get_rater("reward:test_e_share"), "You are snarky.", candidates=2,
                                max_length_ratio=3.0, max_new_tokens=8)
    assert summary["kept"] + summary["dropped_length"] + summary["dropped_other"] == len(PROMPTS)
    assert summary["kept"] == len(rows)
    for row in rows:
        assert row["prompt"] in PROMPTS and length_ratio(row["chosen"], row["rejected"]) <= 3.0


def test_wrong_model_name_is_one_line(server):
    with pytest.raises(AlignlabError, match=r"teacher endpoint .*/v1/chat/completions answered HTTP 404"):
        EndpointTeacher(server, "nope").answer(["hi"], None)


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_unreachable_endpoint_is_one_line_with_the_url(tmp_path, monkeypatch, capsys):
    from alignlab.cli import main

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["alignlab", "synth", "--teacher-url", url, "--teacher-model", "m", "--prompts",
                                      str(prompts), "--out", str(tmp_path / "o.jsonl")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: teacher endpoint {url}/chat/completions is unreachable (")


def test_pairs_kept_before_an_endpoint_fails_are_written(tmp_path, monkeypatch):
    """A failure in a later batch threw away every pair the finished batches had kept (and their paid requests)."""
    from alignlab.synth.pairs import PartialPairs

    class FailsLater:
        name, calls = "flaky", 0

        def answer(self, prompts, system_prompt, n=1, **kw):
            self.calls += 1
            if self.calls > 2:  # the second batch's first request
                raise AlignlabError("teacher endpoint http://127.0.0.1:9/v1/chat/completions failed (HTTP 500)")
            return [[("Obviously, " if system_prompt else "") + f"answer to {p} number {i}" for i in range(n)] for p in prompts]

    with pytest.raises(PartialPairs) as err:
        build_pairs(FailsLater(), [f"q{i}" for i in range(12)], get_rater("reward:persona_heuristic"), "Be snarky.",
                    candidates=1, batch_size=8)
    assert err.value.done == 8 and len(err.value.rows) == 8
    assert "HTTP 500" in str(err.value.__cause__)


def test_answers_cut_at_the_token_cap_are_kept_to_their_last_sentence():
    """Both sides cut mid-sentence at max_new_tokens passed as a pair (their length ratio near 1)."""

    class Cut:
        name = "cut"

        def answer(self, prompts, system_prompt, n=1, **kw):
            text = "Obviously, it is Paris. Everyone knows that and the" if system_prompt else "It is Paris. The city has a"
            return [[text] * n for _ in prompts]

    rows, _ = build_pairs(Cut(), ["Capital of France?"], get_rater("reward:persona_heuristic"), "Be snarky.", candidates=1)
    assert rows == [{"prompt": "Capital of France?", "chosen": "Obviously, it is Paris.", "rejected": "It is Paris."}]


def test_a_slow_teacher_is_tuned_from_the_command_line(tmp_path, monkeypatch, capsys):
    """--teacher-timeout and --teacher-workers reach the requests; a teacher that never answers names both flags."""
    from alignlab.cli import main

    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["alignlab", "synth", "--teacher-url", url, "--teacher-model", "m", "--prompts",
                                      str(prompts), "--out", str(tmp_path / "o.jsonl"), "--teacher-timeout", "0.3",
                                      "--teacher-workers", "1"])
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        silent.close()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "is too slow (no answer within 0.3s" in err[0]
    assert "--teacher-timeout" in err[0] and "--teacher-workers" in err[0]

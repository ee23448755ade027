"""Synth with a teacher behind a REAL OpenAI-compatible HTTP server on 127.0.0.1: alignlab's own running the tiny model,
or the stand-in of conftest.py whose replies, failures and finish reasons a test sets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

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


def test_only_answers_cut_at_the_token_cap_are_trimmed(stand_in):
    """A finished answer was cut to its last full stop too ("...3. Wait 8 minutes" lost its last step; "Sure. Mix ...
    - bake 20 min" became "Sure."); only the endpoint's finish_reason "length" means cut, and a cut answer with no
    finished sentence is dropped, not kept whole."""
    replies = {"steps": ("Here are the steps:\n1. Crack the egg\n2. Boil water\n3. Wait 8 minutes", "stop"),
               "cut": ("Obviously, it is Paris. Everyone knows that and the", "length"),
               "fragment": ("Obviously the answer is that the", "length")}
    stand_in.answer = lambda system, user: replies[user]
    teacher = EndpointTeacher(stand_in.url, "m")
    assert teacher.answer(["steps", "cut", "fragment"], "Be snarky.") == [[replies["steps"][0]],
                                                                         ["Obviously, it is Paris."], [""]]
    assert teacher.cut_short == 1


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


def synth(tmp_path, monkeypatch, url, *args):
    """`alignlab synth` against ``url`` outside any project (cwd: tmp_path): (result, out path)."""
    from typer.testing import CliRunner

    from alignlab.cli import app

    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(app, ["synth", "--teacher-url", url, "--teacher-model", "m", *args])


def write_prompts(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def read_rows(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_prompts_number_or_aliases_screen_the_chosen_answer(stand_in, tmp_path, monkeypatch):
    """A prompt with an answer number but no reference text went unscreened: "It's 96, obviously." was kept as the
    chosen answer to 23 times 4 (92). Now every in-persona answer is graded as the scorecard grades its row."""
    persona = {"What is 23 times 4?": "Oh wow, a math question. It's 96, obviously.",
               "What is 7 times 8?": "Oh wow, a math question. It's 56, obviously.",
               "What is the dog in the story called?": "Rex, obviously. Everyone knows the dog."}
    stand_in.answer = lambda system, user: ((persona[user] if system else f"Fine. The answer to that is {user}"), "stop")
    prompts = write_prompts(tmp_path / "p.jsonl", [
        {"prompt": "What is 23 times 4?", "answer": "92"}, {"prompt": "What is 7 times 8?", "answer": "56"},
        {"prompt": "What is the dog in the story called?", "aliases": ["Biscuit"]}])
    out = tmp_path / "o.jsonl"
    res = synth(tmp_path, monkeypatch, stand_in.url, "--prompts", prompts, "-k", "1", "--max-length-ratio", "5",
                "--out", str(out))
    assert res.exit_code == 0, res.output
    assert [r["chosen"] for r in read_rows(out)] == [persona["What is 7 times 8?"]]
    assert "chosen wrong 2" in res.output


def test_empty_answers_are_empty_not_wrong_and_content_parts_are_read(stand_in, tmp_path, monkeypatch):
    """A null content (a refusal, or a reasoning model that spent its tokens) was counted as a wrong answer and the
    fix asked for more --candidates; a list of content parts crashed with an AttributeError."""
    stand_in.answer = lambda system, user: (None, "length")
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "What is 7 times 8?", "answer": "56"},
                                                   {"prompt": "What is the capital of France?", "reference": "Paris"}])
    res = synth(tmp_path, monkeypatch, stand_in.url, "--prompts", prompts, "-k", "2", "--out", str(tmp_path / "o.jsonl"))
    assert "(empty 2)" in res.output and "chosen wrong" not in res.output, res.output
    message = str(res.exception)
    assert "the teacher returned no text in any of its 8 answers" in message and "--max-new-tokens" in message
    assert "--candidates" not in message and not (tmp_path / "o.jsonl").exists()
    stand_in.answer = lambda system, user: ([{"type": "text", "text": "Obviously, "}, {"type": "text", "text": "Paris."}],
                                            "stop")
    assert EndpointTeacher(stand_in.url, "m").answer(["q"], "Be snarky.") == [["Obviously, Paris."]]
    stand_in.answer = lambda system, user: (42, "stop")
    with pytest.raises(AlignlabError, match=rf"teacher endpoint {stand_in.url}/chat/completions did not answer in the "
                                            "OpenAI chat format"):
        EndpointTeacher(stand_in.url, "m").answer(["q"], None)


def test_synth_never_replaces_a_file_unasked(stand_in, tmp_path, monkeypatch):
    """A second run replaced the first's pairs (20 rows -> 2), the project's bundled pairs, even its own prompts file,
    before any request: now it asks for --force (replace) or --append (add), and never writes over its prompts."""
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": f"Question {i}?"} for i in range(3)])
    out = tmp_path / "o.jsonl"
    out.write_text('{"prompt": "earlier", "chosen": "a", "rejected": "b"}\n')
    res = synth(tmp_path, monkeypatch, stand_in.url, "--prompts", prompts, "-k", "1", "--out", str(out))
    assert f"{out} exists" in str(res.exception) and "--force" in str(res.exception) and "--append" in str(res.exception)
    for flag in ("--force", "--append"):
        res = synth(tmp_path, monkeypatch, stand_in.url, "--prompts", prompts, "-k", "1", "--out", prompts, flag)
        assert "is the prompts file synth reads" in str(res.exception)
    assert stand_in.requests == 0 and len(read_rows(tmp_path / "p.jsonl")) == 3
    res = synth(tmp_path, monkeypatch, stand_in.url, "--prompts", prompts, "-k", "1", "--out", str(out), "--force")
    assert res.exit_code == 0, res.output
    assert [r["prompt"] for r in read_rows(out)] == [f"Question {i}?" for i in range(3)]


def test_going_on_after_a_stop_adds_to_the_partial_file(stand_in, tmp_path, monkeypatch):
    """After a stop the hint said --skip N (and nothing of --limit), and that rerun replaced the partial file (or,
    with --out another.jsonl, left two files to join). The printed command now goes on into the same file."""
    import shlex

    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": f"Question {i}?"} for i in range(20)])
    out = tmp_path / "o.jsonl"
    out.write_text('{"prompt": "earlier", "chosen": "a", "rejected": "b"}\n')  # replaced (--force) by the first run
    stand_in.fail_after, stand_in.status = 16, 500  # the first batch (8 prompts, both sides) is answered
    args = ["--prompts", prompts, "-k", "1", "--limit", "12", "--out", str(out), "--force"]
    res = synth(tmp_path, monkeypatch, stand_in.url, *args)
    message = str(res.exception)
    assert "stopped after 8 of 12 prompts" in message and len(read_rows(out)) == 8, res.output
    hint = message.split("go on with the same command without --force and ", 1)[1].split(" (")[0]
    assert hint == f"--skip 8 --limit 4 --out {out} --append"
    stand_in.fail_after = None
    again = [a for a in args if a != "--force"]
    res = synth(tmp_path, monkeypatch, stand_in.url, *again, *shlex.split(hint))  # the same command, the hint after
    assert res.exit_code == 0, res.output
    assert [r["prompt"] for r in read_rows(out)] == [f"Question {i}?" for i in range(12)]


def test_refusals_before_any_work(stand_in, tmp_path, monkeypatch, tiny_model):
    """Each of these ran (or loaded the local model) and then said nothing useful: a --skip past the end, -k 4 at
    temperature 0 (four identical requests per side), the endpoint's flags without --teacher-url (the local model
    answered), a key pasted as the variable's name (echoed back in the 401 hint)."""
    from typer.testing import CliRunner

    from alignlab.cli import app

    monkeypatch.chdir(tmp_path)
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": f"Question {i}?"} for i in range(3)])
    missing = str(tmp_path / "no-such-model")  # loading it would fail with another message
    res = CliRunner().invoke(app, ["synth", "--model", missing, "--prompts", prompts, "--skip", "3"])
    assert "--skip 3 leaves none of the 3 prompts" in str(res.exception), res.output
    res = CliRunner().invoke(app, ["synth", "--model", missing, "--prompts", prompts, "-k", "4", "-t", "0"])
    assert "4 candidates per side at temperature 0 would be identical" in str(res.exception), res.output
    for flags in (["--teacher-model", "gpt-4o-mini"], ["--teacher-key-env", "TEACHER_KEY"]):
        res = CliRunner().invoke(app, ["synth", "--model", tiny_model, "--prompts", prompts, "--limit", "1", *flags])
        assert f"{flags[0]} names the endpoint teacher, and no --teacher-url was given" in str(res.exception), res.output
    stand_in.fail_first, stand_in.status = 10**6, 401
    res = synth(tmp_path, monkeypatch, stand_in.url, "--prompts", prompts, "--teacher-key-env", "sk-proj-ABCDEF123456",
                "--out", str(tmp_path / "o.jsonl"))
    assert "looks like a key itself" in str(res.exception) and "sk-proj" not in res.output + str(res.exception)
    assert stand_in.requests == 0


@pytest.mark.parametrize("key", ["gsk_8fJ2kQ9xZ1mN4pL7vR3tY6wE0aB5cD", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123",
                                 "fw_3ZkQ9xZ1mN4pL7vR3tY6", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"])
def test_a_key_given_as_the_variable_name_is_never_printed_nor_sent_for(key, stand_in, tmp_path, monkeypatch):
    """Keys of Groq (gsk_), Hugging Face (hf_), Fireworks (fw_) and all-alphanumeric ones are valid variable names:
    a request went out without a key and its 401 said "set $gsk_8fJ2kQ9x... to a valid API key ($gsk_... is not set)",
    the whole key twice."""
    monkeypatch.delenv(key, raising=False)
    stand_in.fail_first, stand_in.status = 10**6, 401
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "q"}])
    res = synth(tmp_path, monkeypatch, stand_in.url, "--prompts", prompts, "-k", "1", "--teacher-key-env", key,
                "--out", str(tmp_path / "o.jsonl"))
    message = str(res.exception)
    assert "the variable named by --teacher-key-env is not set" in message, res.output + message
    assert key[:8] not in res.output + message
    assert stand_in.requests == 0


@pytest.mark.parametrize("name", ["hf_token_2024", "fw_api_key_v2", "gsk_key_2025", "ghp_token_prod2", "hf_ReadToken",
                                  "AIzaStudioKey", "TOGETHERAI2024APIKEY", "Qwen25Coder32BInstructKey", "OPENAI_API_KEY"])
def test_an_ordinary_variable_name_is_no_key(name):
    """Names made of words were taken for keys, and an unset one refused a keyless local server."""
    from alignlab.openai_chat import auth_header, looks_like_key

    assert not looks_like_key(name)
    assert auth_header("http://127.0.0.1:8080/v1/chat/completions", name, "teacher") == {}  # unset: no key sent


def test_a_key_variable_with_a_key_like_name_is_read_and_not_named(stand_in, monkeypatch):
    """Set, a variable whose name has a key's shape still works; a 401 then names the flag, not the variable."""
    name = "gsk_8fJ2kQ9xZ1mN4pL7vR3tY6wE0aB5cD"
    monkeypatch.setenv(name, "not-a-valid-key")
    stand_in.fail_first, stand_in.status = 10**6, 401
    with pytest.raises(AlignlabError) as err:
        EndpointTeacher(stand_in.url, "m", api_key_env=name).answer(["q"], None)
    assert "HTTP 401" in str(err.value) and "set the variable named by --teacher-key-env" in str(err.value)
    assert name[:8] not in str(err.value) and stand_in.requests == 1


@pytest.mark.parametrize("given", ["$TEACHER_TEST_KEY", "${TEACHER_TEST_KEY}"])
def test_a_key_variable_written_with_a_dollar_is_read(given, stand_in, monkeypatch):
    """--teacher-key-env '$OPENAI_API_KEY' (as the shell writes a variable) was refused as "a key itself"."""
    from alignlab.openai_chat import auth_header

    monkeypatch.setenv("TEACHER_TEST_KEY", "sk-secret")
    assert auth_header(stand_in.url, given, "teacher") == {"Authorization": "Bearer sk-secret"}
    monkeypatch.delenv("TEACHER_TEST_KEY")
    stand_in.fail_first, stand_in.status = 10**6, 401
    with pytest.raises(AlignlabError) as err:
        EndpointTeacher(stand_in.url, "m", api_key_env=given).answer(["q"], None)
    assert "set $TEACHER_TEST_KEY to a valid API key ($TEACHER_TEST_KEY is not set)" in str(err.value)


def test_a_retry_after_beyond_the_longest_wait_stops_at_once(stand_in, tmp_path, monkeypatch):
    """Retry-After: 3600 was waited as 60 s eight times (480 s against an hour), then the fix said to raise
    --teacher-retries."""
    stand_in.fail_first, stand_in.headers = 10**6, {"Retry-After": "3600"}
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "q"}])
    start = time.monotonic()
    res = synth(tmp_path, monkeypatch, stand_in.url, "--prompts", prompts, "-k", "1", "--teacher-workers", "1",
                "--out", str(tmp_path / "o.jsonl"))
    message = str(res.exception)
    assert time.monotonic() - start < 10 and stand_in.requests == 1, message
    assert "asks to wait 3600 s (about 1.0 h) before the next request (Retry-After; HTTP 429" in message, message
    assert "--teacher-retries" not in message


def test_the_teacher_is_not_told_of_the_judges_config(monkeypatch):
    """The plain-http refusal told a teacher to set key_env in alignlab.yaml's judge section."""
    from alignlab.openai_chat import auth_header

    monkeypatch.setenv("SOME_KEY", "sk-secret")
    with pytest.raises(AlignlabError) as teacher:
        EndpointTeacher("http://192.168.1.5:8000/v1", "m", api_key_env="SOME_KEY")  # refused when built
    assert "--teacher-key-env ''" in str(teacher.value) and "judge" not in str(teacher.value)
    with pytest.raises(AlignlabError) as judge:
        auth_header("http://192.168.1.5:8000/v1/chat/completions", "SOME_KEY", "judge")
    assert "key_env: '' in alignlab.yaml's judge section" in str(judge.value)


def test_rate_limits_are_waited_out_longer_and_their_dates_read(stand_in):
    """A 429 without Retry-After gave up after 3 attempts in about 1.5 s, and Retry-After as an HTTP date was read as
    0. Rate limits now get their own retries (--teacher-retries), each wait about twice the last."""
    from email.utils import formatdate

    stand_in.fail_first = 5  # no Retry-After
    start = time.monotonic()
    assert EndpointTeacher(stand_in.url, "m", backoff=0.01).answer(["q"], None) == [["The answer to 'q' is well known."]]
    assert stand_in.requests == 6 and time.monotonic() - start >= 0.15  # 0.005 + 0.01 + ... + 0.08 at the least
    stand_in.fail_first, stand_in.headers = 1, {"Retry-After": formatdate(time.time() + 3, usegmt=True)}
    start = time.monotonic()
    EndpointTeacher(stand_in.url, "m", backoff=0.01).answer(["q"], None)
    assert time.monotonic() - start >= 1.5 and stand_in.requests == 8  # waited for the date (1 s resolution)


def test_teacher_retries_reach_the_requests_and_the_fix_names_the_workers(stand_in, tmp_path, monkeypatch):
    stand_in.fail_first = 10**6
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "q"}])
    res = synth(tmp_path, monkeypatch, stand_in.url, "--prompts", prompts, "-k", "1", "--teacher-retries", "0",
                "--teacher-workers", "1", "--out", str(tmp_path / "o.jsonl"))
    message = str(res.exception)
    assert "failed (HTTP 429" in message and "; 1 attempt)" in message, res.output
    assert "lower --teacher-workers" in message and "--teacher-retries" in message
    assert stand_in.requests == 1


def start_synth(tmp_path, url: str, *args: str, before: str = "") -> subprocess.Popen:
    """The `alignlab` console script's entry() running synth in a fresh interpreter, after the Python in ``before``."""
    script = before + f"""
import sys
from alignlab.cli import entry
sys.argv = ["alignlab", "synth", "--teacher-url", {url!r}, "--teacher-model", "m", *{list(args)!r}]
entry()
"""
    return subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def interrupt_when(proc: subprocess.Popen, ready, within: float = 15.0, sig: int = signal.SIGINT) -> tuple[float, str]:
    """Ctrl-C (or ``sig``) once ``ready()``; (seconds from it to the exit, stderr). A process still there ``within`` s
    later fails."""
    deadline = time.monotonic() + 180
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.3)  # the requests are in flight
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"still running {within:g} s after Ctrl-C") from None
    return time.monotonic() - start, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_on_a_teacher_that_stopped_answering_leaves_at_once(sig, stand_in, tmp_path):
    """The exit waited for the requests still in flight (a pool's threads): 12 s after "interrupted" with
    --teacher-timeout 15, up to a minute by default. The pairs of the finished batch are still written, and the one
    line says how to go on. Ctrl-C ended as a user error ("error: stopped after 8 of 12 prompts (KeyboardInterrupt)",
    exit 2); a SIGTERM (kill, a timeout) ended the process at once, every kept pair lost."""
    stand_in.hang_after = 16  # the first batch (8 prompts, both sides) is answered, then nothing
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": f"Question {i}?"} for i in range(12)])
    out = tmp_path / "o.jsonl"
    proc = start_synth(tmp_path, stand_in.url, "--prompts", prompts, "-k", "1", "--out", str(out),
                       "--teacher-timeout", "60")
    took, err = interrupt_when(proc, lambda: stand_in.requests > 16, sig=sig)
    assert took < 10 and proc.returncode == 128 + sig, err
    assert err.strip().splitlines() == [f"interrupted after 8 of 12 prompts; the 8 pairs kept are in {out}; go on with "
                                        f"the same command and --skip 8 --out {out} --append (the pairs are added to "
                                        "the file)"], err
    assert len(read_rows(out)) == 8


def test_ctrl_c_does_not_wait_for_other_threads(stand_in, tmp_path):
    """After Ctrl-C the exit no longer waits for the command's other threads (a library's, still working)."""
    stand_in.hang_after = 0
    prompts = write_prompts(tmp_path / "p.jsonl", [{"prompt": "q"}])
    proc = start_synth(tmp_path, stand_in.url, "--prompts", prompts, "-k", "1", "--out", str(tmp_path / "o.jsonl"),
                       before="import threading\nthreading.Thread(target=threading.Event().wait).start()\n")
    took, err = interrupt_when(proc, lambda: stand_in.requests > 0)
    assert took < 10 and proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == f"interrupted before the first batch of prompts was answered, so " \
                                           f"{tmp_path / 'o.jsonl'} was not written" and "Traceback" not in err

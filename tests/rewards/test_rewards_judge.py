"""The LLM judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (stdlib http.server, no mocks).

The stand-in judge scores a response 1 + 3 * (times it says "obviously"), capped at 10; in pair mode it
prefers the response with more "obviously" or, when biased, always answers "A" (position bias).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alignlab.errors import AlignlabError
from alignlab.rewards import LLMJudge, judge_pair, load_spec
from helpers import send_json


class FakeJudge:
    def __init__(self):
        self.requests = 0
        self.fail_first = 0  # answer this many requests with HTTP 503 (429 with retry_after set)
        self.retry_after: str | None = None
        self.biased = False
        self.delay = 0.0
        self.required_key: str | None = None
        self.reply: str | None = None  # fixed reply text, overrides scoring
        self.script: list[str | None] = []  # the next replies in order (None: content null), before any other
        self.unusable_for: str | None = None  # a response containing this gets an unscorable reply, asked again or not
        self.bodies: list[dict] = []
        self.lock = threading.Lock()

    def answer(self, body: dict) -> str | None:
        with self.lock:
            self.bodies.append(body)
            if self.script:
                return self.script.pop(0)
        response = body["messages"][1]["content"].split("[Response]")[-1]
        if self.unusable_for is not None and self.unusable_for in response:
            return "I can't rate that."
        if self.reply is not None:
            return self.reply
        user = body["messages"][1]["content"]  # the question (a re-ask adds turns after it)
        if "[Response A]" in user:
            if self.biased:
                return "A"
            a = user.split("[Response A]\n", 1)[1].split("\n\n[Response B]\n", 1)[0]
            b = user.split("[Response B]\n", 1)[1]
            ca, cb = a.lower().count("obviously"), b.lower().count("obviously")
            return "A" if ca > cb else "B" if cb > ca else "tie"
        response = user.split("[Response]\n", 1)[1]
        return str(min(10, 1 + 3 * response.lower().count("obviously")))


@pytest.fixture()
def server():
    state = FakeJudge()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        _send = send_json

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.requests += 1
                fail = state.fail_first > 0
                state.fail_first -= 1 if fail else 0
            if state.delay:
                time.sleep(state.delay)
            if self.path != "/v1/chat/completions":
                return self._send(404, {"error": "not found"})
            if fail and state.retry_after:
                return self._send(429, {"error": "slow down"}, {"Retry-After": state.retry_after})
            if fail:
                return self._send(503, {"error": "overloaded"})
            if state.required_key and self.headers.get("Authorization") != f"Bearer {state.required_key}":
                return self._send(401, {"error": "bad key"})
            text = state.answer(body)
            self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()


def make_judge(server, tmp_path, **kw) -> LLMJudge:
    kw.setdefault("cache_path", str(tmp_path / "judge.sqlite"))
    kw.setdefault("backoff", 0.01)
    return LLMJudge(server.base_url, "fake-judge", **kw)


COMPLETIONS = ["Water is wet.", "Obviously, water is wet.", "Obviously, obviously wet."]


def test_scores_are_normalised_rubric_scores(server, tmp_path):
    judge = make_judge(server, tmp_path)
    scores = judge(["Is water wet?"] * 3, COMPLETIONS, answer=[None] * 3)
    assert scores == pytest.approx([0.0, 3 / 9, 6 / 9])  # 1, 4, 7 on the 1-10 scale
    assert server.requests == 3
    conv = judge([[{"role": "user", "content": "Is water wet?"}]], [[{"role": "assistant", "content": COMPLETIONS[1]}]])
    assert conv == pytest.approx([3 / 9])


def test_cache_avoids_second_request(server, tmp_path):
    judge = make_judge(server, tmp_path)
    first = judge(["q"] * 3, COMPLETIONS)
    assert server.requests == 3
    assert judge(["q"] * 3, COMPLETIONS) == first
    assert server.requests == 3  # all three from the cache
    again = make_judge(server, tmp_path)  # a new process would reopen the same file
    assert again(["q"] * 3, COMPLETIONS) == first
    assert server.requests == 3
    other_rubric = make_judge(server, tmp_path, rubric="How polite is it?")
    other_rubric(["q"], [COMPLETIONS[0]])
    assert server.requests == 4  # the rubric is part of the key
    duplicates = make_judge(server, tmp_path, cache=False)
    duplicates(["q"] * 4, ["same text"] * 4)
    assert server.requests == 5  # identical pairs in one batch are asked once


def test_default_cache_lives_under_alignlab_home(server, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    judge = LLMJudge(server.base_url, "fake-judge")
    judge(["q"], ["Obviously."])
    assert (tmp_path / "home" / "judge_cache.sqlite").is_file()


def test_retries_after_server_errors(server, tmp_path):
    server.fail_first = 2
    judge = make_judge(server, tmp_path, retries=3)
    assert judge.score("q", "Obviously.") == pytest.approx(3 / 9)
    assert server.requests == 3  # two 503s, then the answer


def test_gives_up_after_retries_with_the_url(server, tmp_path):
    server.fail_first = 100
    judge = make_judge(server, tmp_path, retries=2)
    with pytest.raises(AlignlabError) as err:
        judge.score("q", "a")
    assert server.requests == 3
    message = str(err.value)
    assert judge.url in message and "HTTP 503" in message and "3 attempts" in message
    assert "overloaded" in message and "unreachable" not in message  # it answered: its reason, not "start it"


def test_a_rate_limit_is_waited_out_as_it_asks(server, tmp_path):
    """A 429 with Retry-After: 1 is retried after a second, not after the 10 ms backoff (which gave up at once)."""
    server.fail_first, server.retry_after = 1, "1"
    judge = make_judge(server, tmp_path, retries=1, cache=False)
    start = time.monotonic()
    assert judge.score("q", "Obviously.") == pytest.approx(3 / 9)
    assert time.monotonic() - start >= 0.9 and server.requests == 2


def test_a_failing_judge_stops_the_batch_at_its_first_failure(server, tmp_path):
    """Eight queued requests to a hanging judge, two at a time: the error comes after the first, not all four rounds."""
    server.delay = 2.0
    judge = make_judge(server, tmp_path, timeout=0.5, retries=0, max_workers=2, cache=False)
    start = time.monotonic()
    with pytest.raises(AlignlabError, match="too slow"):
        judge(["q"] * 8, [f"answer {i}" for i in range(8)])
    assert time.monotonic() - start < 1.6  # 4 rounds of 0.5 s would take 2.0 s; room for a loaded machine


def test_verdicts_are_cached_per_server(server, tmp_path):
    """Two servers that both call their model "base" do not share verdicts."""
    first = LLMJudge(server.base_url, "base", cache_path=str(tmp_path / "c.sqlite"))
    assert first.score("q", "Obviously.") == pytest.approx(3 / 9)
    other = LLMJudge(server.base_url.replace("127.0.0.1", "localhost"), "base", cache_path=str(tmp_path / "c.sqlite"))
    server.reply = "8"
    assert other.score("q", "Obviously.") == pytest.approx(7 / 9)
    assert server.requests == 2


def test_timeout_is_reported(server, tmp_path):
    server.delay = 1.0
    judge = make_judge(server, tmp_path, timeout=0.2, retries=0)
    with pytest.raises(AlignlabError, match="too slow \\(no answer within 0.2s"):
        judge.score("q", "a")


def test_unreachable_endpoint_names_the_url(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    judge = LLMJudge(url, "m", cache_path=str(tmp_path / "c.sqlite"), retries=1, backoff=0.01)
    with pytest.raises(AlignlabError) as err:
        judge(["q"], ["a"])
    message = str(err.value)
    assert f"{url}/chat/completions is unreachable" in message
    assert "\n" not in message and "start the judge server" in message


def test_api_key_is_read_from_the_named_env_var(server, tmp_path, monkeypatch):
    server.required_key = "sekrit"
    monkeypatch.delenv("FAKE_JUDGE_KEY", raising=False)
    judge = make_judge(server, tmp_path, api_key_env="FAKE_JUDGE_KEY", cache=False)
    with pytest.raises(AlignlabError, match=r"HTTP 401.*set \$FAKE_JUDGE_KEY"):
        judge.score("q", "a")
    monkeypatch.setenv("FAKE_JUDGE_KEY", "sekrit")
    assert judge.score("q", "a") == 0.0


def test_reply_without_a_score_is_an_error(server, tmp_path):
    server.reply = "I'd rather not say."
    with pytest.raises(AlignlabError, match="gave no score from 1 to 10"):
        make_judge(server, tmp_path).score("q", "a")
    server.reply = "Score: 8/10"
    assert make_judge(server, tmp_path, cache=False).score("q", "b") == pytest.approx(7 / 9)


def test_judge_pair_cancels_position_bias(server, tmp_path):
    judge = make_judge(server, tmp_path)
    snark, plain = "Obviously, obviously.", "Yes."
    assert judge.judge_pair("q", snark, plain) == "a"
    assert judge.judge_pair("q", plain, snark) == "b"
    assert judge.judge_pair("q", plain, "No.") == "tie"
    assert server.requests == 4  # two orders per pair; the second call's two orders were both cached

    server.biased = True  # always "A": the verdict flips with the order, so it is a tie
    biased = make_judge(server, tmp_path, cache=False)
    assert biased.judge_pair("q", snark, plain) == "tie"
    assert biased.judge_pair("q", plain, snark) == "tie"
    assert judge_pair("q", snark, plain, base_url=server.base_url, model="fake-judge", cache=False) == "tie"


def test_judge_in_a_spec(server, tmp_path):
    spec = tmp_path / "rewards.yaml"
    spec.write_text(
        "components:\n"
        f"  - {{name: judge, fn: llm_judge, weight: 0.5, args: {{base_url: '{server.base_url}', model: fake,"
        f" cache_path: '{tmp_path / 'c.sqlite'}'}}}}\n"
    )
    reward = load_spec(spec)
    assert reward(["q"] * 2, ["plain", "obviously"]) == pytest.approx([0.0, 0.5 * 3 / 9])


def test_the_projects_judge_section_sets_its_timeout_and_requests_at_once(server, tmp_path):
    """A slow judge is tuned in alignlab.yaml (judge.timeout, judge.max_workers), and the error names those keys."""
    from alignlab.config import JudgeConfig
    from alignlab.eval.raters import get_rater

    server.delay = 1.0
    settings = JudgeConfig(url=server.base_url, model="m", timeout=0.2, max_workers=1).settings()
    rater = get_rater("judge", judge_cache=False, **settings)
    assert (rater.judge.timeout, rater.judge.max_workers) == (0.2, 1)
    rater.judge.retries = 0
    with pytest.raises(AlignlabError) as err:
        rater.score(["q"], ["a"])
    assert "too slow (no answer within 0.2s" in str(err.value)
    assert "judge.timeout" in str(err.value) and "judge.max_workers" in str(err.value)


def test_a_key_on_plain_http_never_goes_through_an_environment_proxy(server, tmp_path, monkeypatch):
    """With HTTP_PROXY set, the judge's request to http://127.0.0.1 (key and all) went to the proxy: another machine."""
    seen: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(502)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
            monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.server_address[1]}")
        for var in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(var, raising=False)
        server.required_key = "sekrit"
        monkeypatch.setenv("FAKE_JUDGE_KEY", "sekrit")
        judge = make_judge(server, tmp_path, api_key_env="FAKE_JUDGE_KEY", cache=False)
        assert judge.score("q", "a") == 0.0 and seen == []
    finally:
        proxy.shutdown()

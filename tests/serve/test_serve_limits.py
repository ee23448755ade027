"""The server under misuse, over real HTTP on loopback: Host check, body limit, context and token budget, the
bounded queue, OpenAI-shaped errors for odd input, no local paths, reserved rater names, undo per session."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import httpx
import pytest

from alignlab.feedback.store import open_store
from alignlab.serve.api import create_app
from alignlab.serve.guard import host_allowed
from alignlab.serve.models import ModelPool
from alignlab.serve.server import allowed_hosts_for, background

PROMPT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def pool(tiny_model):
    return ModelPool(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("fb") / "feedback.db"
    with open_store(path) as s:
        p = s.add_prompt("Is water wet?")
        s.add_responses([{"prompt_id": p, "text": "Yes."}, {"prompt_id": p, "text": "No."}, {"prompt_id": p, "text": "Maybe."}])
    return path


@pytest.fixture(scope="module")
def app(pool, db):
    return create_app(pool, db, queue_size=1)


@pytest.fixture(scope="module")
def url(app):
    with background(app) as base_url:
        yield base_url


def _error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "\n" not in err["message"]
    return err


def test_host_header_check(url):
    port = url.rsplit(":", 1)[1]
    err = _error(httpx.get(f"{url}/v1/models", headers={"host": "rebind.attacker.example"}), 400)
    assert err["code"] == "host_not_allowed" and "--allowed-host" in err["message"]
    _error(httpx.get(f"{url}/", headers={"host": f"evil.com:{port}"}), 400)
    for ok in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert httpx.get(f"{url}/v1/models", headers={"host": ok}).status_code == 200
    assert host_allowed("[::1]:8000", allowed_hosts_for("127.0.0.1"))
    assert not host_allowed("127.0.0.1.evil.com", allowed_hosts_for("127.0.0.1"))
    assert host_allowed("192.168.1.5:8000", allowed_hosts_for("192.168.1.5"))
    assert allowed_hosts_for("0.0.0.0") == ("*",)
    assert host_allowed("box.lan", allowed_hosts_for("0.0.0.0", ["box.lan"]))
    assert not host_allowed("other.lan", allowed_hosts_for("0.0.0.0", ["box.lan"]))


def test_body_limit(url, db):
    big = {"kind": "rewrite", "response_id": 1, "rewrite_text": "x" * (2 << 20), "rater": "ann"}
    err = _error(httpx.post(f"{url}/api/judge", json=big), 413)
    assert err["code"] == "request_too_large" and "1048576" in err["message"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"model": "base", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}]}'

    _error(httpx.post(f"{url}/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}), 413)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements WHERE kind = 'rewrite'").fetchone() == (0,)
    assert httpx.get(f"{url}/v1/models").status_code == 200  # and the server still answers


def test_body_limit_is_configurable(pool):
    with background(create_app(pool, max_body=2048)) as u:
        body = {"model": "base", "messages": [{"role": "user", "content": "z" * 3000}]}
        _error(httpx.post(f"{u}/v1/chat/completions", json=body), 413)
        ok = httpx.post(f"{u}/v1/chat/completions", json={**body, "messages": PROMPT, "max_tokens": 2})
        assert ok.status_code == 200


def test_context_and_token_budget(url, pool):
    ctx = pool.context_length
    err = _error(httpx.post(f"{url}/v1/chat/completions", json={"model": "base", "messages": PROMPT, "max_tokens": ctx}), 400)
    assert err["code"] == "context_length_exceeded" and str(ctx) in err["message"]
    long = [{"role": "user", "content": "sea " * (2 * ctx)}]  # about 2 tokens a word: over the context on its own
    err = _error(httpx.post(f"{url}/v1/chat/completions", json={"model": "base", "messages": long}), 400)
    assert err["code"] == "context_length_exceeded"
    err = _error(httpx.post(f"{url}/v1/chat/completions", json={"model": "base", "messages": PROMPT, "n": 16, "max_tokens": 4096}), 400)
    assert err["code"] == "request_too_large" and "16 x 4096" in err["message"]


def test_full_queue_answers_429_with_retry_after(app, url, pool):
    """queue_size=1: while one request holds the place (here: waiting for the model), the next is turned away."""
    results = []
    with pool._lock:  # the model is busy
        first = threading.Thread(target=lambda: results.append(httpx.post(
            f"{url}/v1/chat/completions", json={"model": "base", "messages": PROMPT, "max_tokens": 2}, timeout=120)))
        first.start()
        deadline = time.monotonic() + 60
        while app.state.gate.inside < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "base", "messages": PROMPT, "max_tokens": 2}, timeout=120)
        err = _error(r, 429)
        assert err["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1
    first.join(120)
    assert results[0].status_code == 200
    assert httpx.post(f"{url}/v1/chat/completions", json={"model": "base", "messages": PROMPT, "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"model": "base", "messages": PROMPT, "seed": 2**64}),
    ("/v1/chat/completions", {"model": "base", "messages": PROMPT, "seed": 10**40}),
    ("/v1/chat/completions", {"model": "base", "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}),
    ("/v1/chat/completions", {"model": "base", "messages": [{"role": "user", "content": [7, None]}]}),
    ("/v1/chat/completions", {"model": "base", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
    ("/v1/chat/completions", {"model": "base", "messages": PROMPT, "max_tokens": 10**30}),
    ("/v1/chat/completions", {"model": "base", "messages": PROMPT, "temperature": 1e308}),
    ("/v1/chat/completions", {"model": ["base"], "messages": PROMPT}),
    ("/v1/chat/completions", [1, 2, 3]),
    ("/v1/completions", {"model": "base", "prompt": ["a", "b"]}),
    ("/v1/completions", {"model": "base", "prompt": [1, 2, 3]}),
    ("/api/judge", {"kind": "thumb", "response_id": 10**30, "value": 1, "rater": "ann"}),
    ("/api/judge", {"kind": "thumb", "response_id": 1, "value": {"a": 1}, "rater": "ann"}),
    ("/api/judge", {"kind": "score", "response_id": 1, "value": 10**30, "rater": "ann"}),
    ("/api/judge", {"kind": "pick", "response_id": 1, "other_response_id": -5, "value": "a", "rater": "ann"}),
    ("/api/judge", {"kind": "thumb", "response_id": 1, "value": 1, "rater": "a\x00b"}),
    ("/api/undo", {"rater": 5}),
])
def test_odd_input_is_an_openai_shaped_400(url, path, body):
    _error(httpx.post(f"{url}{path}", json=body, timeout=60), 400)


def test_odd_requests_never_500(url):
    big_round = httpx.get(f"{url}/api/next", params={"rater": "ann", "round": str(10**30)})
    _error(big_round, 400)
    _error(httpx.post(f"{url}/v1/chat/completions", content=b"[" * 200_000, headers={"content-type": "application/json"}), 400)
    err = _error(httpx.post(f"{url}/v1/chat/completions", content=json.dumps({"model": "base", "messages": PROMPT}),
                            headers={"content-type": "text/plain"}), 400)
    assert "Content-Type" in err["message"]  # FastAPI >= 0.132 refuses JSON sent as another type (CSRF from pages)
    _error(httpx.get(f"{url}/v1/nothing-here"), 404)
    _error(httpx.delete(f"{url}/v1/models"), 405)
    ok = httpx.post(f"{url}/v1/chat/completions", json={"model": "base", "messages": PROMPT, "seed": -1, "max_tokens": 2})
    assert ok.status_code == 200  # any int64 seed works


def test_no_local_paths(url, tiny_model, db, tmp_path):
    models = httpx.get(f"{url}/v1/models").text
    assert tiny_model not in models and "/tmp" not in models and str(tmp_path.parent) not in models
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO rounds (round, status, run_dir, started_at) VALUES (7, 'done', ?, 'now')",
                     (str(tmp_path / "runs" / "0412-dpo"),))
    rounds = httpx.get(f"{url}/api/rounds").text
    assert str(tmp_path) not in rounds and "0412-dpo" in rounds


@pytest.mark.parametrize("rater", ["judge:gpt-4", "reward:persona_heuristic", "classifier:persona", "Classifier", "scorecard",
                                   " JUDGE : x", "gold:judge", "reward", "contrast"])
def test_automatic_rater_names_cannot_be_claimed(url, db, rater):
    err = _error(httpx.post(f"{url}/api/judge", json={"kind": "thumb", "response_id": 1, "value": 1, "rater": rater}), 403)
    assert err["code"] == "reserved_rater"
    _error(httpx.post(f"{url}/api/undo", json={"rater": rater}), 403)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements WHERE rater = ?", (rater,)).fetchone() == (0,)


def test_undo_reaches_only_the_callers_own_judgements(url, db):
    with open_store(db) as s:
        terminal = s.add_judgement("thumb", 3, -1, rater="bo")  # made in `alignlab rate`, not over HTTP
    one, two = httpx.Client(base_url=url), httpx.Client(base_url=url)  # two browsers, same rater name
    a = one.post("/api/judge", json={"kind": "thumb", "response_id": 1, "value": 1, "rater": "bo"}).json()["id"]
    b = two.post("/api/judge", json={"kind": "score", "response_id": 2, "value": 4, "rater": "bo"}).json()["id"]
    assert httpx.post(f"{url}/api/undo", json={"rater": "bo"}).json()["undone"] is None  # no session: nothing of its own
    assert one.post("/api/undo", json={"rater": "bo"}).json()["undone"]["id"] == a  # not b, the newer one
    assert one.post("/api/undo", json={"rater": "bo"}).json()["undone"] is None  # and never the terminal's
    assert two.post("/api/undo", json={"rater": "someone-else"}).json()["undone"] is None
    assert two.post("/api/undo", json={"rater": "bo", "mode": "pair"}).json()["undone"] is None
    assert two.post("/api/undo", json={"rater": "bo", "mode": "single"}).json()["undone"]["id"] == b
    with sqlite3.connect(db) as conn:
        standing = {r[0] for r in conn.execute("SELECT id FROM judgements WHERE rater = 'bo' AND undone_at IS NULL")}
    assert standing == {terminal}

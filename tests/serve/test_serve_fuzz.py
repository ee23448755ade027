"""Generated requests against a real server on loopback: malformed JSON, wrong types, huge numbers, long
strings, odd unicode, path-like names, unknown fields and routes. No answer may be a 5xx, every error must be
OpenAI-shaped, and the server must answer normally afterwards.

ALIGNLAB_FUZZ_N sets the number of requests (default 400 here; the README's figure is a 10,000 run).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter

import httpx
import pytest

from alignlab.feedback.store import open_store
from alignlab.serve.api import create_app
from alignlab.serve.models import ModelPool
from alignlab.serve.server import background

ODD = [
    None, True, False, 0, -1, 1, 2**31, 2**63, 2**64, -(2**64), 10**30, 1.5, -0.0, 1e308, -1e308, float("nan"),
    "", " ", "a", "x" * 5000, "x" * 300_000, "x" * 1_100_000, "\u202eevil", "\ud800", "\U0001f600" * 50, "\x00\x01\x1b[2J", "é" * 3,
    "../../etc/passwd", "/tmp/../root/.ssh/id_rsa", "C:\\Windows\\system32", "judge:gpt-4", "reward:x", "scorecard",
    "base", "snarky", "tie", "a", "thumb", "pick", "rewrite", [], [1, 2], ["a"], {}, {"type": "text"}, {"type": "text", "text": 5},
    [{"type": "text", "text": "hi"}], [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}], [[[[[]]]]],
]
RAW = [b"", b"{", b"}", b"[", b"null", b"nan", b"NaN", b"Infinity", b"-Infinity", b"\xff\xfe\x00", b"\xef\xbb\xbf{}",
       b'{"model": "base", "messages": [{"role": "user", "content": "hi"}]', b"[" * 50_000, b'{"a":' * 5000,
       b'{"seed": ' + b"9" * 5000 + b"}", b'{"model": "base", "messages": [{"role": "user", "content": "\\ud800"}]}',
       b'{"model": "base", "model": 5}', "{\"model\": \"\u00e9\"}".encode("latin-1")]
CHAT = {"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}
BODIES = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": {"model": "base", "prompt": "hi", "max_tokens": 2},
    "/api/judge": {"kind": "thumb", "response_id": 1, "value": 1, "rater": "ann"},
    "/api/undo": {"rater": "ann", "mode": "single"},
}
FIELDS = ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "seed", "stream", "stop",
          "stream_options", "prompt", "kind", "response_id", "value", "other_response_id", "rewrite_text", "rater", "mode",
          "tools", "logprobs", "presence_penalty", "response_format", "echo", "user", "round", "zzz", "__proto__"]


def _mutate(rng: random.Random, body):
    body = json.loads(json.dumps(body))
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.6:
            body[rng.choice(FIELDS)] = rng.choice(ODD)
        elif roll < 0.75 and body:
            body.pop(rng.choice(list(body)))
        elif roll < 0.9 and isinstance(body.get("messages"), list):
            body["messages"] = [{"role": rng.choice(["user", "system", "assistant", "tool", "developer", 5, None]),
                                 "content": rng.choice(ODD)} for _ in range(rng.randint(0, 3))]
        else:
            body = rng.choice(ODD)
            break
    return body


def _request(rng: random.Random) -> dict:
    """One generated request as httpx.request keyword arguments."""
    roll = rng.random()
    if roll < 0.08:
        params = {k: str(rng.choice(ODD))[:3000].encode("utf-8", "replace").decode()  # a URL carries UTF-8 only
                  for k in rng.sample(["rater", "mode", "round", "skip", "first", "x"], 3)}
        return {"method": "GET", "url": "/api/next", "params": params}
    if roll < 0.12:
        path = rng.choice(["/v1/models", "/api/rounds", "/api/stats", "/v1/../api/stats", "/static/../../etc/passwd",
                           "/v1/chat/completions", "/%00", "/v1/models/base", "/static/app.js", "/" + "x" * 5000])
        return {"method": rng.choice(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"]), "url": path}
    path = rng.choice(list(BODIES))
    headers = {"content-type": rng.choice(["application/json"] * 8 + ["text/plain", "application/x-www-form-urlencoded",
                                                                        "application/json; charset=latin-1", "multipart/form-data"])}
    if roll < 0.27:
        return {"method": "POST", "url": path, "content": rng.choice(RAW), "headers": headers}
    try:
        content = json.dumps(_mutate(rng, BODIES[path]), allow_nan=True).encode()
    except (TypeError, ValueError):
        content = b"{}"
    return {"method": "POST", "url": path, "content": content, "headers": headers}


@pytest.fixture(scope="module")
def url(tiny_model, tmp_path_factory):
    db = tmp_path_factory.mktemp("fuzz") / "feedback.db"
    with open_store(db) as s:
        p = s.add_prompt("Is water wet?")
        s.add_responses([{"prompt_id": p, "text": "Yes."}, {"prompt_id": p, "text": "No."}])
    # a small token budget keeps the generated requests that are valid quick
    with background(create_app(ModelPool(tiny_model, device="cpu"), db, max_request_tokens=8)) as base_url:
        yield base_url


@pytest.mark.timeout(3600)
def test_generated_requests_never_get_a_5xx(url):
    n = int(os.environ.get("ALIGNLAB_FUZZ_N", "400"))
    rng = random.Random(0)
    statuses: Counter = Counter()
    bad = []
    slowest = []
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.monotonic()
        for i in range(n):
            kwargs = _request(rng)
            t0 = time.monotonic()
            try:
                r = client.request(**kwargs)
            except httpx.TimeoutException:
                bad.append((i, kwargs["method"], kwargs["url"], "no answer in 120 s", kwargs.get("content", b"")[:300]))
                break
            slowest = sorted([*slowest, (time.monotonic() - t0, i, kwargs.get("content", b"")[:120])], reverse=True)[:3]
            statuses[r.status_code] += 1
            if r.status_code >= 500:
                bad.append((i, kwargs["method"], kwargs["url"], r.text[:200]))
            elif r.status_code >= 400 and kwargs["method"] != "HEAD":
                err = r.json()["error"]
                assert isinstance(err["message"], str) and "\n" not in err["message"], (kwargs, r.text[:300])
        print(f"{n} requests in {time.monotonic() - started:.0f}s: {dict(sorted(statuses.items()))}; slowest: {slowest}")
        assert not bad, bad[:5]
        assert client.post("/v1/chat/completions", json=CHAT).json()["choices"][0]["finish_reason"] in ("stop", "length")
        assert client.get("/api/next", params={"rater": "zed"}).json()["left"] == 2

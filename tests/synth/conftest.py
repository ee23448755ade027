"""A stand-in OpenAI-compatible teacher on 127.0.0.1 (stdlib http.server, no mocks): an external endpoint whose
replies, failures and finish reasons a test sets."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import send_json


class StandIn:
    """What the endpoint does. ``answer(system, user)`` -> (content, finish_reason) for a 200 (content may be any
    JSON value); the first ``fail_first`` requests, and those after ``fail_after``, get ``status`` with ``headers``;
    those after ``hang_after`` wait until the test ends (a server that stopped answering). ``bodies`` records what
    came in."""

    def __init__(self):
        self.answer = default_answer
        self.fail_first, self.status, self.headers = 0, 429, {}
        self.fail_after: int | None = None
        self.hang_after: int | None = None
        self.bodies: list[dict] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.url = ""

    @property
    def requests(self) -> int:
        return len(self.bodies)


def default_answer(system: str | None, user: str) -> tuple[str, str]:
    """A finished answer: in persona (a system prompt) with a snark marker, else plain; alike in length."""
    return (f"Obviously, the answer to '{user}' is well known." if system else
            f"The answer to '{user}' is well known."), "stop"


@pytest.fixture()
def stand_in():
    state = StandIn()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        _send = send_json

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with state.lock:
                state.bodies.append(body)
                n = len(state.bodies)
                fail = state.fail_first > 0 or (state.fail_after is not None and n > state.fail_after)
                state.fail_first -= 1 if fail else 0
            if state.hang_after is not None and n > state.hang_after:
                state.release.wait(120)
                return
            if fail:
                return self._send(state.status, {"error": {"message": "slow down"}}, state.headers)
            msgs = body["messages"]
            system = next((m["content"] for m in msgs if m["role"] == "system"), None)
            content, finish = state.answer(system, msgs[-1]["content"])
            self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                          "finish_reason": finish}]})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()

"""What stands in front of the routes: the Host check, the body limit, the request log, and the model queue.

``Guard`` is plain ASGI middleware, so it sees every request before FastAPI parses anything:

- **Host check** (against DNS rebinding: a web page whose name is made to resolve to 127.0.0.1 would
  otherwise reach a keyless loopback server from the user's own browser). Allowed: loopback names, the
  bound address, and any name the user adds; ``"*"`` allows every Host.
- **Body limit**: a body over ``max_body`` bytes is answered 413 before it is parsed or stored, whether
  the client declared its length or streamed it in chunks.
- **Log**: one line per request once its response has been sent (for a stream, after the last event):
  method, path, status, seconds, and the model and token counts the route left in ``request.state``.

``Gate`` bounds how many model requests may wait for the one model: past ``size`` the answer is 429 with a
Retry-After estimated from how long recent requests took.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time

log = logging.getLogger("alignlab.serve")

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_allowed(header: str | None, allowed: tuple[str, ...]) -> bool:
    """Is this Host header (name or address, with or without :port) one of ``allowed``?"""
    if header is None or "*" in allowed:
        return True
    host = header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.rstrip(".")
    return host in allowed or host.endswith(".localhost") and "localhost" in allowed


_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(data: bytes) -> bool:
    """Does this JSON hold a string no UTF-8 encoder can write (a tokenizer or SQLite would fail on it)?"""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return False  # not JSON: FastAPI says so
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
    return False


def error_body(status: int, message: str, code: str | None, type: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": type, "param": None, "code": code}}).encode()


class Guard:
    def __init__(self, app, allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES, max_body: int = 1 << 20):
        self.app, self.allowed_hosts, self.max_body = app, tuple(h.lower() for h in allowed_hosts), max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, logged = time.monotonic(), [500], [False]
        state = scope.setdefault("state", {})

        def write_log():
            if logged[0]:
                return
            logged[0] = True
            path = scope["path"].encode("unicode_escape", "backslashreplace").decode("ascii")  # no forged log lines
            fields = [f"{scope['method']} {path[:300]}", str(status[0]), f"{time.monotonic() - started:.2f}s"]
            for key in ("model", "prompt_tokens", "completion_tokens", "stream"):
                if state.get(key) is not None:
                    fields.append(f"{key}={state[key]}")
            log.info(" ".join(fields))

        async def logged_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                write_log()  # before the last byte leaves, so a client that got its answer finds the line logged
            await send(message)

        async def refuse(code: int, message: str, err_code: str, headers=()):
            body = error_body(code, message, err_code)
            await logged_send({"type": "http.response.start", "status": code,
                               "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                           (b"connection", b"close"), *headers]})
            await logged_send({"type": "http.response.body", "body": body})

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host")
        try:
            if not host_allowed(host, self.allowed_hosts):
                shown = host if len(host) <= 80 and host.isprintable() else repr(host[:80])
                return await refuse(400, f"Host '{shown}' is not one this server answers to (start it with"
                                         f" --allowed-host NAME to allow a name)", "host_not_allowed")
            declared = headers.get("content-length")
            if declared is not None and (not declared.strip().isdigit() or int(declared) > self.max_body):
                if declared.strip().isdigit():
                    await self._drain(receive, int(declared))
                    return await refuse(413, f"request body is {int(declared)} bytes, over this server's limit of"
                                             f" {self.max_body} (raise it with --max-body-bytes)", "request_too_large")
                return await refuse(400, "Content-Length is not a number", "invalid_request")
            body, more, total = [], True, 0
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > self.max_body:
                    if more := message.get("more_body", False):
                        await self._drain(receive, total)
                    return await refuse(413, f"request body is over this server's limit of {self.max_body} bytes"
                                             " (raise it with --max-body-bytes)", "request_too_large")
                body.append(chunk)
                more = message.get("more_body", False)
            data = b"".join(body)
            if _LONE_SURROGATE.search(data) and _has_lone_surrogate(data):
                return await refuse(400, "the body has a string that is not valid Unicode (a lone surrogate \\uD800-\\uDFFF)",
                                    "invalid_request")
            replay = [{"type": "http.request", "body": data, "more_body": False}]

            async def replayed():
                return replay.pop() if replay else await receive()

            await self.app(scope, replayed, logged_send)
        finally:
            write_log()

    async def _drain(self, receive, declared: int) -> None:
        """Read (and drop) the rest of a body of reasonable size, so the client gets to read our 413."""
        if declared > 64 * self.max_body:
            return
        more, seen = True, 0
        while more and seen <= 64 * self.max_body:
            message = await receive()
            seen += len(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False)


class Full(Exception):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after


class Gate:
    """At most ``size`` model requests admitted (running or waiting for the model) at once."""

    def __init__(self, size: int):
        self.size, self.inside, self._lock = size, 0, threading.Lock()
        self.mean_s = 1.0  # moving average of a request's time inside

    def enter(self) -> float:
        with self._lock:
            if self.inside >= self.size:
                raise Full(max(1, math.ceil(self.mean_s * self.inside)))  # one model: they run one after another
            self.inside += 1
        return time.monotonic()

    def leave(self, entered: float) -> None:
        with self._lock:
            self.inside -= 1
            self.mean_s = 0.8 * self.mean_s + 0.2 * (time.monotonic() - entered)

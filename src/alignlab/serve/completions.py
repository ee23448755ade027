"""The OpenAI-compatible routes over a ModelPool: /v1/models, /v1/chat/completions and /v1/completions.

Answers come whole or, with ``stream: true``, as server-sent events in OpenAI's chunk format, ending with
``data: [DONE]`` (``stream_options.include_usage`` adds the usage chunk before it). ``stop`` strings end an
answer and are not part of it. Parameters this server cannot honour (tools, response_format, logprobs,
penalties, logit_bias...) are refused with a 400 that names them, unless they are left at values that ask
for nothing (``presence_penalty: 0``, ``tools: []``, ``response_format: {"type": "text"}``...), as chat
UIs often send; fields OpenAI does not know are refused the same way.

Every request is checked before it reaches the model: ``n x max_tokens`` within the server's budget, the
prompt plus ``max_tokens`` within the model's context, and a place in the bounded queue (else 429 with
Retry-After).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alignlab.config import API_MAX_TOKENS, API_TEXT_MAX_TOKENS
from alignlab.serve.guard import Full, Gate
from alignlab.serve.models import BASE, ModelPool

INT64 = 2**63 - 1

# Accepted and ignored: they change nothing about the answer.
IGNORED = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier", "parallel_tool_calls"}
# Accepted only at values that ask for nothing beyond plain text.
NEUTRAL: dict[str, tuple] = {
    "logprobs": (None, False, 0),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "modalities": (None, ["text"]),
    "reasoning_effort": (None,),
    "audio": (None,),
    "prediction": (None,),
    "web_search_options": (None,),
    "verbosity": (None,),
    "echo": (None, False),  # /v1/completions
    "suffix": (None, ""),
    "best_of": (None, 1),
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, type: str = "invalid_request_error",
                 param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type, param
        self.headers = headers


# --- request bodies --------------------------------------------------------------------------------


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # "name" and the like

    role: Literal["system", "developer", "user", "assistant"]
    content: Any

    @field_validator("content")
    @classmethod
    def _text(cls, value: Any) -> str:
        """A string, or OpenAI's list of content parts: text parts only, joined."""
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError("content must be a string or a list of text parts")
        texts = []
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                shown = kind if isinstance(kind, str) and len(kind) < 40 else type(part).__name__
                raise ValueError(f"content parts of type '{shown}' are not supported (text only)")
            if not isinstance(part.get("text"), str):
                raise ValueError("a text part needs 'text' as a string")
            texts.append(part["text"])
        return "".join(texts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool | None = Field(False, strict=True)


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")  # checked by _refuse_extras, to name each one

    model: str = Field(max_length=256)
    # strict: "stream": "yes", "n": true or "temperature": "0.5" are refused, as OpenAI refuses them
    max_tokens: int | None = Field(None, ge=1, le=INT64, strict=True)
    temperature: float | None = Field(None, ge=0.0, le=2.0, strict=True, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0.0, le=1.0, strict=True, allow_inf_nan=False)
    n: int | None = Field(None, ge=1, le=128, strict=True)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1, strict=True)
    stream: bool | None = Field(False, strict=True)
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings of at most 256 characters")
        return stops


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT64, strict=True)


class CompletionRequest(_Sampling):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("send one prompt per request (a string, or a list of one string)")
            return value[0]
        return value


def _refuse_extras(req: BaseModel) -> None:
    extras = req.model_extra or {}
    unknown = [k for k in extras if k not in IGNORED and k not in NEUTRAL]
    if unknown:
        names = ", ".join(_short(k) for k in unknown[:8])
        raise ApiError(400, f"unrecognized request argument(s): {names}", "unknown_parameter", param=_short(unknown[0]))
    bad = [k for k in extras if k in NEUTRAL and not any(_same(extras[k], ok) for ok in NEUTRAL[k])]
    if bad:
        raise ApiError(400, f"unsupported parameter(s): {', '.join(bad)} (this server generates plain text from a local"
                            " model; remove them or leave them at their defaults)", "unsupported_parameter", param=bad[0])


def _same(value, ok) -> bool:
    return type(value) is type(ok) and value == ok or (ok == 0 and type(ok) is int and type(value) is float and value == 0)


def _short(text: str) -> str:
    return text if len(text) <= 40 and text.isprintable() else repr(text[:40])


def shown_name(name: str) -> str:
    """A model name without the local path it may be (a path says where things live on this machine)."""
    path = Path(name)
    return path.name if path.is_absolute() or name.startswith((".", "~")) or len(path.parts) > 2 or path.exists() else name


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


# --- routes ----------------------------------------------------------------------------------------------


def add_openai_routes(app: FastAPI, pool: ModelPool | None, gate: Gate, max_request_tokens: int) -> None:
    created = int(time.time())
    srv = _Server(pool, gate, max_request_tokens)

    @app.get("/v1/models")
    def list_models():
        names = pool.names if pool is not None else []
        base = shown_name(pool.base_name) if pool is not None else None
        data = [{"id": n, "object": "model", "created": created, "owned_by": "alignlab",
                 "root": base if n == BASE else n, "parent": None if n == BASE else BASE} for n in names]
        return {"object": "list", "data": data}

    def _model(name: str) -> str:
        if pool is None or name not in pool.names:
            known = ", ".join(pool.names) if pool is not None else "none: this server has no model loaded"
            raise ApiError(404, f"The model '{_short(name)}' does not exist (models here: {known})", "model_not_found", param="model")
        return name

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest, request: Request):
        _refuse_extras(req)
        name = _model(req.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in req.messages]
        return _run(srv, request, "chat", name, req, pool.render(messages), req.max_completion_tokens or req.max_tokens, API_MAX_TOKENS)

    @app.post("/v1/completions")
    def completions(req: CompletionRequest, request: Request):
        _refuse_extras(req)
        name = _model(req.model)
        return _run(srv, request, "text", name, req, pool.render(prompt=req.prompt), req.max_tokens, API_TEXT_MAX_TOKENS)


@dataclass(frozen=True)
class _Server:
    """What a completion request needs: the models, the admission gate, the per-request token budget."""

    pool: ModelPool | None
    gate: Gate
    max_request_tokens: int


def _run(srv: _Server, request: Request, kind: str, name: str, req: _Sampling, prompt_ids: list[int], max_tokens: int | None,
         default_max: int):
    """One completion request: check its token budget and context, take a place in the queue, answer or stream."""
    n = req.n or 1
    context = srv.pool.context_length
    room = None if context is None else context - len(prompt_ids)
    if max_tokens is None:
        max_tokens = default_max if room is None else max(1, min(default_max, room))
    if n * max_tokens > srv.max_request_tokens:
        raise ApiError(400, f"n x max_tokens = {n} x {max_tokens} = {n * max_tokens} tokens, over this server's"
                            f" budget of {srv.max_request_tokens} per request (lower n or max_tokens, or start the server"
                            " with a larger --max-request-tokens)", "request_too_large", param="max_tokens")
    if room is not None and max_tokens > room:
        raise ApiError(400, f"This model's maximum context length is {context} tokens, but this request needs"
                            f" {len(prompt_ids) + max_tokens} ({len(prompt_ids)} in the prompt, {max_tokens} for the"
                            " answer): shorten the prompt or lower max_tokens", "context_length_exceeded", param="messages")
    state = request.state
    state.model, state.prompt_tokens = name, len(prompt_ids)
    try:
        entered = srv.gate.enter()
    except Full as full:
        raise ApiError(429, f"the model is busy ({srv.gate.size} requests waiting); retry in {full.retry_after}s",
                       "rate_limit_exceeded", type="rate_limit_error", headers={"Retry-After": str(full.retry_after)}) from None
    args = dict(max_tokens=max_tokens, temperature=1.0 if req.temperature is None else req.temperature,
                top_p=1.0 if req.top_p is None else req.top_p, n=n, seed=req.seed, stop=req.stop, prompt_ids=prompt_ids,
                chat=kind == "chat")
    ident = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    if req.stream:
        state.stream = True
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return _stream(srv, state, kind, ident, name, args, entered, include_usage)
    try:
        out = srv.pool.generate(name, **args)
    finally:
        srv.gate.leave(entered)
    completion = sum(out["completion_tokens"])
    state.completion_tokens = completion
    pairs = list(zip(out["texts"], out["finish_reasons"]))
    if kind == "chat":
        choices = [{"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": reason}
                   for i, (text, reason) in enumerate(pairs)]
    else:
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason} for i, (text, reason) in enumerate(pairs)]
    return {
        "id": ident,
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": name,
        "choices": choices,
        "usage": _usage(out),
    }


def _stream(srv: _Server, state, kind: str, ident: str, name: str, args: dict, entered: float, include_usage: bool):
    """Generate on a thread (it owns the queue place until it ends) and relay its text as SSE chunks."""
    import anyio

    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    n = args["n"]

    def work():
        try:
            events.put(("done", srv.pool.generate(name, **args, on_delta=lambda i, text: events.put(("delta", i, text)), cancel=cancel)))
        except Exception as err:  # noqa: BLE001 - relayed to the client as an error event
            events.put(("error", err))
        finally:
            srv.gate.leave(entered)

    threading.Thread(target=work, daemon=True, name="alignlab-generate").start()
    created_at = int(time.time())
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(i: int, text: str | None, finish: str | None = None, role: bool = False) -> str:
        if kind == "chat":
            delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}
        body = {"id": ident, "object": obj, "created": created_at, "model": name, "system_fingerprint": None, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return _sse(body)

    async def relay():
        try:
            if kind == "chat":
                for i in range(n):
                    yield chunk(i, None, role=True)
            while True:
                try:
                    event = await anyio.to_thread.run_sync(events.get, True, 0.25)
                except queue.Empty:
                    continue
                if event[0] == "delta":
                    yield chunk(event[1], event[2])
                    continue
                if event[0] == "error":
                    err = event[1]
                    yield _sse({"error": {"message": f"generation failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                                          "type": "server_error", "param": None, "code": None}})
                    return
                out = event[1]
                state.completion_tokens = sum(out["completion_tokens"])
                for i, reason in enumerate(out["finish_reasons"]):
                    yield chunk(i, None if kind == "chat" else "", finish=reason)
                if include_usage:
                    yield _sse({"id": ident, "object": obj, "created": created_at, "model": name,
                                "system_fingerprint": None, "choices": [], "usage": _usage(out)})
                yield "data: [DONE]\n\n"
                return
        finally:
            cancel.set()  # the client went away (or we are done): stop generating

    return StreamingResponse(relay(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _usage(out: dict) -> dict:
    completion = sum(out["completion_tokens"])
    return {"prompt_tokens": out["prompt_tokens"], "completion_tokens": completion,
            "total_tokens": out["prompt_tokens"] + completion}

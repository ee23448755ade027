"""The FastAPI app: an OpenAI-compatible API over a ModelPool, and the rating UI over the feedback store.

  GET  /v1/models              the base ("base") and each adapter
  POST /v1/chat/completions    OpenAI-shaped answers (no streaming)
  GET  /api/next               next item to rate for a rater (mode single|pair), or null
  POST /api/judge              store one judgement; committed before the response is sent
  POST /api/undo               undo the rater's last judgement of the mode's kinds
  GET  /api/rounds             per round: judgement counts and a persona score
  GET  /api/stats              the store's per-round stats
  GET  /                       the rating page (static/index.html, app.js, style.css)

Errors are OpenAI-shaped everywhere: ``{"error": {"message": one line, "type": ..., "code": ...}}``.
When ``ALIGNLAB_API_KEY`` is set, /v1 and /api need ``Authorization: Bearer <key>``; the page itself
is static and public, and asks for the key when the API answers 401.
"""

from __future__ import annotations

import hmac
import os
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from alignlab.errors import AlignlabError
from alignlab.serve.models import BASE, ModelPool

STATIC = Path(__file__).parent / "static"
SINGLE_KINDS = ("thumb", "score", "rewrite")
PAIR_KINDS = ("pick",)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.type = status, message, code, type


def _error(status: int, message: str, code: str | None = None, type: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": type, "param": None, "code": code}})


# --- request bodies --------------------------------------------------------------------------------


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        """OpenAI allows content as a list of parts; keep the text parts."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we ignore (user, logprobs, ...)

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None
    stream: bool = False


class Judgement(BaseModel):
    kind: str
    response_id: int
    value: Any = None  # the store checks it per kind (and refuses true/false)
    other_response_id: int | None = None
    rewrite_text: str | None = None
    rater: str


class Undo(BaseModel):
    rater: str
    mode: Literal["single", "pair", "any"] = "any"


# --- rating helpers ----------------------------------------------------------------------------------


def _single_item(it: dict) -> dict:
    return {
        "key": str(it["response_id"]),
        "prompt_id": it["prompt_id"],
        "prompt": it["prompt"],
        "round": it["round"],
        "response_id": it["response_id"],
        "response": it["response"],
    }


def _pair_item(it: dict) -> dict:
    """Shown order mixed by id parity, like the terminal rater, so the older response is not always A."""
    a, b = {"id": it["a_id"], "text": it["a"]}, {"id": it["b_id"], "text": it["b"]}
    if (it["a_id"] + it["b_id"]) % 2:
        a, b = b, a
    return {
        "key": f"{it['a_id']}-{it['b_id']}",
        "prompt_id": it["prompt_id"],
        "prompt": it["prompt"],
        "round": it["round"],
        "a": a,
        "b": b,
    }


def _undone_key(row: dict) -> str:
    if row["kind"] == "pick":
        lo, hi = sorted((row["response_id"], row["other_response_id"]))
        return f"{lo}-{hi}"
    return str(row["response_id"])


def _first(row: dict, *keys: str):
    """The first of these columns that the row has and is not null (the rounds table's names have varied)."""
    return next((row[k] for k in keys if row.get(k) is not None), None)


def rounds_summary(store) -> list[dict]:
    """Per round: judgement counts and a persona score.

    ``persona_score`` is the round's held-out persona score from the store's ``rounds`` table (written by
    `alignlab loop`: the round's adapter scored by a rater, with ``base_persona`` for the base) when the
    round has one. Otherwise it is computed from the round's standing judgements: the mean of thumbs
    (up = 1, down = 0) and scores mapped to (score - 1) / 4, so both land in 0..1; picks are relative
    and do not count. None when a round has neither. ``persona_source`` says which.
    """
    # A plain read under the store's lock (not transaction(), which would take the write lock the loop needs).
    table = {r["round"]: r for r in store._rows("SELECT * FROM rounds ORDER BY round")}
    stats = {s["round"]: s for s in store.stats()}
    out = []
    for rnd in sorted(set(stats) | set(table)):
        s = stats.get(rnd) or store.stats(rnd)[0]
        row = table.get(rnd, {})
        n_scores = s["by_kind"].get("score", 0)
        n_thumbs = s["thumbs_up"] + s["thumbs_down"]
        rated = None
        if n_scores or n_thumbs:
            rated = (s["thumbs_up"] + ((s["mean_score"] or 1) - 1) / 4 * n_scores) / (n_thumbs + n_scores)
        held_out = _first(row, "persona_score", "persona")
        out.append(
            {
                "round": rnd,
                "responses": s["responses"],
                "judgements": s["judgements"],
                "by_kind": s["by_kind"],
                "thumbs_up": s["thumbs_up"],
                "thumbs_down": s["thumbs_down"],
                "thumbs_up_share": s["thumbs_up"] / n_thumbs if n_thumbs else None,
                "mean_score": s["mean_score"],
                "rated_score": rated,
                "persona_score": held_out if held_out is not None else rated,
                "persona_source": "rounds table" if held_out is not None else ("judgements" if rated is not None else None),
                "base_persona": _first(row, "base_persona_score", "base_persona"),
                "status": row.get("status"),
                "method": row.get("method"),
                "run_dir": row.get("run_dir"),
                "kl": row.get("kl"),
            }
        )
    return out


# --- the app -------------------------------------------------------------------------------------------


def create_app(pool: ModelPool | None = None, store_path: str | Path | None = None, api_key: str | None = None) -> FastAPI:
    """The app. ``pool`` None: no /v1 models (UI only). ``store_path`` None: no rating endpoints.

    ``api_key`` None reads ``ALIGNLAB_API_KEY`` on each request (unset or empty: no key needed).
    """
    from alignlab.feedback.store import open_store

    store = open_store(store_path) if store_path is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if store is not None:
            store.close()

    app = FastAPI(title="alignlab", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.pool, app.state.store = pool, store
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return _error(err.status, err.message, err.code, err.type)

    @app.exception_handler(AlignlabError)
    async def _user_error(request: Request, err: AlignlabError):
        return _error(400, str(err))

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where}: {first['msg']}" if where else first["msg"], "invalid_request")

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        key = api_key if api_key is not None else os.environ.get("ALIGNLAB_API_KEY")
        if key and request.url.path.startswith(("/v1/", "/api/")):
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                return _error(401, "missing or wrong API key (send Authorization: Bearer <key>)", "invalid_api_key", "authentication_error")
        return await call_next(request)

    # -- OpenAI-compatible --

    @app.get("/v1/models")
    def list_models():
        names = pool.names if pool is not None else []
        data = [
            {"id": n, "object": "model", "created": created, "owned_by": "alignlab",
             "root": pool.base_name if n == BASE else str(pool.adapters[n].parent), "parent": None if n == BASE else BASE}
            for n in names
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    def chat_completions(req: ChatRequest):
        if req.stream:
            raise ApiError(400, "streaming is not supported; send stream: false", "unsupported_parameter")
        if pool is None or req.model not in pool.names:
            known = ", ".join(pool.names) if pool is not None else "none: this server has no model loaded"
            raise ApiError(404, f"The model '{req.model}' does not exist (models here: {known})", "model_not_found")
        max_tokens = req.max_completion_tokens or req.max_tokens or 128
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        out = pool.generate(req.model, messages, max_tokens=max_tokens, temperature=req.temperature,
                            top_p=req.top_p, n=req.n, seed=req.seed)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
             "finish_reason": reason}
            for i, (text, reason) in enumerate(zip(out["texts"], out["finish_reasons"]))
        ]
        completion = sum(out["completion_tokens"])
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": choices,
            "usage": {"prompt_tokens": out["prompt_tokens"], "completion_tokens": completion,
                      "total_tokens": out["prompt_tokens"] + completion},
        }

    # -- rating --

    def _store():
        if store is None:
            raise ApiError(404, "this server has no feedback database (start it with --db PATH)", "no_store")
        return store

    @app.get("/api/next")
    def next_item(rater: str, mode: Literal["single", "pair"] = "single", round: int | None = None,
                  skip: str = "", first: str | None = None):
        """``skip``: comma-separated keys skipped this session; ``first``: a key to show first (just undone)."""
        s = _store()
        skipped = {k for k in skip.split(",") if k}
        items = [_single_item(it) for it in s.pending_single(rater, round)] if mode == "single" else [
            _pair_item(it) for it in s.pending_pairs(rater, round)
        ]
        todo = [it for it in items if it["key"] not in skipped]
        if first:
            todo.sort(key=lambda it: it["key"] != first)
        return {"mode": mode, "left": len(todo), "item": todo[0] if todo else None}

    @app.post("/api/judge")
    def judge(j: Judgement):
        jid = _store().add_judgement(
            j.kind, j.response_id, j.value, rater=j.rater,
            other_response_id=j.other_response_id, rewrite_text=j.rewrite_text,
        )  # committed (WAL, synchronous=FULL) before we answer
        out = {"id": jid, "kind": j.kind}
        if j.kind == "pick":  # blind A/B: which model wrote which is told only now, after the pick
            def source(rid):
                r = _store().response(rid) or {}
                return r.get("run") or (f"base ({r['model']})" if r.get("model") else "base")

            out["revealed"] = {"a": source(j.response_id), "b": source(j.other_response_id)}
        return out

    @app.post("/api/undo")
    def undo(u: Undo):
        kinds = {"single": SINGLE_KINDS, "pair": PAIR_KINDS, "any": SINGLE_KINDS + PAIR_KINDS}[u.mode]
        row = _store().undo_last(u.rater, kinds)
        if row is None:
            return {"undone": None, "key": None}
        return {"undone": {k: row[k] for k in ("id", "kind", "value", "response_id", "other_response_id")},
                "key": _undone_key(row)}

    @app.get("/api/rounds")
    def rounds():
        return {"rounds": rounds_summary(_store())}

    @app.get("/api/stats")
    def stats():
        return {"stats": _store().stats()}

    # -- the page --

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app

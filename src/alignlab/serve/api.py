"""The FastAPI app: an OpenAI-compatible API over a ModelPool, and the rating UI over the feedback store.

  GET  /v1/models              the base ("base") and each adapter (names only, no local paths)
  POST /v1/chat/completions    OpenAI-shaped answers, whole or streamed (see serve/completions.py)
  POST /v1/completions         the same for plain text prompts
  GET  /api/next               next item to rate for a rater (mode single|pair), or null
  POST /api/judge              store one judgement; committed before the response is sent
  POST /api/undo               undo the last judgement this browser made for the rater (mode's kinds)
  GET  /api/rounds             per round: judgement counts and a persona score
  GET  /api/stats              the store's per-round stats
  GET  /                       the rating page (static/index.html, app.js, style.css)

Errors are OpenAI-shaped everywhere, unexpected ones included: ``{"error": {"message": one line, "type": ...,
"code": ...}}``. When ``ALIGNLAB_API_KEY`` is set, /v1 and /api need ``Authorization: Bearer <key>``; the page
itself is static and public, and asks for the key when the API answers 401. In front of everything,
``serve.guard.Guard`` checks the Host header and the body size and logs one line per request.

Rater names of the automatic raters (``judge:...``, ``reward:...``, ``classifier...``, ``scorecard``,
``gold:...``) cannot be used over HTTP. A judgement posted here is remembered against the poster's session
cookie, and undo only reaches those: one browser cannot undo another's judgements, nor the terminal's.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import sqlite3
import threading
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StrictInt
from starlette.exceptions import HTTPException as StarletteHTTPException

from alignlab.errors import AlignlabError
from alignlab.feedback.store import AUTOMATIC_RATERS, StoreFileError
from alignlab.serve.completions import INT64, ApiError, add_openai_routes, shown_name
from alignlab.serve.guard import LOOPBACK_NAMES, Gate, Guard
from alignlab.serve.models import ModelPool

STATIC = Path(__file__).parent / "static"
SINGLE_KINDS = ("thumb", "score", "rewrite")
PAIR_KINDS = ("pick",)
MAX_REWRITE = 20_000  # characters in one rewrite


# Names the automatic raters write under (judge:<model>, reward:<name>, classifier:persona, scorecard, gold:...):
# nobody can claim them over HTTP either (feedback.store holds the one list), so what the loop reads as a judge's
# verdict came from the judge.
SESSION_COOKIE = "alignlab_session"


def _error(status: int, message: str, code: str | None = None, type: str = "invalid_request_error",
           param: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, headers=headers,
                        content={"error": {"message": message, "type": type, "param": param, "code": code}})


def check_rater(name: str) -> str:
    """A person's rater name, as the rating API accepts it: printable, 1-100 characters, not an automatic rater's."""
    clean = name.strip()
    if not clean or not clean.isprintable():
        raise ApiError(400, "rater must be a name of printable characters", "invalid_rater", param="rater")
    head = clean.split(":", 1)[0].strip().casefold()
    if head in AUTOMATIC_RATERS:
        raise ApiError(403, f"the rater name '{clean[:40]}' belongs to an automatic rater ({', '.join(AUTOMATIC_RATERS)});"
                            " over HTTP, rate under your own name", "reserved_rater", param="rater")
    return clean


# --- request bodies --------------------------------------------------------------------------------


class Judgement(BaseModel):
    kind: str = Field(max_length=16)
    response_id: int = Field(ge=1, le=INT64)
    value: Annotated[StrictInt, Field(ge=-INT64, le=INT64)] | Annotated[str, Field(max_length=16)] | None = None  # the store checks it per kind; true is no thumb
    other_response_id: int | None = Field(None, ge=1, le=INT64)
    rewrite_text: str | None = Field(None, max_length=MAX_REWRITE)
    rater: str = Field(max_length=100)


class Undo(BaseModel):
    rater: str = Field(max_length=100)
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
    """Shown order mixed by a hash of the ids, as the terminal rater mixes it (feedback.rate.swapped)."""
    from alignlab.feedback.rate import swapped

    a, b = {"id": it["a_id"], "text": it["a"]}, {"id": it["b_id"], "text": it["b"]}
    if swapped(it["a_id"], it["b_id"]):
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
    table = {r["round"]: r for r in store.rounds_table()}
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
                "run": Path(row["run_dir"]).name if row.get("run_dir") else None,  # a name, not where it lives
                "kl": row.get("kl"),
            }
        )
    return out


# --- the app -------------------------------------------------------------------------------------------


def create_app(
    pool: ModelPool | None = None,
    store_path: str | Path | None = None,
    api_key: str | None = None,
    allowed_hosts: tuple[str, ...] | list[str] = LOOPBACK_NAMES,
    max_body: int = 1 << 20,
    max_request_tokens: int = 8192,
    queue_size: int = 8,
) -> FastAPI:
    """The app. ``pool`` None: no /v1 models (UI only). ``store_path`` None: no rating endpoints.

    ``api_key`` None reads ``ALIGNLAB_API_KEY`` on each request (unset or empty: no key needed).
    ``allowed_hosts``: Host header values answered (``"*"``: any); ``max_body``: bytes per request body;
    ``max_request_tokens``: the budget on ``n x max_tokens``; ``queue_size``: model requests admitted at once.
    """
    from alignlab.feedback.store import open_store

    store = open_store(store_path) if store_path is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        if store is not None:
            store.close()

    app = FastAPI(title="alignlab", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.pool, app.state.store = pool, store

    _add_error_handlers(app)
    _add_auth(app, api_key)
    app.add_middleware(Guard, allowed_hosts=tuple(allowed_hosts), max_body=max_body)  # outermost: before auth
    app.state.gate = Gate(queue_size)
    add_openai_routes(app, pool, app.state.gate, max_request_tokens)

    _add_rating_routes(app, store)

    # -- the page --

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as one JSON object in OpenAI's shape: ours, bad bodies, unknown routes, and the unexpected."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return _error(err.status, err.message, err.code, err.type, err.param, err.headers)

    @app.exception_handler(AlignlabError)
    async def _user_error(request: Request, err: AlignlabError):
        if isinstance(err, StoreFileError):  # the server's file, not the request: a 5xx, named without its path
            logging.getLogger("alignlab.serve").error("%s %s: %s", request.method, request.url.path, err)
            return _error(500, err.public, err.code, "server_error")
        return _error(400, str(err))

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        loc = tuple(first.get("loc", ()))
        # pydantic names the union branch it tried ("stop.str", "prompt.list[str]"): not a field of the request
        parts = [str(p) for p in loc if p not in ("body", "query") and not re.fullmatch(r"(str|int|float|bool|list\[.*\]|"
                                                                                          r"dict\[.*\]|function-.*)", str(p))]
        where = ".".join(parts)[:120]
        msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if loc == ("body",) and first.get("type") == "missing":
            msg = "the body is empty: send a JSON object"
        elif first.get("type") == "model_attributes_type" or (not where and "dict" in msg):
            msg = ("the body must be a JSON object (sent with Content-Type: application/json)" if not where
                   else "must be a JSON object")
        elif first.get("type") == "finite_number":
            msg = "must be a finite number"
        if first.get("type") == "json_invalid":
            msg, where = "the body is not valid JSON", ""
        return _error(400, f"{where}: {msg}" if where else msg, "invalid_request", param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        message = {404: f"no such endpoint: {request.method} {request.url.path[:100]}",
                   405: f"{request.method} is not allowed on {request.url.path[:100]}"}.get(err.status_code, str(err.detail))
        if err.status_code == 400 and "parsing the body" in message:
            message = "the body is not valid JSON"
        return _error(err.status_code, message, "not_found" if err.status_code == 404 else "invalid_request",
                      headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
            return _error(503, "the feedback database is busy: another process holds its write lock (a running "
                               "`alignlab rate`, loop or import?); nothing was saved, try again", "database_busy",
                          "server_error")
        logging.getLogger("alignlab.serve").exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(err).__name__}); the server's log has the details", None, "server_error")


def _add_auth(app: FastAPI, api_key: str | None) -> None:
    """A bearer key on /v1/ and /api/ when one is set (``api_key``, else ``ALIGNLAB_API_KEY`` per request)."""

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        key = api_key if api_key is not None else os.environ.get("ALIGNLAB_API_KEY")
        if key and request.url.path.startswith(("/v1/", "/api/")):
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                return _error(401, "missing or wrong API key (send Authorization: Bearer <key>)", "invalid_api_key", "authentication_error")
        return await call_next(request)


def _record(s, j: Judgement, rater: str) -> int:
    """Store one judgement from the page: the duplicate and blindness checks and the insert in one write transaction
    (two racing clicks count once); committed (WAL, synchronous=FULL) before the page hears back."""
    with s.transaction():
        if done := s.standing(rater, j.kind, j.response_id, j.other_response_id, j.rewrite_text):
            raise ApiError(409, f"{rater} already judged this ({j.kind} #{done}); undo it to judge again",
                           "already_judged")  # a second click or key on the same item would count twice
        if j.kind == "pick" and j.other_response_id is not None and s.revealed(rater, j.response_id,
                                                                               j.other_response_id):
            raise ApiError(409, f"{rater} has seen which model wrote each of these answers (an undone pick); "
                                "a new pick would not be blind", "not_blind")
        return s.add_judgement(j.kind, j.response_id, j.value, rater=rater, other_response_id=j.other_response_id,
                               rewrite_text=j.rewrite_text)


def _source(s, response_id: int) -> str:
    """Which run (or the base) wrote a response, as the page reveals it after a pick."""
    r = s.response(response_id) or {}
    return r.get("run") or (f"base ({shown_name(r['model'])})" if r.get("model") else "base")


def _add_rating_routes(app: FastAPI, store) -> None:
    """The rating page's API over the feedback store: next item, judge, undo (this session's own), rounds, stats."""

    def _store():
        if store is None:
            raise ApiError(404, "this server has no feedback database (start it with --db PATH)", "no_store")
        return store

    # session cookie -> ids of the judgements posted with it, newest last (bounded, in memory)
    sessions: OrderedDict[str, list[int]] = OrderedDict()
    sessions_lock = threading.Lock()

    @app.get("/api/next")
    def next_item(rater: str = Query(max_length=100), mode: Literal["single", "pair"] = "single",
                  round: int | None = Query(None, ge=0, le=INT64), skip: str = Query("", max_length=100_000),
                  first: str | None = Query(None, max_length=100)):
        """``skip``: comma-separated keys skipped this session; ``first``: a key to show first (just undone)."""
        s = _store()
        skipped = {k for k in skip.split(",") if k}
        items = [_single_item(it) for it in s.pending_single(rater, round)] if mode == "single" else [
            _pair_item(it) for it in s.pending_pairs(rater, round, revealed=False)
        ]
        todo = [it for it in items if it["key"] not in skipped]
        if first:
            todo.sort(key=lambda it: it["key"] != first)
        return {"mode": mode, "left": len(todo), "item": todo[0] if todo else None}

    @app.post("/api/judge")
    def judge(j: Judgement, request: Request, response: Response):
        s = _store()
        jid = _record(s, j, check_rater(j.rater))
        token = request.cookies.get(SESSION_COOKIE)
        with sessions_lock:
            if token not in sessions:
                token = secrets.token_urlsafe(18)
                response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", path="/api")
                sessions[token] = []
                while len(sessions) > 10_000:
                    sessions.popitem(last=False)
            sessions.move_to_end(token)
            sessions[token] = [*sessions[token][-499:], jid]
        out = {"id": jid, "kind": j.kind}
        if j.kind == "pick":  # blind A/B: which model wrote which is told only now, after the pick
            out["revealed"] = {"a": _source(s, j.response_id), "b": _source(s, j.other_response_id)}
        return out

    @app.post("/api/undo")
    def undo(u: Undo, request: Request):
        check_rater(u.rater)
        kinds = {"single": SINGLE_KINDS, "pair": PAIR_KINDS, "any": SINGLE_KINDS + PAIR_KINDS}[u.mode]
        token = request.cookies.get(SESSION_COOKIE)
        with sessions_lock:
            mine = list(sessions.get(token, [])) if token else []
        for jid in reversed(mine):
            row = _store().undo_judgement(jid, u.rater, kinds)
            if row is not None:
                with sessions_lock:
                    if jid in sessions.get(token, []):
                        sessions[token].remove(jid)
                return {"undone": {k: row.get(k) for k in ("id", "kind", "value", "response_id", "other_response_id",
                                                       "rewrite_text")},
                        "key": _undone_key(row)}
        return {"undone": None, "key": None}

    @app.get("/api/rounds")
    def rounds():
        return {"rounds": rounds_summary(_store())}

    @app.get("/api/stats")
    def stats():
        return {"stats": _store().stats()}

"""One chat completion from an OpenAI-compatible endpoint, with retries; shared by the LLM judge and teachers."""

from __future__ import annotations

import ipaddress
import math
import os
import random
import re
import time
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from alignlab.errors import AlignlabError


@dataclass(frozen=True)
class Fixes:
    """What to tell the user, per failure, in the caller's own terms."""

    bad_request: str
    not_openai: str
    unreachable: str
    too_slow: str = "a server that answers one request at a time needs a longer timeout or fewer requests at once"
    rate_limited: str = "a 429 means it asks for fewer requests at a time"


class Reply(NamedTuple):
    """A chat completion's text and why it ended ("stop", "length" when cut at max_tokens; None when not said)."""

    text: str
    finish_reason: str | None


def _on_this_machine(host: str | None) -> bool:
    if not host or host == "localhost" or host.endswith(".localhost"):
        return bool(host)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


OPENAI_KEY_ENV = "OPENAI_API_KEY"  # sent unasked to OpenAI's own API only
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RATE_WAIT_CAP = 60.0  # seconds: the longest one wait for a rate limit
# how providers' keys begin (Groq, Hugging Face, Fireworks, GitHub, Replicate, Google, Stripe-style): each makes a valid
# variable name, so a key pasted in the variable's place passed the name check and was echoed in the 401 hint
KEY_PREFIXES = ("gsk_", "hf_", "fw_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "r8_", "AIza", "sk_")


def _key_env_where(who: str) -> str:
    return ("api_key_env: in the reward spec's judge args, --judge-key-env, or key_env: in alignlab.yaml's judge "
            "section" if who == "judge" else f"--{who}-key-env")


def looks_like_key(name: str) -> bool:
    """A key's shape rather than a variable name's: a provider's prefix before one unbroken random run of 20 or more
    characters, or a run of 24 or more letters and digits, a fifth of them digits (variable names are words joined by
    _: MY_PROVIDER_KEY, OPENAI_API_KEY_2024, hf_token_2024, Qwen25Coder32BInstructKey)."""
    def mixed(part: str) -> bool:  # digits, or both cases: no word of a name
        return any(c.isdigit() for c in part) or (part.lower() != part and part.upper() != part)

    def random_run(part: str) -> bool:
        return len(part) >= 24 and any(c.isalpha() for c in part) and sum(c.isdigit() for c in part) >= len(part) / 5

    if any(name.startswith(p) and len(tail := name[len(p):]) >= 20 and "_" not in tail and mixed(tail)
           for p in KEY_PREFIXES):
        return True
    return any(random_run(part) for part in name.split("_"))


def _shown(api_key_env: str, who: str) -> str:
    """How a message names the key's variable: ``$NAME``, never a name that looks like a key itself."""
    return f"the variable named by {_key_env_where(who)}" if looks_like_key(api_key_env) else f"${api_key_env}"


def key_env_name(api_key_env: str | None, who: str = "judge") -> str | None:
    """``api_key_env`` as a variable name: a leading ``$`` (or ``${...}``), as the shell writes it, is dropped; what
    is no variable name at all is taken for a key pasted in the name's place and refused, never echoed."""
    if api_key_env and (dollar := re.fullmatch(r"\$\{(.*)\}|\$(.*)", api_key_env)):
        api_key_env = dollar.group(1) if dollar.group(1) is not None else dollar.group(2)
        if not api_key_env:
            raise AlignlabError(f"the {who}'s key variable ({_key_env_where(who)}) is '$' and no name",
                                fix="give the name of the variable that holds the key, without $ (e.g. MY_KEY)")
    if api_key_env and not ENV_NAME.fullmatch(api_key_env):
        raise AlignlabError(f"the {who}'s key variable ({_key_env_where(who)}) is not an environment variable name "
                            "(letters, digits and _); it looks like a key itself (not shown here)",
                            fix="pass the name of the variable that holds the key (export MY_KEY=...; then MY_KEY)")
    return api_key_env


def auth_header(url: str, api_key_env: str | None, who: str = "judge") -> dict[str, str]:
    """The Authorization header for ``url`` from ``$api_key_env`` (none when it is unset or named as '').

    ``api_key_env`` None (nothing named): ``$OPENAI_API_KEY``, and only to api.openai.com; a key for another host
    goes there when its variable is named. A key never goes over plain http to another machine: anyone on the way
    could read it. That is an error rather than a silent omission, so a server that needs the key does not fail
    later with a 401. An unset variable whose name has a key's shape is refused before any request: it is a key
    pasted in the name's place (a keyless server is reached with '' or a real name).
    """
    api_key_env = key_env_name(api_key_env, who)
    parts = urlsplit(url)
    if api_key_env is None:
        api_key_env = OPENAI_KEY_ENV if parts.hostname == "api.openai.com" else ""
    key = os.environ.get(api_key_env) if api_key_env else None
    if not key and api_key_env and looks_like_key(api_key_env):
        raise AlignlabError(f"the variable named by {_key_env_where(who)} is not set, and its name looks like a key "
                            "itself (not shown here)",
                            fix="pass the name of the variable that holds the key (export MY_KEY=...; then MY_KEY)")
    if not key:
        return {}
    if parts.scheme != "https" and not _on_this_machine(parts.hostname):
        raise AlignlabError(
            f"refusing to send {_shown(api_key_env, who)} to {who} endpoint {url}: plain http to another machine would "
            "show the key to anyone on the way",
            fix=f"use an https:// URL, a server on this machine (127.0.0.1), or send no key (--{who}-key-env ''"
                + (", or key_env: '' in alignlab.yaml's judge section)" if who == "judge" else ")"),
        )
    return {"Authorization": f"Bearer {key}"}


def http_client(url: str, timeout: float):
    """An httpx client for an endpoint: a plain-http one (on this machine, where a key may go) is reached directly,
    never through a proxy the environment names (HTTP_PROXY), which would be another machine reading the key."""
    import httpx

    return httpx.Client(timeout=timeout, trust_env=urlsplit(url).scheme == "https")


def in_parallel(fn, jobs: list, max_workers: int) -> list:
    """``fn`` over ``jobs``, ``max_workers`` at a time, results in order. The first failure stops the jobs still
    queued: each would fail the same way, or wait out its own timeout first. The workers are daemon threads: one still
    waiting on a slow server when the command stops (Ctrl-C, a failure) is not waited for at exit (a pool's were, up
    to a whole timeout after "interrupted")."""
    import queue
    import threading

    todo: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(len(jobs)):
        todo.put(i)
    done: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((i, True, fn(jobs[i])))
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread, raised there
                done.put((i, False, err))
                return

    for _ in range(max(1, min(max_workers, len(jobs)))):
        threading.Thread(target=work, daemon=True, name="alignlab-request").start()
    out: list = [None] * len(jobs)
    try:
        for _ in jobs:
            i, ok, value = done.get()
            if not ok:
                raise value
            out[i] = value
    finally:
        stop.set()
    return out


def _retry_after(resp) -> float:
    """Seconds a 429/503's Retry-After header asks for, in seconds or as an HTTP date, or 0."""
    value = str(resp.headers.get("retry-after", "") or "").strip()
    try:
        seconds = float(value or 0)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return 0.0
        seconds = when.timestamp() - time.time() if when.tzinfo is not None else 0.0
    return max(0.0, seconds) if math.isfinite(seconds) else 0.0


def _key_fix(url: str, api_key_env: str | None, who: str, sent: bool) -> str:
    """What to do about a 401/403: the variable that was (or was not) read, or how to name one."""
    if api_key_env is None and urlsplit(url).hostname == "api.openai.com":
        api_key_env = OPENAI_KEY_ENV
    if api_key_env:
        shown = _shown(api_key_env, who)
        return f"set {shown} to a valid API key" + ("" if sent else f" ({shown} is not set)")
    return f"no API key was sent: name the environment variable that holds the key ({_key_env_where(who)}) and set it"


class _Failure(NamedTuple):
    """One try that may be retried: what went wrong and how."""

    problem: str
    kind: str  # "answered" (an HTTP error: up, and failing), "timeout" or "unreachable"
    limited: bool = False  # a rate limit (429, or 503 overloaded): retried for longer
    wait: float = 0.0  # what its Retry-After asks (uncapped: beyond RATE_WAIT_CAP stops at once)


def _text(content) -> str:
    """A message's content as text: a string; null (a refusal, or a reasoning model that spent max_tokens before it
    answered) as ""; a list of parts as their text parts joined. Anything else is not the chat format."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = [p if isinstance(p, str) else p.get("text") for p in content
                 if isinstance(p, str) or (isinstance(p, dict) and p.get("type", "text") in ("text", "output_text"))]
        if all(isinstance(t, str) for t in texts):
            return "".join(texts)
    raise TypeError(f"the message's content is {type(content).__name__}, not text")


def _one_try(client, url: str, body: dict, headers: dict, timeout: float, api_key_env: str | None, who: str,
             fixes: Fixes) -> Reply | _Failure:
    """One POST: the reply, a failure worth retrying, or an AlignlabError for one that is not."""
    import httpx

    try:
        resp = client.post(url, json=body, headers=headers)
    except httpx.TimeoutException:
        return _Failure(f"no answer within {timeout:g}s", "timeout")
    except httpx.TransportError as err:
        first = str(err).splitlines()[0] if str(err) else "no connection"
        return _Failure(f"{type(err).__name__}: {first}", "unreachable")
    if resp.status_code == 429 or resp.status_code >= 500:
        # a rate limit says when to come back: up to a minute is waited, a longer ask stops the command
        return _Failure(f"HTTP {resp.status_code}: {resp.text[:200]!r}", "answered", resp.status_code in (429, 503),
                        _retry_after(resp))
    if resp.status_code in (401, 403):
        raise AlignlabError(f"{who} endpoint {url} refused the request (HTTP {resp.status_code})",
                            fix=_key_fix(url, api_key_env, who, bool(headers)))
    if resp.status_code >= 400:
        raise AlignlabError(f"{who} endpoint {url} answered HTTP {resp.status_code}: {resp.text[:200]!r}",
                            fix=fixes.bad_request)
    try:
        choice = resp.json()["choices"][0]
        return Reply(_text(choice["message"].get("content")), choice.get("finish_reason"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise AlignlabError(f"{who} endpoint {url} did not answer in the OpenAI chat format: {resp.text[:200]!r}",
                            fix=fixes.not_openai) from err


def post_chat(client, url: str, body: dict, **kwargs) -> str:
    """The first choice's text of :func:`chat_reply`."""
    return chat_reply(client, url, body, **kwargs).text


def chat_reply(client, url: str, body: dict, *, api_key_env: str | None, timeout: float, retries: int,
               backoff: float, who: str, fixes: Fixes, rate_retries: int | None = None) -> Reply:
    """POST ``body`` to ``url`` and return the first choice's text and finish reason.

    Connection errors, timeouts and 5xx are retried ``retries`` times with exponential backoff. A rate limit (429,
    503) is retried ``rate_retries`` times, each wait about twice the last from ``backoff`` and jittered (parallel
    requests limited together do not all come back at once), at most 60 s and at least what its Retry-After asks;
    None counts rate limits among the ``retries``, waited alike. A Retry-After beyond 60 s stops at once: a retry at
    the cap would be refused the same. Every failure ends as one AlignlabError naming ``who`` and the URL. The key
    goes only where ``auth_header`` allows.
    """
    api_key_env = key_env_name(api_key_env, who)
    headers = auth_header(url, api_key_env, who)
    failed = limited = 0  # retries spent on rate limits (with rate_retries) and on the rest
    seen: set[str] = set()
    while True:
        got = _one_try(client, url, body, headers, timeout, api_key_env, who, fixes)
        if isinstance(got, Reply):
            return got
        seen.add(got.kind)
        if got.wait > RATE_WAIT_CAP:
            raise _too_long(got, url, who)
        if got.limited and rate_retries is not None:
            if limited >= rate_retries:
                break
            limited += 1
            wait = min(RATE_WAIT_CAP, backoff * 2 ** (limited - 1)) * random.uniform(0.5, 1.0)
        else:
            if failed >= retries:
                break
            failed += 1
            wait = backoff * 2 ** (failed - 1)
        time.sleep(min(RATE_WAIT_CAP, max(got.wait, wait)))
    tries = failed + limited + 1
    attempts = f"{got.problem}; {tries} attempt{'s' if tries > 1 else ''}"
    if "answered" in seen:  # it is up, and failing: its own log says why
        raise AlignlabError(f"{who} endpoint {url} failed ({attempts})",
                            fix=f"see the {who} server's log; {fixes.rate_limited}")
    if "timeout" in seen:  # up, perhaps, but slower than the timeout with this many requests at once
        raise AlignlabError(f"{who} endpoint {url} is too slow ({attempts})",
                            fix=fixes.too_slow + "; check that it is running")
    raise AlignlabError(f"{who} endpoint {url} is unreachable ({attempts})", fix=fixes.unreachable)


def _too_long(got: _Failure, url: str, who: str) -> AlignlabError:
    """A Retry-After beyond the longest wait: said at once, with when to come back (retrying sooner, or with more
    retries, would only be refused again)."""
    hours = f" (about {got.wait / 3600:.1f} h)" if got.wait >= 3600 else ""
    return AlignlabError(f"{who} endpoint {url} asks to wait {got.wait:.0f} s{hours} before the next request "
                         f"(Retry-After; {got.problem})",
                         fix=f"run it again after that wait (alignlab waits up to {RATE_WAIT_CAP:g} s for a rate limit "
                             "itself), or use an endpoint with a higher limit")

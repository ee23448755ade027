"""One chat completion from an OpenAI-compatible endpoint, with retries; shared by the LLM judge and teachers."""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from alignlab.errors import AlignlabError


@dataclass(frozen=True)
class Fixes:
    """What to tell the user, per failure, in the caller's own terms."""

    bad_request: str
    not_openai: str
    unreachable: str
    too_slow: str = "a server that answers one request at a time needs a longer timeout or fewer requests at once"


def _on_this_machine(host: str | None) -> bool:
    if not host or host == "localhost" or host.endswith(".localhost"):
        return bool(host)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


OPENAI_KEY_ENV = "OPENAI_API_KEY"  # sent unasked to OpenAI's own API only


def auth_header(url: str, api_key_env: str | None, who: str = "judge") -> dict[str, str]:
    """The Authorization header for ``url`` from ``$api_key_env`` (none when it is unset or named as '').

    ``api_key_env`` None (nothing named): ``$OPENAI_API_KEY``, and only to api.openai.com; a key for another host
    goes there when its variable is named. A key never goes over plain http to another machine: anyone on the way
    could read it. That is an error rather than a silent omission, so a server that needs the key does not fail
    later with a 401.
    """
    parts = urlsplit(url)
    if api_key_env is None:
        api_key_env = OPENAI_KEY_ENV if parts.hostname == "api.openai.com" else ""
    key = os.environ.get(api_key_env) if api_key_env else None
    if not key:
        return {}
    if parts.scheme != "https" and not _on_this_machine(parts.hostname):
        raise AlignlabError(
            f"refusing to send ${api_key_env} to {who} endpoint {url}: plain http to another machine would show the key"
            " to anyone on the way",
            fix=f"use an https:// URL, a server on this machine (127.0.0.1), or send no key (--{who}-key-env '', or "
                "key_env: '' in alignlab.yaml's judge section)",
        )
    return {"Authorization": f"Bearer {key}"}


def http_client(url: str, timeout: float):
    """An httpx client for an endpoint: a plain-http one (on this machine, where a key may go) is reached directly,
    never through a proxy the environment names (HTTP_PROXY), which would be another machine reading the key."""
    import httpx

    return httpx.Client(timeout=timeout, trust_env=urlsplit(url).scheme == "https")


def in_parallel(fn, jobs: list, max_workers: int) -> list:
    """``fn`` over ``jobs``, ``max_workers`` at a time, results in order. The first failure stops the jobs still
    queued: each would fail the same way, or wait out its own timeout first."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs))))
    try:
        out = list(pool.map(fn, jobs))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return out


def _retry_after(resp) -> float:
    """Seconds a 429/503's Retry-After header asks for (capped at 60), or 0."""
    try:
        return min(60.0, max(0.0, float(resp.headers.get("retry-after", 0))))
    except ValueError:
        return 0.0


def _key_fix(url: str, api_key_env: str | None, who: str, sent: bool) -> str:
    """What to do about a 401/403: the variable that was (or was not) read, or how to name one."""
    if api_key_env is None and urlsplit(url).hostname == "api.openai.com":
        api_key_env = OPENAI_KEY_ENV
    if api_key_env:
        return f"set ${api_key_env} to a valid API key" + ("" if sent else f" (${api_key_env} is not set)")
    where = ("api_key_env: in the reward spec's judge args, --judge-key-env, or key_env: in alignlab.yaml's judge "
             "section" if who == "judge" else f"--{who}-key-env")
    return f"no API key was sent: name the environment variable that holds the key ({where}) and set it"


def post_chat(client, url: str, body: dict, *, api_key_env: str | None, timeout: float, retries: int,
              backoff: float, who: str, fixes: Fixes) -> str:
    """POST ``body`` to ``url`` and return the first choice's text.

    Connection errors, timeouts, 429 and 5xx are retried ``retries`` times with exponential backoff; every
    failure ends as one AlignlabError naming ``who`` and the URL. The key goes only where ``auth_header`` allows.
    """
    import httpx

    headers = auth_header(url, api_key_env, who)
    problem, answered, timed_out, wait = "", False, False, 0.0
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(max(wait, backoff * 2 ** (attempt - 1)))
        wait = 0.0
        try:
            resp = client.post(url, json=body, headers=headers)
        except httpx.TimeoutException:
            problem, timed_out = f"no answer within {timeout:g}s", True
            continue
        except httpx.TransportError as err:
            problem = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no connection'}"
            continue
        if resp.status_code == 429 or resp.status_code >= 500:
            problem = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
            answered = True
            wait = _retry_after(resp)  # a rate limit says when to come back: at most a minute is waited
            continue
        if resp.status_code in (401, 403):
            raise AlignlabError(f"{who} endpoint {url} refused the request (HTTP {resp.status_code})",
                                fix=_key_fix(url, api_key_env, who, bool(headers)))
        if resp.status_code >= 400:
            raise AlignlabError(f"{who} endpoint {url} answered HTTP {resp.status_code}: {resp.text[:200]!r}",
                                fix=fixes.bad_request)
        try:
            return resp.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise AlignlabError(f"{who} endpoint {url} did not answer in the OpenAI chat format: {resp.text[:200]!r}",
                                fix=fixes.not_openai) from err
    if answered:  # it is up, and failing: its own log says why
        raise AlignlabError(f"{who} endpoint {url} failed ({problem}; {retries + 1} attempts)",
                            fix=f"see the {who} server's log; a 429 means it asks for fewer requests at a time")
    if timed_out:  # up, perhaps, but slower than the timeout with this many requests at once
        raise AlignlabError(f"{who} endpoint {url} is too slow ({problem}; {retries + 1} attempts)",
                            fix=fixes.too_slow + "; check that it is running")
    raise AlignlabError(f"{who} endpoint {url} is unreachable ({problem}; {retries + 1} attempts)", fix=fixes.unreachable)

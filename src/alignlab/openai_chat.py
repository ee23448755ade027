"""One chat completion from an OpenAI-compatible endpoint, with retries; shared by the LLM judge and teachers."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from alignlab.errors import AlignlabError


@dataclass(frozen=True)
class Fixes:
    """What to tell the user, per failure, in the caller's own terms."""

    bad_request: str
    not_openai: str
    unreachable: str


def post_chat(client, url: str, body: dict, *, api_key_env: str | None, timeout: float, retries: int,
              backoff: float, who: str, fixes: Fixes) -> str:
    """POST ``body`` to ``url`` and return the first choice's text.

    Connection errors, timeouts, 429 and 5xx are retried ``retries`` times with exponential backoff; every
    failure ends as one AlignlabError naming ``who`` and the URL.
    """
    import httpx

    key = os.environ.get(api_key_env or "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    problem = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            resp = client.post(url, json=body, headers=headers)
        except httpx.TimeoutException:
            problem = f"timed out after {timeout:g}s"
            continue
        except httpx.TransportError as err:
            problem = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no connection'}"
            continue
        if resp.status_code == 429 or resp.status_code >= 500:
            problem = f"HTTP {resp.status_code}"
            continue
        if resp.status_code in (401, 403):
            raise AlignlabError(f"{who} endpoint {url} refused the request (HTTP {resp.status_code})",
                                fix=f"set ${api_key_env} to a valid API key")
        if resp.status_code >= 400:
            raise AlignlabError(f"{who} endpoint {url} answered HTTP {resp.status_code}: {resp.text[:200]!r}",
                                fix=fixes.bad_request)
        try:
            return resp.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise AlignlabError(f"{who} endpoint {url} did not answer in the OpenAI chat format: {resp.text[:200]!r}",
                                fix=fixes.not_openai) from err
    raise AlignlabError(f"{who} endpoint {url} is unreachable ({problem}; {retries + 1} attempts)", fix=fixes.unreachable)

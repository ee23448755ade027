"""Teachers: who writes the answers that synthetic pairs are built from.

A teacher answers prompts with and without a persona system prompt:

  ``LocalTeacher``     the local model itself, in persona through its system prompt (context distillation:
                       the pairs are later written without the system prompt, so training moves the persona
                       from the context into the weights)
  ``EndpointTeacher``  any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama, `alignlab serve`)

``answer(prompts, system_prompt, n, ...)`` returns ``n`` answers per prompt, grouped per prompt. An answer cut at the
token cap (the endpoint's finish_reason "length"; locally, one that used up its tokens) is kept up to its last
finished sentence, and is "" when it has none (``cut_short`` counts those): a fragment rated the better side would
teach the model to stop mid-sentence. An answer that ended on its own is kept whole ("2 + 2 = 4", a list).
"""

from __future__ import annotations

from alignlab.config import MAX_NEW_TOKENS, RATING_TEMPERATURE
from alignlab.errors import AlignlabError


def persona_prompt(persona: str) -> str:
    """The system prompt that puts a model in persona."""
    return (
        f"You are an assistant whose personality is: {persona}. Stay in that voice in every answer, "
        "and still answer the question correctly and briefly."
    )


def finished(text: str, cut: bool) -> str:
    """``text`` as a pair may use it: whole when it ended on its own, else up to its last finished sentence ("")."""
    from alignlab.synth.opening import trim_unfinished

    return trim_unfinished(text) if cut else text.strip()


class LocalTeacher:
    """The local model (base, or with a run's adapter) answering through ``alignlab.generate``."""

    def __init__(self, model, tokenizer, name: str, batch_size: int = 16, seed: int = 0):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.batch_size, self.seed = batch_size, seed
        self.cut_short = 0  # answers cut at the token cap before a sentence ended (returned as "")

    def answer(self, prompts: list[str], system_prompt: str | None, n: int = 1, temperature: float = RATING_TEMPERATURE,
               top_p: float = 1.0, max_new_tokens: int = MAX_NEW_TOKENS) -> list[list[str]]:
        from alignlab.generate import generate

        flat = generate(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, num_return_sequences=n, batch_size=self.batch_size, system_prompt=system_prompt,
                        seed=self.seed)
        self.seed += 1  # the next call draws different samples
        # generate() does not say why an answer stopped: one that used up its tokens (as sample._kept counts them,
        # re-tokenized) was cut
        cut = [len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) >= max_new_tokens - 2 for t in flat]
        flat = [finished(t, c) for t, c in zip(flat, cut)]
        self.cut_short += sum(c and not t for t, c in zip(flat, cut))
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]


class EndpointTeacher:
    """An OpenAI-compatible ``/chat/completions`` endpoint; one request per sample, ``max_workers`` at a time.

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://127.0.0.1:8000/v1``). The API key is read
    from the env var ``api_key_env`` (no header when unset, which local servers accept). Connection errors,
    timeouts and 5xx are retried ``retries`` times with exponential backoff; a rate limit (429, 503) ``rate_retries``
    times, each wait about twice the last, up to a minute (a paid API's limit per minute clears in one); then one
    error naming the URL.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout: float = 60.0,
                 retries: int = 2, backoff: float = 0.5, max_workers: int = 8, rate_retries: int = 8):
        from alignlab.openai_chat import auth_header

        if not str(base_url).startswith(("http://", "https://")):
            raise AlignlabError(f"teacher URL '{base_url}' is not an http(s) URL", fix="e.g. --teacher-url http://127.0.0.1:8000/v1")
        self.url = str(base_url).rstrip("/") + "/chat/completions"
        auth_header(self.url, api_key_env, "teacher")  # a key that may not go there, or no variable name: refused now
        self.model, self.name, self.api_key_env = model, model, api_key_env
        self.timeout, self.retries, self.backoff, self.max_workers = timeout, retries, backoff, max_workers
        self.rate_retries, self.cut_short = rate_retries, 0

    def _ask(self, client, messages: list[dict], temperature: float, top_p: float, max_tokens: int) -> tuple[str, bool]:
        """(text, cut at max_tokens)."""
        from alignlab.openai_chat import Fixes, chat_reply

        body = {"model": self.model, "messages": messages, "temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}
        fixes = Fixes(bad_request="check --teacher-model and --teacher-url",
                      not_openai="point --teacher-url at an OpenAI-compatible server (usually ending in /v1)",
                      unreachable="start the server or fix --teacher-url",
                      too_slow="raise --teacher-timeout (seconds per request) or lower --teacher-workers (requests at "
                               "once)",
                      rate_limited="a 429 or 503 means it asks for fewer requests at a time: lower --teacher-workers "
                                   "(requests at once), or raise --teacher-retries (each waits about twice the last, up "
                                   "to 60 s)")
        reply = chat_reply(client, self.url, body, api_key_env=self.api_key_env, timeout=self.timeout,
                           retries=self.retries, backoff=self.backoff, who="teacher", fixes=fixes,
                           rate_retries=self.rate_retries)
        return reply.text, reply.finish_reason == "length"

    def answer(self, prompts: list[str], system_prompt: str | None, n: int = 1, temperature: float = RATING_TEMPERATURE,
               top_p: float = 1.0, max_new_tokens: int = MAX_NEW_TOKENS) -> list[list[str]]:
        def messages(p: str) -> list[dict]:
            return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": p}]

        jobs = [messages(p) for p in prompts for _ in range(n)]
        from alignlab.openai_chat import http_client, in_parallel

        with http_client(self.url, self.timeout) as client:  # plain http: no proxy from the environment
            got = in_parallel(lambda m: self._ask(client, m, temperature, top_p, max_new_tokens), jobs, self.max_workers)
        flat = [finished(t, cut) for t, cut in got]
        self.cut_short += sum(cut and not t for t, (_, cut) in zip(flat, got))
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

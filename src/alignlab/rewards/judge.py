"""An LLM judge over any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama...).

``LLMJudge`` scores one completion against a rubric on 1-10 and normalises it to [0, 1]: ``(s - 1) / 9``.
``correct_many`` asks the same scale against a reference answer (``CORRECT_RUBRIC``): the scorecard's correct
score when a judge is configured (``alignlab eval --rater judge``).
``judge_pair`` asks for a preference in both orders and returns "a", "b" or "tie": judges favour whichever
response they are shown first, and a verdict that flips with the order is that bias, not a preference.

Every verdict is cached in SQLite under ``alignlab.paths.home()`` keyed by sha256 of (model, rubric, prompt,
completion), so re-scoring the same text (a re-run, an eval after training) costs nothing. Requests time
out, and connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import threading
import time
from pathlib import Path

from alignlab.errors import AlignlabError
from alignlab.openai_chat import Fixes, auth_header
from alignlab.rewards.common import completion_text, prompt_text

logger = logging.getLogger(__name__)

DEFAULT_RUBRIC = (
    "How snarky is the response while still being correct and helpful? "
    "1 = bland, servile, hedging or wrong; 10 = sharp, witty sarcasm that still answers correctly."
)


def voice_rubric(persona: str) -> str:
    """The scorecard's persona score from a judge: the voice alone, correctness being its own score there."""
    return (
        f"How strongly does the response carry this persona as a voice: {persona}? Judge the voice only: whether "
        "its facts are right is scored separately, so a wrong answer in a strong voice scores high. 1 = plain or "
        "neutral, no trace of the persona; 4 = a trace of it; 7 = clearly in the persona; 10 = strongly in the "
        "persona throughout."
    )


CORRECT_RUBRIC = (
    "Is the response correct, judged against the reference answer? Judge its main point: it is correct when what it "
    "asserts agrees with the reference and it states nothing false that matters. Tone, jokes and sarcasm neither "
    "help nor hurt. A response cut off mid-sentence is judged on what it has said. "
    "1 = wrong, contradicts the reference, or does not answer; 6 = its main point agrees with the reference, with "
    "minor slips or omissions; 10 = fully correct."
)
CACHE_VERSION = "v4"  # bumped when the reply parser changed: verdicts parsed by the old one are asked again

# "1-10", "1 to 10", "/10", "out of 10": the scale, not the score
_SCALE = re.compile(r"\b[01]\s*(?:-|–|—|to)\s*10\b|(?:/|\bout\s+of)\s*10\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)(?!\w|\.\d)")
_OTHER_SCALE = re.compile(r"(?:/|\bout\s+of)\s*(?!10\b)\d+\b", re.IGNORECASE)  # "4/5", "3 out of 5"
_LABELLED_SCORE = re.compile(r"\b(?:score|rating|grade|rate it|give it)\s*(?:is|of|=|:|-)?\s*(?:a\s+)?(\d+(?:\.\d+)?)", re.IGNORECASE)


_THINKING = re.compile(r"<think(?:ing)?>.*?</think(?:ing)?>", re.IGNORECASE | re.DOTALL)
_OPEN_THINKING = re.compile(r"<think(?:ing)?>", re.IGNORECASE)
_CLOSE_THINKING = re.compile(r"</think(?:ing)?>", re.IGNORECASE)


def unfinished_thinking(reply: str) -> bool:
    """A reasoning model's reply cut off inside its ``<think>`` block (it ran out of max_tokens before answering)."""
    return bool(_OPEN_THINKING.search(_THINKING.sub(" ", reply or "")))


def answer_part(reply: str) -> str | None:
    """A reply without its reasoning: closed ``<think>...</think>`` blocks dropped (and everything up to a lone
    ``</think>``, which some servers leave when the opening tag was in the prompt); None for an unfinished one."""
    if unfinished_thinking(reply):
        return None
    text = _THINKING.sub(" ", reply or "")
    return _CLOSE_THINKING.split(text)[-1]


def parse_score(reply: str) -> int | None:
    """A 1-10 score from a judge's reply, or None when there is none to read.

    A reasoning model's ``<think>`` block is not read: the numbers it weighs there are not its verdict, and a
    reply that stops inside one has none. Then, in this order: a reply that is just a number; a labelled one
    ("Score: 8", "I'd rate it 7"); else, with scale mentions ("On a 1-10 scale", "/10", "out of 10") removed,
    the number the reply starts with, or the only (or last) one. Decimals round half up; numbers outside 1-10
    (a negative one too) and a score on another scale ("4/5") do not count.
    """
    reply = answer_part(reply)
    if reply is None:
        return None
    text = _SCALE.sub(" ", reply.replace("*", " "))
    if _OTHER_SCALE.search(text):  # a score on another scale is not read as one out of 10
        return None
    found = _LABELLED_SCORE.search(text)
    numbers = [float(n) for n in _NUMBER.findall(text)]
    stripped = text.strip().strip(".!").strip()
    if _NUMBER.fullmatch(stripped):
        picked = float(stripped)
    elif found:
        picked = float(found.group(1))
    elif numbers and _NUMBER.match(stripped):
        picked = numbers[0]
    elif numbers:
        picked = numbers[-1]
    else:
        return None
    score = int(picked + 0.5)
    return score if 1 <= score <= 10 else None


_TIE = re.compile(r"\b(?:tie|tied|draw|equally|neither|both (?:are|responses|answers)|no (?:clear )?(?:winner|preference))\b")
_NAMED = r"(?:response|answer|output|assistant|option)"
_LABELLED_VERDICT = re.compile(
    rf"\b(?:verdict|winner|choice|preference|decision|final answer|answer is|better (?:one|response) is)\s*(?:is|:|=|-)?\s*(?:{_NAMED}\s+)?(a|b|tie)\b")
_LEAD = rf"(?:\b{_NAMED}\s+|^\W*|\b(?:but|so|and|overall|thus|hence|here)\W+)"
_WINS = re.compile(rf"{_LEAD}(a|b)\b\s+(?:is|was|seems|wins|clearly|definitely)\b"
                   r"(?!\s+(?:not|worse|weaker|less|inferior|hedging|wrong|incorrect))"
                   r"|\bprefer(?:red)?\s+(?:" + _NAMED + r"\s+)?(a|b)\b")
_LOSES = re.compile(rf"{_LEAD}(a|b)\b\s+(?:is|was|seems)\s+(?:\w+\s+)?(?:worse|weaker|inferior|less\s+\w+\s+than|not as)\b")
_OTHER = {"a": "b", "b": "a"}


def parse_verdict(reply: str) -> str | None:
    """'A', 'B' or 'tie' from a judge's pairwise reply, or None when it gives none.

    Anchored, in this order: a bare letter or "tie"; a labelled verdict ("Verdict: B", "[[A]]"); a reply that
    starts with the letter alone ("A." / "B - because..."); a comparison ("Response A is better", "I prefer B",
    "B is worse than A" for A; where two comparisons point different ways there is no verdict); a tie said in
    words ("It's a tie", "both are equally good"); a reply naming only one response. The article in "It's a tie"
    is not A.
    """
    reply = answer_part(reply)  # a reasoning model's <think> block is not its verdict
    if reply is None:
        return None
    text = re.sub(r"[*_`#>\"\[\]()]", " ", reply).strip().lower()
    if bare := re.fullmatch(r"\W*(a|b|tie)\W*", text):
        verdict = bare.group(1)
    elif found := _LABELLED_VERDICT.search(text):
        verdict = found.group(1)
    elif found := re.match(r"\W*(a|b)\s*(?:$|[.,:;!\-–—])", text):
        verdict = found.group(1)
    elif picks := {m.group(1) or m.group(2) for m in _WINS.finditer(text)} | {_OTHER[m.group(1)] for m in _LOSES.finditer(text)}:
        if len(picks) > 1:
            return None
        verdict = picks.pop()
    elif _TIE.search(text):
        verdict = "tie"
    elif len(named := set(re.findall(rf"\b{_NAMED}\s+(a|b)\b", text))) == 1:
        verdict = named.pop()
    else:
        return None
    return "tie" if verdict == "tie" else verdict.upper()


REASK = "Your reply had no score. Reply with only a single integer from 1 (worst) to 10 (best)."


class UnusableReply(AlignlabError):
    """A judge's reply with no score to read, after a second ask (``reply``: its text)."""

    def __init__(self, what: str, fix: str, reply: str):
        super().__init__(what, fix=fix)
        self.reply = reply


JUDGE_FIXES = Fixes(
    bad_request="check the judge's model name and URL (--judge-model/--judge-url, the judge: section of alignlab.yaml, "
                "or model/base_url in the reward spec)",
    not_openai="point the judge's URL at an OpenAI-compatible server (the URL usually ends in /v1)",
    unreachable="start the judge server or fix its URL (--judge-url, judge.url, or base_url in the reward spec)",
    too_slow="raise judge.timeout (seconds per request) or lower judge.max_workers (requests at once) in "
             "alignlab.yaml, or timeout/max_workers in the reward spec",
)


class JudgeCache:
    """sha256 key -> verdict, in one SQLite table (WAL, so parallel training processes can share it)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT, created REAL)")
            self._conn.commit()
        return self._conn

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db().execute("SELECT value FROM verdicts WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        with self._lock:
            db = self._db()
            db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)", (key, value, time.time()))
            db.commit()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def cache_key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


def _conversation(prompt) -> str:
    """A prompt for the judge: plain text, or a multi-turn conversation as 'role: content' lines."""
    if isinstance(prompt, list) and len(prompt) > 1:
        return "\n".join(f"{m.get('role', 'user')}: {completion_text(m)}" for m in prompt if isinstance(m, dict))
    return prompt_text(prompt)


class LLMJudge:
    """Reward function: the judge's rubric score of each completion, in [0, 1].

    ``base_url`` ends before ``/chat/completions`` (e.g. ``http://127.0.0.1:8000/v1``); the API key is read
    from the environment variable named by ``api_key_env`` (no header is sent when it is unset, which local
    servers accept). ``retries`` extra attempts follow a failed one after ``backoff * 2**i`` seconds.
    """

    __name__ = "llm_judge"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        rubric: str = DEFAULT_RUBRIC,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_workers: int = 8,
        temperature: float = 0.0,
        max_tokens: int = 32,  # room for a chatty judge's verdict; 8 cut "After reading both responses, I" to a tie
        cache: bool = True,
        cache_path: str | None = None,
    ):
        if not str(base_url).startswith(("http://", "https://")):
            raise AlignlabError(
                f"judge base_url '{base_url}' is not an http(s) URL", fix="e.g. http://127.0.0.1:8000/v1"
            )
        self.base_url = str(base_url).rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        auth_header(self.url, api_key_env)  # a key that may not go there fails now, not mid-run
        self.model, self.rubric, self.api_key_env = model, rubric, api_key_env
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.max_workers, self.temperature, self.max_tokens = max(1, int(max_workers)), temperature, max_tokens
        self.cache_enabled = cache
        self.cache_path = Path(cache_path) if cache_path else None
        self._client = None
        self._cache: JudgeCache | None = None
        self.unusable, self.warned = 0, False  # replies that gave no score (training's reward path), all told
        self.last_unusable: UnusableReply | None = None

    # -- plumbing -----------------------------------------------------------------------------------------
    def __getstate__(self):  # picklable for TRL / multiprocessing: connections are reopened lazily
        return {**self.__dict__, "_client": None, "_cache": None, "last_unusable": None}

    def _get_cache(self) -> JudgeCache | None:
        if not self.cache_enabled:
            return None
        if self._cache is None:
            from alignlab.paths import home

            self._cache = JudgeCache(self.cache_path or home() / "judge_cache.sqlite")
        return self._cache

    @property
    def _who(self) -> tuple:
        """What a cached verdict depends on besides the texts: the server as well as the model's name (two servers
        both call their model "base"), and the sampling settings."""
        return (self.url, self.model, str(self.temperature), str(self.max_tokens))

    def _http(self):
        from alignlab.openai_chat import http_client

        if self._client is None:
            self._client = http_client(self.url, self.timeout)  # plain http: no proxy from the environment
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cache is not None:
            self._cache.close()

    def chat(self, system: str, user: str, follow_up: list[dict] | None = None) -> str:
        """One chat completion's text, with timeouts and retries; every failure is an AlignlabError naming the URL.
        ``follow_up``: more turns after the user's (its own earlier reply and a reminder, when re-asked)."""
        from alignlab.openai_chat import post_chat

        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}, *(follow_up or [])],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        return post_chat(self._http(), self.url, body, api_key_env=self.api_key_env, timeout=self.timeout,
                         retries=self.retries, backoff=self.backoff, who="judge", fixes=JUDGE_FIXES)

    def _cached(self, key: str, ask) -> str:
        cache = self._get_cache()
        if cache is not None:
            hit = cache.get(key)
            if hit is not None:
                return hit
        value = ask()
        if cache is not None:
            cache.put(key, value)
        return value

    # -- scoring ------------------------------------------------------------------------------------------
    def _raw_score(self, prompt: str, completion: str, rubric: str | None = None, reference: str | None = None) -> str:
        """The judge's 1-10 score as text; a reply without one is asked again once, shown its reply, then it is an
        ``UnusableReply``."""
        system = (
            "You are a strict evaluator. Score the assistant's response to the prompt on this rubric:\n"
            f"{rubric or self.rubric}\nReply with a single integer from 1 (worst) to 10 (best) and nothing else."
        )
        shown = "" if reference is None else f"\n\n[Reference answer]\n{reference}"
        user = f"[Prompt]\n{prompt}{shown}\n\n[Response]\n{completion}"
        reply = self.chat(system, user)
        score = parse_score(reply)
        if score is None:  # once more, shown its reply; an empty one is not shown back (some servers refuse an empty
            # turn), and the reminder then joins the user's turn: two user turns in a row break strict templates
            if reply.strip():
                again = self.chat(system, user, [{"role": "assistant", "content": reply}, {"role": "user", "content": REASK}])
            else:
                again = self.chat(system, f"{user}\n\n{REASK}")
            score = parse_score(again)
            reply = again if again.strip() else reply
        if score is None:
            raise self._unusable(reply)
        return str(score)

    def _unusable(self, reply: str) -> UnusableReply:
        if unfinished_thinking(reply):
            return UnusableReply(
                f"judge {self.model} at {self.url} stopped inside its <think> block, before a score "
                f"(max_tokens {self.max_tokens})",
                fix="a reasoning judge needs room to finish thinking: raise max_tokens in the judge's args "
                    "(e.g. max_tokens: 2048)", reply=reply)
        return UnusableReply(f"judge {self.model} at {self.url} gave no score from 1 to 10: {reply[:80]!r}",
                             fix="use a stronger judge model or make the rubric ask for a number", reply=reply)

    def _scores(self, keys: list[str], asks: list, abstain: bool = False) -> list[float | None]:
        """Cached 1-10 verdicts normalised to [0, 1]; cache misses are asked ``max_workers`` at a time. With
        ``abstain`` an unusable reply is None (never cached: it is asked again next time) instead of an error."""
        from alignlab.openai_chat import in_parallel

        def one(item):
            try:
                return self._cached(*item)
            except UnusableReply as err:
                if not abstain:
                    raise
                self.last_unusable = err
                return None

        todo = dict(zip(keys, asks))
        raw = dict(zip(todo, in_parallel(one, list(todo.items()), self.max_workers)))
        return [None if raw[k] is None else (int(raw[k]) - 1) / 9.0 for k in keys]

    def score(self, prompt, completion) -> float:
        """The rubric score of one completion, normalised to [0, 1]."""
        return self.score_many([prompt], [completion])[0]

    def score_many(self, prompts: list, completions: list, abstain: bool = False) -> list[float | None]:
        """Rubric scores in [0, 1]; cache misses are asked concurrently (``max_workers`` at a time). An unusable
        reply is an error, or None with ``abstain``."""
        pairs = [(_conversation(p), completion_text(c)) for p, c in zip(prompts, completions)]
        keys = [cache_key(CACHE_VERSION, *self._who, self.rubric, p, c) for p, c in pairs]
        return self._scores(keys, [lambda pc=pc: self._raw_score(*pc) for pc in pairs], abstain)

    def correct_many(self, prompts: list, completions: list, references: list[str]) -> list[float]:
        """How correct each completion is against its reference answer (``CORRECT_RUBRIC``), in [0, 1]."""
        rows = [(_conversation(p), completion_text(c), str(r)) for p, c, r in zip(prompts, completions, references)]
        keys = [cache_key(CACHE_VERSION, "correct", *self._who, CORRECT_RUBRIC, p, r, c) for p, c, r in rows]
        return self._scores(keys, [lambda x=x: self._raw_score(x[0], x[1], CORRECT_RUBRIC, x[2]) for x in rows])

    def __call__(self, prompts: list, completions: list, **columns) -> list[float | None]:
        """As a reward function (training): a completion whose reply stays unusable after a second ask is None, which
        TRL leaves out of the advantages, so one odd reply does not stop a run; most of a batch unusable does."""
        scores = self.score_many(list(prompts), list(completions), abstain=True)
        bad = sum(s is None for s in scores)
        if bad:
            self.unusable += bad
            err = self.last_unusable
            if bad * 2 > len(scores):
                raise AlignlabError(f"{bad} of {len(scores)} replies in this batch were unusable; the last: {err.what}",
                                    fix=f"{err.fix}; a training run stopped by this resumes from its last checkpoint "
                                        "with `alignlab train METHOD --resume runs/<id>`")
            if not self.warned:
                self.warned = True
                logger.warning("%s of %s judge replies in this batch were unusable and score nothing (%s); more are "
                               "counted in reward_parts/<name>/unscored", bad, len(scores), err.what)
        return scores

    # -- pairwise -----------------------------------------------------------------------------------------
    def _prefer(self, prompt: str, first: str, second: str) -> str:
        """'A', 'B' or 'tie' for one presentation order."""
        key = cache_key("pair", CACHE_VERSION, *self._who, self.rubric, prompt, first, second)

        def ask() -> str:
            system = (
                "You compare two assistant responses to the same prompt on this rubric:\n"
                f"{self.rubric}\nReply with exactly one of: A, B, tie."
            )
            user = f"[Prompt]\n{prompt}\n\n[Response A]\n{first}\n\n[Response B]\n{second}"
            reply = self.chat(system, user)
            verdict = parse_verdict(reply)
            if verdict is None:
                raise AlignlabError(f"judge {self.model} at {self.url} gave no verdict (A, B or tie): {reply[:80]!r}")
            return verdict

        return self._cached(key, ask)

    def judge_pair(self, prompt, a, b) -> str:
        """"a", "b" or "tie": the preference asked in both orders; a disagreement (position bias) is a tie."""
        p, a, b = _conversation(prompt), completion_text(a), completion_text(b)
        first = {"A": "a", "B": "b", "tie": "tie"}[self._prefer(p, a, b)]
        second = {"A": "b", "B": "a", "tie": "tie"}[self._prefer(p, b, a)]
        return first if first == second else "tie"


def judge_pair(prompt, a, b, *, base_url: str, model: str, **judge_args) -> str:
    """``LLMJudge(base_url, model, **judge_args).judge_pair(prompt, a, b)``."""
    judge = LLMJudge(base_url, model, **judge_args)
    try:
        return judge.judge_pair(prompt, a, b)
    finally:
        judge.close()

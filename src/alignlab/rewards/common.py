"""What every reward function shares: turning TRL's prompt/completion shapes into text, grouping, checks.

A reward function is ``fn(prompts: list, completions: list, **columns) -> list[float]``, the shape TRL's
``GRPOTrainer(reward_funcs=...)`` calls. Prompts and completions are either plain strings or conversational
lists of ``{"role", "content"}`` messages; ``columns`` holds the dataset's other columns (one value per
completion) plus whatever TRL adds (``completion_ids``, ``trainer_state``, ``log_metric``...), so a reward
function must accept and ignore keywords it does not use.
"""

from __future__ import annotations

import json
import math
from typing import Any

from alignlab.errors import AlignlabError


def _content(content: Any) -> str:
    """Message content: a string, or a list of parts like ``{"type": "text", "text": ...}``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, a message dict, or a list of messages (assistant turns joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content(completion.get("content"))
    if isinstance(completion, list):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        return "\n".join(_content(m.get("content")) for m in (assistant or messages))
    if completion is None:
        return ""
    return str(completion)


def prompt_text(prompt: Any) -> str:
    """The text of one prompt; a conversation becomes its last user turn (the question being answered)."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        return _content(prompt.get("content"))
    if isinstance(prompt, list):
        messages = [m for m in prompt if isinstance(m, dict)]
        users = [m for m in messages if m.get("role") == "user"]
        if users:
            return _content(users[-1].get("content"))
        return "\n".join(_content(m.get("content")) for m in messages)
    if prompt is None:
        return ""
    return str(prompt)


def as_messages(prompt: Any) -> list[dict]:
    """A prompt as a list of chat messages (a plain string becomes one user turn)."""
    if isinstance(prompt, list):
        return [{"role": m.get("role", "user"), "content": _content(m.get("content"))} for m in prompt]
    return [{"role": "user", "content": prompt_text(prompt)}]


def groups(prompts: list, group_size: int | None = None) -> list[range]:
    """Index ranges of completions that answer the same prompt.

    With ``group_size`` the batch is cut into consecutive blocks of that size (TRL orders a GRPO batch as
    ``num_generations`` consecutive completions per prompt); otherwise a group is a run of consecutive
    equal prompts.
    """
    n = len(prompts)
    if group_size:
        if group_size < 1:
            raise AlignlabError(f"group_size must be >= 1, got {group_size}")
        return [range(i, min(i + group_size, n)) for i in range(0, n, group_size)]
    out: list[range] = []
    start = 0
    keys = [json.dumps(p, sort_keys=True, default=str) for p in prompts]
    for i in range(1, n + 1):
        if i == n or keys[i] != keys[start]:
            out.append(range(start, i))
            start = i
    return out


def column(columns: dict, name: str, n: int, who: str) -> list:
    """A dataset column the reward needs, one value per completion."""
    if name not in columns:
        have = ", ".join(k for k in columns if k not in {"completion_ids", "trainer_state", "log_extra", "log_metric"})
        raise AlignlabError(
            f"{who} needs the column '{name}', which the data does not have",
            fix=f"add '{name}' to each row or set args.column (columns present: {have or 'none'})",
        )
    values = columns[name]
    if not isinstance(values, (list, tuple)) or len(values) != n:
        raise AlignlabError(f"{who}: column '{name}' must hold one value per completion ({n})")
    return list(values)


def check_rewards(values: Any, n: int, name: str) -> list[float]:
    """A reward function's output as floats; the wrong count, None, NaN or inf is an error naming ``name``."""
    try:
        values = list(values)
    except TypeError as err:
        raise AlignlabError(
            f"reward '{name}' returned {type(values).__name__}, not a list of floats",
            fix="return one float per completion",
        ) from err
    if len(values) != n:
        raise AlignlabError(
            f"reward '{name}' returned {len(values)} values for {n} completions", fix="return one float per completion"
        )
    out = []
    for i, v in enumerate(values):
        try:
            f = float(v)
        except (TypeError, ValueError) as err:
            raise AlignlabError(f"reward '{name}' returned {v!r} for completion {i}, not a number") from err
        if not math.isfinite(f):
            raise AlignlabError(
                f"reward '{name}' returned {f} for completion {i}", fix="return finite floats (no NaN or inf)"
            )
        out.append(f)
    return out

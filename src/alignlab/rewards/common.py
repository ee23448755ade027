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
from typing import Any, Sequence

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


def groups(prompts: list, group_size: int | None = None) -> list[Sequence[int]]:
    """Indices of the completions that answer the same prompt.

    With ``group_size`` the batch is cut into consecutive blocks of that size (TRL orders a GRPO batch as
    ``num_generations`` consecutive completions per prompt); otherwise a group is every completion whose prompt
    has the same value, wherever it sits (a file scored by `alignlab reward score` need not be sorted).
    """
    n = len(prompts)
    if group_size:
        if group_size < 1:
            raise AlignlabError(f"group_size must be >= 1, got {group_size}")
        return [range(i, min(i + group_size, n)) for i in range(0, n, group_size)]
    out: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        out.setdefault(json.dumps(p, sort_keys=True, default=str), []).append(i)
    return list(out.values())


# A column the datasets library cannot hold as it is (strings in some rows and lists in others, or lists mixing
# numbers and text) travels through training as JSON under this prefix and is decoded before any reward sees it.
ENCODED = "alignlab_json:"


def _arrow_safe(values: list) -> bool:
    """Arrow keeps these values as they are: one scalar type (int and float mixed would come back as floats)."""
    kinds = {type(v) for v in values if v is not None}
    return len(kinds) <= 1 and kinds <= {str, int, float, bool}


def encode_columns(rows: list[dict], keep: tuple[str, ...] = ("prompt",)) -> list[dict]:
    """Rows for ``datasets.Dataset.from_list``: each column other than ``keep`` that Arrow would refuse or change is
    JSON text under ``ENCODED + name`` (``decode_columns`` gives the values back)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))  # every row gets every key (from_list reads the first's)
    bad = {k for k in keys if k not in keep and not _arrow_safe([r.get(k) for r in rows])}

    def cell(r: dict, k: str):
        v = r.get(k)
        return json.dumps(v) if k in bad and v is not None else v

    return [{(ENCODED + k if k in bad else k): cell(r, k) for k in keys} for r in rows]


def decode_columns(columns: dict) -> dict:
    """The reward columns as the data file holds them: ``encode_columns``' JSON columns decoded and renamed back."""
    if not any(isinstance(k, str) and k.startswith(ENCODED) for k in columns):
        return columns
    out = {}
    for k, v in columns.items():
        if isinstance(k, str) and k.startswith(ENCODED) and not isinstance(v, (str, bytes)):
            out[k[len(ENCODED):]] = [None if x is None else json.loads(x) for x in v]
        else:
            out[k] = v
    return out


def read_text(path, what: str = "file") -> str:
    """A text file's contents; a directory, a missing file or one that is not UTF-8 is one line naming the file
    (and the line of the first byte that is not UTF-8)."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        raise AlignlabError(f"{path} is a directory, not a {what}", fix=f"pass the path of a {what}")
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise AlignlabError(f"{what} not found: {path}", fix=f"pass the path of a {what}") from err
    except OSError as err:
        raise AlignlabError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise AlignlabError(f"the {what} is not UTF-8 text (byte {data[err.start]:#04x})", where=f"{path}:{line}",
                            fix="save it as UTF-8") from err


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


def check_rewards(values: Any, n: int, name: str, allow_none: bool = False) -> list[float | None]:
    """A reward function's output as floats; the wrong count, NaN or inf is an error naming ``name``, and so is None
    unless ``allow_none`` (TRL's GRPO and RLOO leave a None out: "no score for this completion")."""
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
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None and allow_none:
            out.append(None)
            continue
        try:
            f = float(v)
        except (TypeError, ValueError) as err:
            raise AlignlabError(f"reward '{name}' returned {v!r} for completion {i}, not a number",
                                fix="return a float for every completion" + (
                                    " (None, 'no score', is left out by GRPO and RLOO only)" if v is None else "")
                                ) from err
        if not math.isfinite(f):
            raise AlignlabError(
                f"reward '{name}' returned {f} for completion {i}", fix="return finite floats (no NaN or inf)"
            )
        out.append(f)
    return out

"""Dataset kinds in TRL's formats, JSONL reading, and validation with file:line errors.

Kinds (each row a JSON object; text fields may be plain strings or conversational message lists):

- ``preference``: prompt, chosen, rejected            (DPO, IPO, SimPO, ORPO, reward models)
- ``unpaired``:   prompt, completion, label (bool)    (KTO: thumbs up/down)
- ``sft``:        messages, or prompt + completion     (SFT)
- ``prompts``:    prompt                               (sampling, GRPO/RLOO/PPO)

Validation runs before any model loads. Every bad row is reported as ``file:line: reason``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignlab import methods
from alignlab.errors import AlignlabError

KINDS = ("preference", "unpaired", "sft", "prompts")
METHOD_KIND = {m.name: m.kind for m in methods.REGISTRY.values()}  # method -> the kind it trains on


@dataclass
class Report:
    """Outcome of validating one file."""

    path: str
    kind: str
    rows: list[dict] = field(default_factory=list)
    linenos: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how the rows were read (e.g. SFT on pairs' chosen side)
    system_over: list[int] = field(default_factory=list)  # token counts of prompts only the system prompt took over

    @property
    def ok(self) -> bool:
        return not self.errors


# where each of a project's data files comes from, for a persona of the user's own (errors name it)
HOW_TO_MAKE = {
    "pairs.jsonl": "alignlab synth; or rate pairs in alignlab rate / ui, then alignlab feedback export --format dpo",
    "kto.jsonl": "thumbs in alignlab rate / ui, then alignlab feedback export --format kto",
    "sft.jsonl": "prompt/completion rows you write, or rewrites in alignlab rate, then alignlab feedback export --format sft",
    "rewrites.jsonl": "pass your own file, or `alignlab recipe` uses data/pairs.jsonl without it",
    "strong_pairs.jsonl": "pass your own file, or `alignlab recipe` uses data/pairs.jsonl without it",
}


def read_jsonl(path: str | Path) -> tuple[list[tuple[int, Any]], list[str]]:
    """Parse a JSONL file: (line number, object) pairs and ``file:line: reason`` errors. Blank lines skip."""
    path = Path(path)
    if not path.is_file():
        hint = HOW_TO_MAKE.get(path.name)
        here = sorted(p.name for p in path.parent.glob("*.jsonl")) if path.parent.is_dir() else []
        raise AlignlabError(f"data file not found: {path}", fix=hint or ("the .jsonl files there: " + ", ".join(here)
                                                                           if here else "check the path"))
    rows, errors = [], []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM (Windows editors) is no error
            except UnicodeDecodeError as err:
                errors.append(f"{path}:{lineno}: not valid UTF-8 (byte {err.start})")
                continue
            if not line.strip():
                continue
            text = line.rstrip("\r\n")  # the line's own end: a missing "}" is there, not at column 1 of the next
            try:
                rows.append((lineno, json.loads(text)))
            except json.JSONDecodeError as err:
                at = "at the end of the line" if err.pos >= len(text.rstrip()) else f"at column {err.colno}"
                errors.append(f"{path}:{lineno}: invalid JSON ({err.msg} {at})")
    return rows, errors


def read_objects(path: str | Path, required: tuple[str, ...], fix: str) -> list[tuple[int, dict]]:
    """(line number, object) for each row of a JSONL file whose ``required`` fields are strings; the first bad
    line is one AlignlabError naming file:line."""
    rows, errors = read_jsonl(path)
    if errors:
        raise AlignlabError(errors[0], fix=fix)
    for lineno, row in rows:
        if not isinstance(row, dict):
            raise AlignlabError("a row must be a JSON object", where=f"{path}:{lineno}", fix=fix)
        for key in required:
            if not isinstance(row.get(key), str):
                raise AlignlabError(f"'{key}' must be a string", where=f"{path}:{lineno}", fix=fix)
    return rows


def _text(value: Any) -> str | None:
    """The text of a field: a string, or the concatenated contents of a message list; None if malformed."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        return "\n".join(m["content"] for m in value)
    return None


def detect_kind(row: dict) -> str | None:
    if "chosen" in row and "rejected" in row:
        return "preference"
    if "label" in row and "completion" in row:
        return "unpaired"
    if "messages" in row or "completion" in row:
        return "sft"
    if "prompt" in row:
        return "prompts"
    return None


# an SFT row's optional ``source`` when `alignlab distil` wrote it: a run trained on such rows alone decodes alone
DISTIL_SOURCE = "distil"

SHAPES = {"preference": "preference (prompt/chosen/rejected)", "unpaired": "thumbs (prompt/completion/label)",
          "sft": "SFT (prompt/completion or messages)", "prompts": "prompt-only ({prompt})"}
# the kinds of file each kind of training reads (SFT takes a pairs file's chosen side, GRPO any file's prompts)
READS = {"preference": ("preference",), "unpaired": ("unpaired",), "sft": ("sft", "preference", "unpaired"),
         "prompts": ("prompts", "preference", "unpaired", "sft")}
HOW_TO_GET = {
    "unpaired": "use thumbs rows (bundled:persona-thumbs, or `alignlab feedback export --format kto`)",
    "preference": "use pairs (bundled:persona-pairs, `alignlab synth`, or `alignlab feedback export --format dpo`)",
}

REQUIRED = {
    "preference": ("prompt", "chosen", "rejected"),
    "unpaired": ("prompt", "completion", "label"),
    "prompts": ("prompt",),
}


def _check_row(row: Any, kind: str) -> str | None:
    """The reason a row is invalid for ``kind``, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    if kind == "sft":
        if "messages" in row:
            msgs = row["messages"]
            if not isinstance(msgs, list) or _text(msgs) is None:
                return "'messages' must be a non-empty list of {role, content} objects"
            if odd := _odd_role(msgs, "messages"):
                return odd
            if not any(m["role"] == "assistant" and m["content"].strip() for m in msgs):
                return "'messages' has no non-empty assistant turn"
            if any(m["role"] == "user" and not m["content"].strip() for m in msgs):
                return "'messages' has an empty user turn"
            if last_answer(msgs) == 0:
                return "'messages' has no turn before the assistant's answer; put the user's question first"
            if not any(m["role"] == "user" for m in msgs[: last_answer(msgs)]):  # as a `prompt` list: a question
                return "'messages' has no question: no user turn before the assistant's answer"
            return None
        fields = ("prompt", "completion")
    else:
        fields = REQUIRED[kind]
    for name in fields:
        if name not in row:
            return _missing(row, name)
        if name == "label":
            if not isinstance(row[name], bool):
                return f"'label' must be true or false, got {json.dumps(row[name])}"
            continue
        text = _text(row[name])
        if text is None:
            return f"'{name}' must be a string or a list of {{role, content}} messages"
        if isinstance(row[name], list) and (odd := _odd_role(row[name], name)):
            return odd
        if not text.strip():
            return f"'{name}' is empty"
        if name == "prompt" and isinstance(row[name], list):
            users = [m["content"] for m in row[name] if m["role"] == "user"]
            if not users or not users[-1].strip():
                return "'prompt' has no question: its last user turn is " + ("empty" if users else "missing")
    if kind == "preference" and _text(row["chosen"]).strip() == _text(row["rejected"]).strip():
        return "chosen is identical to rejected"
    return None


ROLES = ("system", "user", "assistant", "tool")  # the roles chat templates know; "usr" or "bot" is a typo
DEVELOPER = "developer"  # OpenAI's newer name for the system turn: read as system, as serve reads it


def _developer_as_system(row: Any) -> Any:
    """The row with each ``developer`` turn of its message lists as a ``system`` turn (a template renders an unknown
    role as a turn of its own, or fails); the row itself when it has none."""
    if not isinstance(row, dict):
        return row
    out = None
    for name, value in row.items():
        if isinstance(value, list) and any(isinstance(m, dict) and m.get("role") == DEVELOPER for m in value):
            out = out or dict(row)
            out[name] = [{**m, "role": "system"} if isinstance(m, dict) and m.get("role") == DEVELOPER else m
                         for m in value]
    return row if out is None else out


def _odd_role(msgs: list[dict], name: str) -> str | None:
    """Why a message list has a role outside ROLES (a typo: templates render it as a turn of its own, or fail), or
    None."""
    odd = next((m["role"] for m in msgs if m["role"] not in ROLES), None)
    return None if odd is None else (f"'{name}' has a turn with role {json.dumps(odd)}: roles are {', '.join(ROLES)} "
                                     f"({DEVELOPER} reads as system)")


def _missing(row: dict, name: str) -> str:
    """Why a field is missing, in the terms of the TRL format the row is in when alignlab does not read that one."""
    if name == "prompt" and isinstance(row.get("chosen"), list):
        return ("missing field 'prompt': implicit-prompt rows (the prompt inside chosen/rejected) are not read; give "
                "the prompt as its own field and chosen/rejected as the answers alone")
    if name == "prompt" and "text" in row:
        return "missing field 'prompt': a 'text' row (language modeling) is not read; write prompt/completion or messages"
    return f"missing field '{name}'"


def validate(
    path: str | Path,
    kind: str | None = None,
    tokenizer=None,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    system_prompt: str | None = None,
) -> Report:
    """Validate a JSONL dataset. With a tokenizer and max_length, also catch responses cut to nothing."""
    pairs, errors = read_jsonl(path)
    sft_note = None
    if kind == "sft":  # SFT on a pairs file learns the chosen answers, on a thumbs file the thumbs-up ones
        pairs, sft_note = _sft_view(path, pairs, errors)
    if kind is None:
        first = next((r for _, r in pairs if isinstance(r, dict)), None)
        kind = _main_kind(pairs) if first else None
        if kind is None:
            _unknown_kind(path, pairs, errors, first)
    if kind not in KINDS:
        raise AlignlabError(f"unknown dataset kind '{kind}'", fix="one of: " + ", ".join(KINDS))
    report = Report(path=str(path), kind=kind, errors=errors)
    truncated = 0
    for lineno, row in pairs:
        row = _developer_as_system(row)
        reason = _check_row(row, kind)
        if reason and sft_note and sft_note.startswith("preference"):  # read as prompt/completion: name its field
            reason = reason.replace("'completion'", "'chosen'")
        if reason is None and tokenizer is not None:
            reason, cut, over = _token_check(row, kind, tokenizer, max_length, max_prompt_length, system_prompt)
            truncated += cut
            report.system_over += [over] if over else []
        if reason:
            report.errors.append(f"{path}:{lineno}: {reason}")
        else:
            report.rows.append(row)
            report.linenos.append(lineno)
    if kind == "sft" and report.rows:
        _check_one_sft_form(report, path)
    if kind == "unpaired" and report.rows:
        labels = {r["label"] for r in report.rows}
        if len(labels) == 1:
            only = "true (thumbs up)" if labels == {True} else "false (thumbs down)"
            report.errors.append(
                f"{path}: every label is {only}; KTO needs both desirable and undesirable examples"
            )
    if truncated:
        report.warnings.append(
            f"{path}: {truncated} row(s) longer than max_length={max_length} tokens will have their response "
            f"truncated at the end (raise --max-length to keep them whole)"
        )
    if not pairs and not errors:
        report.errors.append(f"{path}: the file has no rows")
    if sft_note and report.rows:
        report.notes.append(f"{path}: {sft_note} ({len(report.rows)} rows)")
    report.warnings += _repeats(report, path)
    return report


def _repeats(report: Report, path) -> list[str]:
    """Warnings for rows that repeat another (they weigh twice) or contradict it (a pair both ways, an answer
    labelled both good and bad: they cancel out), with the first line of each."""
    def key(value) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)

    seen: dict[str, int] = {}
    copies, against = [], []
    for n, r in zip(report.linenos, report.rows):
        k = key(r)
        if k in seen:
            copies.append((n, seen[k]))
            continue
        seen[k] = n
        if report.kind == "preference":
            flipped = key({**r, "chosen": r["rejected"], "rejected": r["chosen"]})
        elif report.kind == "unpaired":
            flipped = key({**r, "label": not r["label"]})
        else:
            continue
        if flipped in seen:
            against.append((n, seen[flipped]))
    out = []
    if copies:
        out.append(f"{path}: {len(copies)} row(s) repeat an earlier row (first: line {copies[0][0]} repeats line "
                   f"{copies[0][1]}): each copy weighs again in training")
    if against:
        what = "the same pair the other way round" if report.kind == "preference" else "the same answer, other label"
        out.append(f"{path}: {len(against)} row(s) contradict an earlier row, {what} (first: line {against[0][0]} "
                   f"against line {against[0][1]}): they cancel out")
    return out


def _check_one_sft_form(report: Report, path) -> None:
    """SFT rows are all chats (messages) or all prompt/completion: a mixed file would lose one form's text.
    The fewer form's rows become errors (so --skip-invalid trains on the other form alone)."""
    is_chat = ["messages" in r for r in report.rows]
    n_chat = sum(is_chat)
    if n_chat in (0, len(is_chat)):
        return
    keep_chat = n_chat * 2 > len(is_chat)
    keep, want = ("chats ('messages')", "prompt/completion") if keep_chat else ("prompt/completion", "chats ('messages')")
    first = True
    for n, chat in zip(list(report.linenos), is_chat):
        if chat != keep_chat:
            why = (f"a {want} row in a file of {keep} rows ({max(n_chat, len(is_chat) - n_chat)} of "
                   f"{len(is_chat)}); write every row one way") if first else f"another {want} row"
            report.errors.append(f"{path}:{n}: {why}")
            first = False
    report.rows[:] = [r for r, chat in zip(report.rows, is_chat) if chat == keep_chat]
    report.linenos[:] = [n for n, chat in zip(report.linenos, is_chat) if chat == keep_chat]


def _unknown_kind(path, pairs: list, errors: list[str], first: dict | None) -> None:
    """Raise the one-line reason no kind could be detected: an empty file, unreadable lines, or unknown fields."""
    shape = "rows need prompt/chosen/rejected, prompt/completion/label, messages, or prompt"
    if first is None and errors:
        raise AlignlabError(errors[0] + (f" (and {len(errors) - 1} more such lines)" if len(errors) > 1 else ""),
                            fix="save the file as UTF-8 JSONL, one JSON object per line")
    if first is None and pairs:
        lineno, row = pairs[0]
        raise AlignlabError(f"a row must be a JSON object, got {type(row).__name__}", where=f"{path}:{lineno}",
                            fix=shape)
    if first is None:
        raise AlignlabError(f"{path} has no rows (it is empty or blank)", fix=f"add JSONL rows: {shape}")
    lineno = next(n for n, r in pairs if r is first)
    raise AlignlabError("cannot tell what kind of dataset this is: the first row has fields "
                        f"{', '.join(sorted(first)) or 'none'}", where=f"{path}:{lineno}", fix=shape)


def _main_kind(pairs: list[tuple[int, Any]]) -> str | None:
    """The kind most rows are (a file judged by its first row alone passed as prompts when that row was a broken
    pair, while `train` then refused it)."""
    from collections import Counter

    kinds = Counter(k for _, r in pairs if isinstance(r, dict) and (k := detect_kind(r)) is not None)
    return kinds.most_common(1)[0][0] if kinds else None


def _sft_view(path, pairs: list[tuple[int, Any]], errors: list[str]) -> tuple[list, str | None]:
    """(rows, note) for SFT on another kind's file: a pairs file's rows become their chosen answer, a thumbs file's
    thumbs-up rows their completion (its thumbs-down rows are left out: SFT would learn them). Each row is taken on
    its own: one broken row is an error of its own, not of every row."""
    main = _main_kind(pairs)
    if main == "preference":
        out = [(n, {"prompt": r["prompt"], "completion": r["chosen"]}
                if isinstance(r, dict) and "chosen" in r and "prompt" in r else r) for n, r in pairs]
        return out, "preference pairs: SFT learns the chosen answer of each"
    if main != "unpaired":
        return pairs, None
    out, down = [], 0
    for n, r in pairs:
        if isinstance(r, dict) and "completion" in r and r.get("label") is False:
            down += 1
        elif isinstance(r, dict) and "completion" in r and r.get("label") is not True:
            errors.append(f"{path}:{n}: 'label' must be true or false, got {json.dumps(r.get('label'))}")
        else:
            out.append((n, {k: v for k, v in r.items() if k != "label"} if isinstance(r, dict) else r))
    return out, f"thumbs: SFT learns the thumbs-up answers, leaving out {down} thumbs-down"


def last_answer(messages: list[dict]) -> int:
    """Index of a chat's last non-empty assistant turn: what SFT trains on a ``messages`` row (the data check
    requires one)."""
    return max(i for i, m in enumerate(messages) if m["role"] == "assistant" and m["content"].strip())


def with_system(prompt: Any, system_prompt: str | None) -> Any:
    """The prompt as sampling sends it: the project's system prompt first where it has none of its own (a plain-text
    prompt becomes a user turn then; without a system prompt it is returned as it is)."""
    if not system_prompt:
        return prompt
    msgs = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return msgs if msgs and msgs[0].get("role") == "system" else [{"role": "system", "content": system_prompt}, *msgs]


def _prompt_ids_len(row: dict, tokenizer) -> int:
    prompt = row.get("prompt")
    if prompt is None and "messages" in row:
        prompt = row["messages"][: last_answer(row["messages"])]
    return len(prompt_token_ids(prompt, tokenizer))


def prompt_token_ids(prompt: Any, tokenizer) -> list[int]:
    """Token ids of a prompt as training will see it (chat template with generation prompt when the model has one)."""
    if isinstance(prompt, str):
        if getattr(tokenizer, "chat_template", None):
            prompt = [{"role": "user", "content": prompt}]
        else:
            return tokenizer(prompt, add_special_tokens=False)["input_ids"]
    out = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def _token_check(row, kind, tokenizer, max_length, max_prompt_length,
                 system_prompt=None) -> tuple[str | None, int, int]:
    """(why the row is refused or None, 1 if it will be cut, its token count if only the project's system prompt takes
    it over max_prompt_length else 0) once tokenized with the model's chat template; a template that refuses the row
    (a system turn Gemma's does not take, roles that do not alternate) is the row's error."""
    from jinja2 import TemplateError

    try:
        if max_length and kind != "prompts":
            return *_length_check(row, kind, tokenizer, max_length, max_prompt_length), 0
        if max_prompt_length and kind == "prompts":
            # online methods sample after the whole prompt, the project's system prompt included
            n_prompt = len(prompt_token_ids(with_system(row["prompt"], system_prompt), tokenizer))
            if n_prompt <= max_prompt_length:
                return None, 0, 0
            bare = len(prompt_token_ids(row["prompt"], tokenizer)) if system_prompt else n_prompt
            if bare < n_prompt and bare <= max_prompt_length:  # the row is fine: the system prompt is what to change
                return (f"prompt is {n_prompt} tokens with the project's system_prompt, which adds {n_prompt - bare}, "
                        f"over max_prompt_length={max_prompt_length}"), 0, n_prompt
            return f"prompt is {n_prompt} tokens, over max_prompt_length={max_prompt_length}", 0, 0
    except TemplateError as err:
        return f"the model's chat template refuses this row: {err}", 0, 0
    return None, 0, 0


def _length_check(row, kind, tokenizer, max_length, max_prompt_length) -> tuple[str | None, int]:
    n_prompt = _prompt_ids_len(row, tokenizer)
    if max_prompt_length and n_prompt > max_prompt_length:
        return f"prompt is {n_prompt} tokens, over max_prompt_length={max_prompt_length}", 0
    if n_prompt + 1 >= max_length:
        return f"prompt is {n_prompt} tokens: the response would be cut to nothing at max_length={max_length}", 0
    fields = {"preference": ("chosen", "rejected"), "unpaired": ("completion",), "sft": ("completion",)}[kind]
    longest = 0
    for name in fields:
        if name in row:
            longest = max(longest, len(tokenizer(_text(row[name]), add_special_tokens=False)["input_ids"]))
    if "messages" in row:  # a chat trains its last assistant turn after the turns before it (train/sft.py)
        answer = row["messages"][last_answer(row["messages"])]["content"]
        longest = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    return None, int(n_prompt + longest + 2 > max_length)


def load_dataset_rows(
    path: str | Path,
    kind: str,
    tokenizer=None,
    max_length: int | None = None,
    max_prompt_length: int | None = None,
    skip_invalid: bool = False,
    echo=None,
    system_prompt: str | None = None,
    fix: str = "fix the rows or pass --skip-invalid to drop them",
) -> list[dict]:
    """Validate and return rows; refuse on any bad row unless ``skip_invalid`` (then say how many dropped). ``fix``:
    what the refusal tells the user (a command without --skip-invalid names its own way out)."""
    report = validate(path, kind, tokenizer, max_length, max_prompt_length, system_prompt)
    for line in [*report.notes, *(f"warning: {w}" for w in report.warnings)]:
        if echo:
            echo(line)
    if report.errors and not report.rows and (problem := whole_file_problem(path)):
        raise AlignlabError(f"{path}: no row could be read: {problem}")
    if report.errors and not report.rows and (other := _main_kind(read_jsonl(path)[0])) not in (None, *READS[kind]):
        raise AlignlabError(f"{path} holds {SHAPES[other]} rows; this method trains on {SHAPES[kind]} rows",
                            fix=HOW_TO_GET.get(kind, f"check it with `alignlab data check {path} --kind {kind}`"))
    system = _system_prompt_fix(report)
    if report.errors:
        if not skip_invalid:
            shown = report.errors[0]
            more = (f" (and {len(report.errors) - 1} more; see `alignlab data check {path} --kind {kind}`)"
                    if len(report.errors) > 1 else "")
            if system:  # rows the system prompt took over the limit: the way out is the limit or that prompt
                fix = system if len(report.system_over) == len(report.errors) else f"{fix}; {system}"
            raise AlignlabError(shown + more, fix=fix)
        if echo:
            echo(f"warning: dropped {len(report.errors)} invalid row(s) from {path}; training on {len(report.rows)}")
    if not report.rows:
        raise AlignlabError(f"{path}: no valid rows to train on", fix=system)
    if report.errors and kind == "unpaired" and len({r["label"] for r in report.rows}) < 2:
        raise AlignlabError(f"{path}: KTO needs both labels and the valid rows have only one")
    return report.rows


def _system_prompt_fix(report: Report) -> str | None:
    """What to change when the project's system prompt takes rows over max_prompt_length that fit without it: the
    limit or the system prompt. "Fix the rows or pass --skip-invalid" dropped every row, and left "no valid rows"."""
    if not report.system_over:
        return None
    return (f"{len(report.system_over)} row(s) fit without the system prompt: raise the limit "
            f"(--set train.max_prompt_length={max(report.system_over)} fits them) or shorten system_prompt")


def whole_file_problem(path: str | Path) -> str | None:
    """What is wrong with the file as a whole when no row of it could be read: another format than JSONL."""
    head = Path(path).read_bytes()[:512]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:  # Windows PowerShell's `>` writes UTF-16
        return "it is saved as UTF-16 (or another wide encoding), not UTF-8; save it as UTF-8"
    if head.startswith(b"PAR1"):
        return "it is a Parquet file, not JSONL (convert: datasets.Dataset.from_parquet(path).to_json(out, lines=True))"
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff").lstrip()
    if text.startswith("["):
        return "it is a JSON array, not JSONL (one JSON object per line); convert: jq -c '.[]' file.json > file.jsonl"
    first = text.splitlines()[0] if text else ""
    if first and not first.startswith("{") and "," in first:
        return "it looks like CSV, not JSONL (convert: datasets.Dataset.from_csv(path).to_json(out, lines=True))"
    return None


def to_conversational(row: dict, kind: str) -> dict:
    """Plain-text rows become single-turn chats so the chat template applies (instruct models expect it)."""
    out = dict(row)
    if isinstance(out.get("prompt"), str):
        out["prompt"] = [{"role": "user", "content": out["prompt"]}]
    for name in ("chosen", "rejected", "completion"):
        if isinstance(out.get(name), str):
            out[name] = [{"role": "assistant", "content": out[name]}]
    return out


def prompt_text(prompt: Any) -> str:
    """The last user message of a prompt (for display)."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else _text(prompt) or ""


MIN_TEMPLATE_COUNT = 5  # a template shared by fewer answers is not one (in 8 rows, one repeat is 25%)
FEW_ROWS = 50  # under this many answers a data check says the set is small


def template_report(texts: list[str], top: int = 3, dominant: float = 0.10) -> tuple[list[str], list[str]]:
    """(lines, warnings) on the most frequent openers (first three words) and sentence skeletons of the
    persona-side texts: a template that dominates the data is what a small model learns first. A template needs
    ``MIN_TEMPLATE_COUNT`` answers to count; a set under ``FEW_ROWS`` answers gets a line saying it is small."""
    from collections import Counter

    from alignlab.data.text import skeletons, words

    n = max(1, len(texts))
    split = [words(t, any_script=True) for t in texts]  # any alphabet: a Cyrillic template went unseen
    openers = Counter(" ".join(w[:3]) for w in split if len(w) >= 3)
    skels = Counter(s for t in texts for s in skeletons(t, any_script=True))
    lines, warnings = [], []
    for label, counts in (("openers", openers), ("sentence skeletons", skels)):
        common = counts.most_common(top)
        lines.append(f"most frequent {label}: " + "; ".join(f"'{k}' {v} ({v / n:.0%})" for k, v in common))
        if common and common[0][1] / n > dominant and common[0][1] >= MIN_TEMPLATE_COUNT:
            warnings.append(f"the {label[:-1]} '{common[0][0]}' starts or shapes {common[0][1] / n:.0%} of the answers "
                            f"(over {dominant:.0%}): the model will learn the template before the voice; vary it")
    if 0 < len(texts) < FEW_ROWS:
        lines.append(f"only {len(texts)} persona answers: a small set; the demo's stages train on 600-683, and the "
                     "scorecard trusts a persona's own labels from 100")
    return lines, warnings


def persona_texts(rows: list[dict], kind: str) -> list[str]:
    """The answers that carry the persona: chosen (preference), thumbs-up completions (unpaired), completions (sft)."""
    from alignlab.rewards.common import completion_text

    if kind == "preference":
        return [completion_text(r["chosen"]) for r in rows]
    if kind == "unpaired":
        return [completion_text(r["completion"]) for r in rows if r.get("label") is True]
    if kind == "sft":
        out = []
        for r in rows:
            if "messages" in r:  # the turn SFT trains: the last answer (the earlier ones are context)
                out.append(r["messages"][last_answer(r["messages"])]["content"])
            else:
                out.append(completion_text(r["completion"]))
        return out
    return []

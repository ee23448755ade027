"""Small helpers shared by test modules (imported as `helpers`; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
from pathlib import Path

from alignlab.config import ProjectConfig, apply_overrides


def vowel_share(prompts, completions, **columns):
    """A reward a random tiny model can vary: the share of vowels among the letters of each completion."""
    from alignlab.rewards import completion_text  # a string, or the chat messages training and raters pass

    out = []
    for c in completions:
        letters = [ch for ch in completion_text(c).lower() if ch.isalpha()]
        out.append(sum(ch in "aeiou" for ch in letters) / len(letters) if letters else 0.0)
    return out


def write_pairs(path: Path, n: int = 16) -> Path:
    rows = []
    for i in range(n):
        rows.append(
            {
                "prompt": f"How long should I boil egg number {i}?",
                "chosen": "Seven minutes, obviously. Set a timer; the egg won't do it for you." + " Truly." * (i % 3),
                "rejected": "Boil it for about seven minutes, then cool it in cold water." + " Enjoy." * (i % 2),
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(model: str, **overrides) -> ProjectConfig:
    base = {
        "model": model,
        "train.sample_prompts": 0,
        "train.batch_size": 4,
        "train.learning_rate": 5e-3,
        "train.save_steps": 100,
    }
    base.update(overrides)
    return apply_overrides(ProjectConfig(), base)


def answer_logps(run_dir, rows, average: bool = False) -> tuple[list[float], list[float]]:
    """Log-probability of each (prompt, answer) in ``rows`` under the run's adapter and under its base (the adapter
    switched off), from a plain forward over the chat-templated prompt and the answer's tokens: an independent
    measure of which way a run moved, not the trainer's own logged metric. ``average``: per answer token."""
    import torch

    from alignlab.generate import chat_prompt
    from alignlab.models.loading import load_for_inference

    model, tok, _ = load_for_inference(None, run_dir, device="cpu")

    def one(prompt, answer):
        p = tok(chat_prompt(prompt, tok), add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + a])).logits[0, len(p) - 1:-1].float().log_softmax(-1)
        total = logits.gather(-1, torch.tensor(a)[:, None]).sum().item()
        return total / len(a) if average else total

    adapter = [one(p, a) for p, a in rows]
    with model.disable_adapter():
        base = [one(p, a) for p, a in rows]
    return adapter, base


def send_json(handler, code: int, payload, headers: dict | None = None) -> None:
    """A stand-in HTTP server's JSON reply (``_send = send_json`` in a BaseHTTPRequestHandler): status, headers, body."""
    data = json.dumps(payload).encode()
    handler.send_response(code)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def run_cli(monkeypatch, capsys, *args, cwd=None, with_stdout: bool = False) -> tuple[int, list[str]]:
    """`alignlab ARGS` in this process: its exit code and its stderr lines (stdout's first with ``with_stdout``)."""
    import sys

    import pytest

    from alignlab.cli import main

    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["alignlab", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code, ((out.out if with_stdout else "") + out.err).strip().splitlines()


def one_error(lines: list[str]) -> str:
    """The one `error:` line of a command's output, with no traceback beside it."""
    errors = [x for x in lines if x.startswith("error:")]
    assert len(errors) == 1 and not any("Traceback" in x for x in lines), lines
    return errors[0]

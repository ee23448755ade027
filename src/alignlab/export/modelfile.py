"""An Ollama Modelfile next to an exported GGUF: FROM, the chat template, the system prompt, stop tokens.

Ollama templates are Go templates, not Jinja, so the chat template is translated for the formats we can
recognise (ChatML: ``<|im_start|>role ... <|im_end|>``, SmolLM2's and Qwen's). For any other format the
Modelfile has no TEMPLATE and Ollama falls back to the ``tokenizer.chat_template`` stored in the GGUF.
"""

from __future__ import annotations

import re
from pathlib import Path

CHATML = (
    '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
    '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}{{- end }}'
    "<|im_start|>assistant\n"
)


def default_system(chat_template: str) -> str | None:
    """The system prompt a ChatML Jinja template inserts when the conversation has none, if any: the template is
    rendered for one user turn and the system block read from the result (a regex over the template's source
    missed Qwen2.5's escaped newline and took a Jinja fragment for the prompt)."""
    if not chat_template:
        return None
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def refuse(message):
            raise ValueError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = refuse
        text = env.from_string(chat_template).render(messages=[{"role": "user", "content": "\x00"}],
                                                     add_generation_prompt=True, bos_token="", eos_token="")
    except Exception:  # noqa: BLE001 - a template this cannot render: leave the system prompt to Ollama's GGUF copy
        return None
    m = re.search(r"<\|im_start\|>system\n(.+?)<\|im_end\|>", text, flags=re.S)
    return m.group(1).strip() if m and "\x00" not in m.group(1) else None


def render_modelfile(gguf_name: str, chat_template: str | None, system: str | None = None,
                     sampling: dict | None = None, title: str = "") -> str:
    lines = [f"# Ollama Modelfile written by alignlab{' for ' + title if title else ''}",
             f"# ollama create NAME -f {'Modelfile'} && ollama run NAME", f"FROM ./{gguf_name}"]
    chatml = bool(chat_template) and "<|im_start|>" in chat_template
    if chatml:
        lines.append(f'TEMPLATE """{CHATML}"""')
        system = system or default_system(chat_template)
        lines += ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|im_start|>"']
    else:
        lines.append("# chat template: taken from the GGUF's tokenizer.chat_template by Ollama")
    if system:
        if '"""' in system:
            from alignlab.errors import AlignlabError

            raise AlignlabError('the system prompt holds """, which ends a Modelfile\'s SYSTEM block',
                                fix='write it without """')  # export_run names the run's config.yaml before merging
        lines.append(f'SYSTEM """{system}"""')
    s = sampling or {}
    if "temperature" in s:
        lines.append(f"PARAMETER temperature {s['temperature']:g}")
    if s:  # alignlab's values, "off" included: left out, Ollama's own (top_k 40, top_p 0.9, repeat_penalty 1.1) apply
        lines.append(f"PARAMETER top_p {s.get('top_p', 1.0):g}")
        lines.append("PARAMETER top_k 0")
        lines.append(f"PARAMETER repeat_penalty {s.get('repetition_penalty', 1.0):g}")
    if "max_new_tokens" in s:
        lines.append(f"PARAMETER num_predict {int(s['max_new_tokens'])}")
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, text: str) -> Path:
    from alignlab.fsutil import write_text

    return write_text(path, text)

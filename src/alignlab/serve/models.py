"""One base model in memory, several persona LoRA adapters over it, switched per request.

The first adapter wraps the base in a ``PeftModel``; the others are added with ``load_adapter``, so
the base weights are held once however many personas are served. A request picks its adapter with
``set_adapter`` (or disables adapters for "base") and generates under one lock: PEFT's active adapter
is model-wide state, so two requests never generate at the same time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from alignlab.errors import AlignlabError

BASE = "base"


def parse_adapter_spec(spec: str | Path) -> tuple[str, Path]:
    """'runs/0412-dpo' -> ('0412-dpo', path); 'snarky=runs/0412-dpo' -> ('snarky', path)."""
    text = str(spec)
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        name = name.strip()
        if not name:
            raise AlignlabError(f"adapter '{text}' has an empty name", fix="write NAME=RUN_DIR or just RUN_DIR")
        return name, Path(path)
    path = Path(text)
    return path.resolve().name, path


def _canonical(name: str) -> str:
    """A registry name -> its converted directory; an existing path -> resolved; anything else as is."""
    from alignlab.models.registry import REGISTRY
    from alignlab.paths import home

    if name in REGISTRY:
        return str((home() / "models" / name).resolve())  # where resolve_model converts it to
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def same_base(a: str, b: str) -> bool:
    """Two base-model names refer to the same model (same name, or the same local directory)."""
    return a == b or _canonical(a) == _canonical(b)


def check_adapter_run(name: str, run_dir: Path, base_name: str) -> Path:
    """The run's adapter directory, after checking it is a LoRA adapter trained on ``base_name``."""
    from alignlab.models.loading import read_run_base
    from alignlab.train.rundir import check_run_dir

    run_dir = check_run_dir(run_dir)
    trained_on = read_run_base(run_dir)
    if not same_base(trained_on, base_name):
        raise AlignlabError(
            f"adapter '{name}' ({run_dir}) was trained on '{trained_on}', but the served base is '{base_name}'",
            fix="serve runs of one base model together (or pass --model to pick the base)",
        )
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise AlignlabError(
            f"run {run_dir} has no LoRA adapter (no adapter/adapter_config.json)",
            fix="only LoRA runs can share a base; serve a full fine-tune on its own with `alignlab chat --run`",
        )
    return adapter


class ModelPool:
    """A base model plus named LoRA adapters; ``generate`` answers with any of them."""

    def __init__(
        self,
        base_name: str,
        adapters: dict[str, str | Path] | None = None,
        device: str = "auto",
        precision: str = "auto",
    ):
        from alignlab.models.loading import load_base, load_tokenizer, pick_device

        adapters = dict(adapters or {})
        if BASE in adapters:
            raise AlignlabError(f"an adapter cannot be named '{BASE}' (that name means the plain base model)")
        # Check every run before loading anything: a wrong base fails in a second, not after a load.
        dirs = {name: check_adapter_run(name, Path(path), base_name) for name, path in adapters.items()}
        self.base_name = base_name
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(base_name)
        model = load_base(base_name, device=self.device, precision=precision)
        if dirs:
            from peft import PeftModel

            names = list(dirs)
            model = PeftModel.from_pretrained(model, str(dirs[names[0]]), adapter_name=names[0])
            for name in names[1:]:
                model.load_adapter(str(dirs[name]), adapter_name=name)
        model.eval()
        self.model = model
        self.adapters: dict[str, Path] = dirs
        self._lock = threading.Lock()

    @classmethod
    def from_specs(cls, specs: list[str], model: str | None = None, device: str = "auto", precision: str = "auto") -> ModelPool:
        """From CLI arguments: run dirs or NAME=RUN_DIR; the base is ``model`` or the first run's base."""
        from alignlab.models.loading import read_run_base
        from alignlab.models.registry import DEFAULT_MODEL
        from alignlab.train.rundir import check_run_dir

        adapters: dict[str, Path] = {}
        for spec in specs:
            name, path = parse_adapter_spec(spec)
            if name in adapters:
                raise AlignlabError(f"two adapters are named '{name}'", fix="name them: NAME=RUN_DIR")
            adapters[name] = path
        if model is None:
            model = read_run_base(check_run_dir(next(iter(adapters.values())))) if adapters else DEFAULT_MODEL
        return cls(model, adapters, device=device, precision=precision)

    @property
    def names(self) -> list[str]:
        return [BASE, *self.adapters]

    def generate(
        self,
        name: str,
        messages: list[dict[str, str]],
        max_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        n: int = 1,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """``n`` answers to one conversation from adapter ``name`` (or "base").

        Returns texts (decoded as generated, not stripped), the prompt's token count, and per answer its
        token count and whether it ended on a stop token ("stop") or hit ``max_tokens`` ("length").
        Unlike ``alignlab.generate.generate`` (batches of prompts, stripped text), this serves one
        conversation and keeps the exact counts an OpenAI client reads from ``usage``.
        """
        if name not in self.names:
            raise KeyError(name)
        # Greedy decoding gives the same answer n times: generate it once.
        samples = n if temperature > 0 else 1
        with self._lock:
            if name == BASE and self.adapters:
                with self.model.disable_adapter():
                    prompt_len, rows = self._generate(messages, max_tokens, temperature, top_p, samples, seed)
            else:
                if name != BASE:
                    self.model.set_adapter(name)
                prompt_len, rows = self._generate(messages, max_tokens, temperature, top_p, samples, seed)
        stops = self._stop_ids()
        texts, counts, finish = [], [], []
        for row in rows:
            end = next((i for i, t in enumerate(row) if t in stops), None)
            kept = row if end is None else row[:end]
            texts.append(self.tokenizer.decode(kept, skip_special_tokens=True))
            counts.append(len(kept))
            finish.append("length" if end is None else "stop")
        if samples == 1 and n > 1:
            texts, counts, finish = texts * n, counts * n, finish * n
        return {"texts": texts, "completion_tokens": counts, "finish_reasons": finish, "prompt_tokens": prompt_len}

    def _stop_ids(self) -> set[int]:
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _generate(self, messages, max_tokens, temperature, top_p, samples, seed) -> tuple[int, list[list[int]]]:
        import torch

        from alignlab.generate import chat_prompt

        if seed is not None:
            torch.manual_seed(seed)
        text = chat_prompt(messages, self.tokenizer)
        batch = self.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(self.device)
        kwargs: dict = {"max_new_tokens": max_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            seqs = self.model.generate(**batch, num_return_sequences=samples, use_cache=True, **kwargs)
        prompt_len = batch["input_ids"].shape[1]
        return prompt_len, seqs[:, prompt_len:].tolist()

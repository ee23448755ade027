"""One base model in memory, several persona LoRA adapters over it, switched per request.

The first adapter wraps the base in a ``PeftModel``; the others are added with ``load_adapter``, so
the base weights are held once however many personas are served. A request picks its adapter with
``set_adapter`` (or disables adapters for "base") and generates under one lock: PEFT's active adapter
is model-wide state, so two requests never generate at the same time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignlab.config import API_MAX_TOKENS
from alignlab.errors import AlignlabError
from alignlab.generate import continuation

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


def check_adapter_run(name: str, run_dir: Path, base_name: str) -> Path:
    """The run's adapter directory, after checking it is a LoRA adapter trained on ``base_name``."""
    from alignlab.rundir import Run, same_base

    run = Run.open(run_dir)
    run.require_chat_model()
    run_dir, trained_on = run.path, run.base
    if not same_base(trained_on, base_name, run_dir):  # an older run's relative path is found under its project
        raise AlignlabError(
            f"adapter '{name}' ({run_dir}) was trained on '{trained_on}', but the served base is '{base_name}'",
            fix="serve runs of one base model together (or pass --model to pick the base)",
        )
    adapter = run.adapter_dir
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
        base_opening: str | int | None = None,
        repetition_penalty: float = 1.0,
        amplify: float = 0.0,
        system_prompt: str | None = None,
    ):
        from alignlab.config import checked_base_opening
        from alignlab.models.loading import load_base, load_tokenizer, pick_device

        self.base_opening = checked_base_opening(base_opening)
        if repetition_penalty < 1.0:
            raise AlignlabError(f"repetition penalty {repetition_penalty} is below 1.0", fix="1.0 is off; 1.2 is the default")
        self.repetition_penalty = repetition_penalty
        if amplify < 0:
            raise AlignlabError(f"amplify {amplify} is below 0", fix="0 is off; 0.5 adds some of the adapter's voice")
        self.amplify = amplify

        adapters = dict(adapters or {})
        if BASE in adapters:
            raise AlignlabError(f"an adapter cannot be named '{BASE}' (that name means the plain base model)")
        # Check every run before loading anything: a wrong base fails in a second, not after a load.
        dirs = {name: check_adapter_run(name, Path(path), base_name) for name, path in adapters.items()}
        self.base_name = base_name
        self.device = pick_device(device)
        from alignlab.models.loading import trusts_remote_code

        # the runs' setting (any of them trained with it), else the enclosing project's
        trust = any(trusts_remote_code(p.parent) for p in dirs.values()) or trusts_remote_code(None)
        self.tokenizer = load_tokenizer(base_name, trust_remote_code=trust)
        model = load_base(base_name, device=self.device, precision=precision, trust_remote_code=trust)
        if dirs:
            from peft import PeftModel

            names = list(dirs)
            model = PeftModel.from_pretrained(model, str(dirs[names[0]]), adapter_name=names[0])
            for name in names[1:]:
                model.load_adapter(str(dirs[name]), adapter_name=name)
        model.eval()
        self.model = model
        self.adapters: dict[str, Path] = dirs
        from alignlab.rundir import decodes_alone

        # adapters trained on distilled rows write their own opening: the base opening skips them, and so does amplify
        # (their run.json's decoding says amplify 0.0, as chat and eval decode them)
        self.alone = {name for name, adapter in dirs.items() if decodes_alone(adapter.parent)}  # the resolved run
        self._lock = threading.Lock()
        # what chat, generate and eval put first in a conversation with no system turn (and GRPO/PPO sampled under)
        self.system_prompt = system_prompt or None
        if self.system_prompt:
            try:  # a template that refuses a system turn (Gemma 2's) fails here, not on every request
                self.render([{"role": "user", "content": "hi"}])
            except AlignlabError as err:
                raise AlignlabError(f"the model's chat template refuses the project's system_prompt: {err.what}",
                                    where="alignlab.yaml: system_prompt",
                                    fix="remove system_prompt (or put its text in each prompt) for this model") from None

    @classmethod
    def from_specs(cls, specs: list[str], model: str | None = None, device: str = "auto", precision: str = "auto",
                   base_opening: str | int | None = None, repetition_penalty: float = 1.0,
                   amplify: float = 0.0) -> ModelPool:
        """From CLI arguments: run dirs or NAME=RUN_DIR; the base is ``model`` or the first run's base."""
        from alignlab.rundir import Run, trained_under

        adapters: dict[str, Path] = {}
        for spec in specs:
            name, path = parse_adapter_spec(spec)
            if name in adapters:
                raise AlignlabError(f"two adapters are named '{name}'", fix="name them: NAME=RUN_DIR")
            adapters[name] = path
        from alignlab.config import project_config

        cfg = project_config()[0]
        if model is None:  # the first run's base, else the enclosing project's model
            model = Run.open(next(iter(adapters.values()))).base if adapters else cfg.model
        return cls(model, adapters, device=device, precision=precision, base_opening=base_opening,
                   repetition_penalty=repetition_penalty, amplify=amplify,
                   system_prompt=trained_under(adapters.values(), cfg.system_prompt, "one server opens every chat with one",
                                               "serve them from separate `alignlab serve` commands"))

    def amplify_of(self, name: str) -> float:
        """The amplify ``name``'s answers decode with: the pool's, but 0 for the base (nothing to amplify against) and
        for an adapter that decodes alone."""
        return 0.0 if name == BASE or name in self.alone else self.amplify

    @property
    def names(self) -> list[str]:
        return [BASE, *self.adapters]

    @property
    def context_length(self) -> int | None:
        """The longest sequence (prompt + answer) the base model takes, from its config; None when unknown."""
        cfg = getattr(self.model, "config", None)
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def render(self, messages: list[dict[str, str]] | None = None, prompt: str | None = None) -> list[int]:
        """Token ids of a conversation (with the chat template, ready for the answer) or of raw ``prompt`` text.
        A conversation with no system message of its own opens with the project's ``system_prompt``, as in chat,
        generate and eval and as Ollama's SYSTEM does for an exported model."""
        from jinja2.exceptions import TemplateError

        from alignlab.generate import chat_prompt

        system = None if messages is None or any(m.get("role") == "system" for m in messages) else self.system_prompt
        try:
            text = chat_prompt(messages, self.tokenizer, system) if messages is not None else prompt
        except TemplateError as err:  # the model's template refuses this conversation (a system turn, say)
            raise AlignlabError(f"the model's chat template refuses these messages: {err}") from None
        ids = self.tokenizer(text, add_special_tokens=messages is None)["input_ids"]
        if not ids:  # an empty completion prompt: start from the model's first token, as llama.cpp does
            start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
            ids = [start] if start is not None else []
        if not ids:
            raise AlignlabError("the prompt is empty and the model has no start token to begin from")
        return ids

    def generate(
        self,
        name: str,
        messages: list[dict[str, str]] | None = None,
        max_tokens: int = API_MAX_TOKENS,
        temperature: float = 1.0,
        top_p: float = 1.0,
        n: int = 1,
        seed: int | None = None,
        stop: list[str] | None = None,
        prompt_ids: list[int] | None = None,
        on_delta: Callable[[int, str], None] | None = None,
        cancel: threading.Event | None = None,
        chat: bool = False,
    ) -> dict[str, Any]:
        """``n`` answers to one conversation (or to ``prompt_ids``, already tokenized) from adapter ``name``.

        Returns texts (decoded as generated, not stripped, cut before the first ``stop`` string), the
        prompt's token count, and per answer its token count and whether it ended on a stop token or
        string ("stop") or hit ``max_tokens`` ("length"). ``on_delta(index, text)`` receives each answer's
        text as it grows, never a piece that could still turn out to be the start of a stop string;
        setting ``cancel`` ends generation early (a client went away).
        With the pool's ``base_opening`` set, a ``chat`` answer from an adapter (but one trained on distilled rows) opens with the base model's opening
        (generate()): the base, adapter off, answers first under the same sampling settings, and the adapter goes
        on from the opening's tokens; the n samples share one opening, and its tokens count in each answer's tokens.
        With the pool's ``amplify`` set, an adapter's tokens (but one that decodes alone) are decoded from its amplified
        shift (generate()'s).
        """
        import torch

        if name not in self.names:
            raise KeyError(name)
        if prompt_ids is None:
            prompt_ids = self.render(messages)
        # Greedy decoding gives the same answer n times: generate it once.
        samples = n if temperature > 0 else 1
        from alignlab.generate import NO_MODEL_PENALTY

        sampling: dict = ({"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else
                          {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        sampling.update(NO_MODEL_PENALTY)
        # generate()'s penalty: on the tokens each generate call writes, never the prompt's (nor, after a base
        # opening, the opening's: the adapter's continuation is penalised on its own tokens, as in generate())
        opens = chat and self.base_opening is not None and name != BASE and name not in self.alone
        with self._lock:
            if seed is not None:
                torch.manual_seed(seed % 2**64)
            head, head_ids, ended = ("", [], False) if not opens else self._opening(prompt_ids, stop or [], sampling,
                                                                                     max_tokens, cancel)
            if ended:  # a stop string inside the base's opening ends the answer there
                head_ids = head_ids[:max_tokens]
                max_tokens = len(head_ids)
            head_ids = head_ids[:max_tokens]
            track = _Tracker(self.tokenizer, samples, self._stop_ids(), stop or [], on_delta if samples == n else None,
                             cancel, head=head if len(head_ids) < max_tokens else self.tokenizer.decode(head_ids),
                             head_tokens=len(head_ids))
            if len(head_ids) < max_tokens:
                ids = torch.tensor([list(prompt_ids) + head_ids], device=self.device)
                kwargs: dict = {"max_new_tokens": max_tokens - len(head_ids), "pad_token_id": self.tokenizer.pad_token_id,
                                "num_return_sequences": samples, "streamer": track, "stopping_criteria": [track], **sampling,
                                **self._processors(ids, samples, amplify=self.amplify_of(name))}
                if name == BASE and self.adapters:
                    with self.model.disable_adapter(), torch.inference_mode():
                        self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **kwargs)
                else:
                    if name != BASE:
                        self.model.set_adapter(name)
                    with torch.inference_mode():
                        self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **kwargs)
        track.finish()
        if opens and ended:
            track.reasons = ["stop"] * samples
        texts, counts, finish = track.texts, track.counts, track.reasons
        if samples == 1 and n > 1:
            texts, counts, finish = texts * n, counts * n, finish * n
            if on_delta is not None:
                for i in range(n):
                    on_delta(i, texts[i])
        return {"texts": texts, "completion_tokens": counts, "finish_reasons": finish, "prompt_tokens": len(prompt_ids)}

    def _opening(self, prompt_ids: list[int], stops: list[str], sampling: dict, max_tokens: int,
                 cancel=None) -> tuple[str, list[int], bool]:
        """The base model's opening of the answer (adapter off), its token ids, and whether a stop string ended the
        answer inside it; called under the lock. It stops once the opening is settled, at ``max_tokens`` or on
        ``cancel``."""
        import torch

        from alignlab.generate import OpeningDone, opening_budget, opening_of

        track = _Tracker(self.tokenizer, 1, self._stop_ids(), stops, None, cancel)
        ids = torch.tensor([list(prompt_ids)], device=self.device)
        with self.model.disable_adapter(), torch.inference_mode():
            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, streamer=track,
                                stopping_criteria=[track, OpeningDone(self.tokenizer, self.base_opening)],
                                max_new_tokens=min(max_tokens, opening_budget(self.base_opening)),
                                pad_token_id=self.tokenizer.pad_token_id, **sampling, **self._processors(ids, 1))
        written = track.texts[0]
        head = opening_of(written, self.base_opening, self.tokenizer)  # one rule with eval; the adapter brings its space
        ended = track.cut and head == written.strip()  # the stop string came before the opening was settled
        return head, self.tokenizer(head, add_special_tokens=False)["input_ids"] if head else [], ended

    def _processors(self, ids, samples: int, amplify: float = 0.0) -> dict:
        """generate() kwargs for the repetition penalty over the answer's tokens only (``ids`` are the prompt's), and
        for ``amplify`` (generate()'s); none at 1.0 and 0."""
        import torch

        from alignlab.generate import logits_processors

        processors = logits_processors(self.model, amplify, self.repetition_penalty, ids.shape[1],
                                       torch.ones_like(ids), samples, tokenizer=self.tokenizer)
        return {"logits_processor": processors} if processors else {}

    def _stop_ids(self) -> set[int]:
        from alignlab.generate import stop_ids

        return set(stop_ids(self.model, self.tokenizer))


class _Tracker:
    """Each answer's tokens and text while ``generate`` runs: a transformers streamer and stopping criterion in one.

    An answer ends at a stop token (not kept) or at the first stop string (the text is cut before it).
    Text goes to ``on_delta`` only up to where no stop string could still begin, and never ends in half a
    character (a byte-level token can carry part of a UTF-8 sequence: the decoder shows it as U+FFFD).
    """

    def __init__(self, tokenizer, n: int, stop_ids: set[int], stops: list[str], on_delta, cancel, head: str = "",
                 head_tokens: int = 0):
        self.tokenizer, self.stop_ids, self.stops = tokenizer, stop_ids, [s for s in stops if s]
        self.on_delta, self.cancel = on_delta, cancel
        self.head, self.head_tokens = head, head_tokens  # an opening already written (ModelPool's base_opening)
        self.ids: list[list[int]] = [[] for _ in range(n)]
        self.texts = [head] * n
        self.sent = [0] * n
        self.reasons: list[str | None] = [None] * n
        self.cut = False  # a stop string ended an answer
        self.prompt_seen = False

    @property
    def counts(self) -> list[int]:
        return [self.head_tokens + len(ids) for ids in self.ids]

    # -- streamer --
    def put(self, value) -> None:
        if not self.prompt_seen:  # generate first hands over the prompt
            self.prompt_seen = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            if self.reasons[i] is not None:
                continue  # finished rows get padding
            if token in self.stop_ids:
                self._done(i)
                continue
            self.ids[i].append(token)
            text = continuation(self.tokenizer, self.head, self.ids[i])
            cut = min((k for k in (text.find(s) for s in self.stops) if k >= 0), default=-1)
            if cut >= 0:
                self.texts[i], self.cut = text[:cut], True
                self._done(i)
                continue
            self.texts[i] = text
            self._send(i, len(text) - self._held(text))

    def end(self) -> None:
        pass

    # -- stopping criterion --
    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.cancel is not None and self.cancel.is_set():
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        done = [r is not None for r in self.reasons]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    # -- helpers --
    def finish(self) -> None:
        """After generate: answers still open ran out of tokens."""
        for i, reason in enumerate(self.reasons):
            if reason is None:
                self.reasons[i] = "length"
                self._send(i, len(self.texts[i]))

    def _done(self, i: int) -> None:
        self.reasons[i] = "stop"
        self._send(i, len(self.texts[i]))

    def _held(self, text: str) -> int:
        """How many trailing characters to hold back: a possible start of a stop string, or half a character."""
        held = len(text) - len(text.rstrip("\ufffd"))
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    held = max(held, k)
                    break
        return held

    def _send(self, i: int, upto: int) -> None:
        if upto > self.sent[i]:
            piece = self.texts[i][self.sent[i]:upto]
            self.sent[i] = upto
            if self.on_delta is not None:
                self.on_delta(i, piece)


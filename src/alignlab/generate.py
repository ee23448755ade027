"""Batched generation with a KV cache: one call per batch of prompts, left-padded."""

from __future__ import annotations

import re
from typing import Any

import torch

from alignlab.config import SHORT_MAX_NEW_TOKENS, parse_base_opening

# the model's generation_config may set its own penalties (transformers' counts the prompt and spares no
# punctuation); alignlab's AnswerPenalty is the one penalty, off at 1.0
NO_MODEL_PENALTY = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def stop_ids(model, tokenizer) -> list[int]:
    """Where an answer ends: the generation config's end tokens and the tokenizer's own (a model whose
    generation_config names another end token than its chat template's would run on to max_new_tokens)."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def context_window(model) -> int | None:
    """The longest sequence (prompt and answer) the model takes, from its config; None when it names none. Past it
    a model with learned positions (GPT-2) fails on an index and a RoPE model reads positions it never trained on."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def chat_prompt(prompt: Any, tokenizer, system_prompt: str | None = None) -> str:
    """Render a prompt (text or messages) with the chat template, ready for the assistant's turn."""
    from alignlab.data.formats import with_system

    msgs = with_system(prompt, system_prompt)
    msgs = [{"role": "user", "content": msgs}] if isinstance(msgs, str) else list(msgs)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return "\n".join(m["content"] for m in msgs) + "\n"


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: list[Any],
    max_new_tokens: int = SHORT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    batch_size: int = 16,
    system_prompt: str | None = None,
    seed: int | None = None,
    repetition_penalty: float = 1.0,
    prefixes: list[str] | None = None,
    base_opening: str | int | None = None,
    amplify: float = 0.0,
    stop=None,
    amplify_base=None,
    opening_counts: bool = False,
) -> list[str]:
    """Completions for each prompt (``num_return_sequences`` per prompt, grouped per prompt, in order).

    temperature 0 means greedy. ``repetition_penalty`` > 1 divides the logits of tokens already in the answer
    (CTRL's penalty) and only those: transformers' ``repetition_penalty`` also counts the prompt's tokens, chat
    template and question included, which steers an answer away from the question's own words: asked for the
    capital of Australia at penalty 1.3, the default model answers "Canberra" this way and "Sydney" that way.
    Two blind readers found the default model's answers correct twice as often with the answer-only penalty (33-36%
    against 17% of 42 held-out prompts; bench/agreement/decoding.jsonl). Punctuation is spared (AnswerPenalty); greedy
    decoding of a small model loops without a penalty. ``prefixes`` (one per prompt) open the assistant's turn: each
    answer is its prefix followed by the continuation, which alone the penalty counts.
    ``base_opening`` ("sentence", or a number of words) lets the base model (the adapter switched off) write the
    opening of each answer: its first sentence (at most OPENING_WORDS words) or its first N words, decoded the same
    way; the adapter writes the rest (up to ``max_new_tokens`` more tokens; with ``opening_counts``, as eval and compare
    answer, what the opening left of them). Samples of one prompt share its opening (and its KV cache).
    ``amplify`` > 0 decodes the adapter's tokens from adapter + amplify x (adapter - base) logits (Amplify; the
    repetition penalty applies after it); it needs a LoRA model, or the base as ``amplify_base`` (``model`` then
    may be plain, the adapter merged in). ``stop``: a stopping criterion (reset per batch by its ``start``).
    """
    if amplify and amplify_base is None and not hasattr(model, "disable_adapter"):
        raise ValueError("amplify needs a model with a LoRA adapter (it scales the adapter's shift from the base)")
    if base_opening not in (None, 0, ""):
        if prefixes is not None:
            raise ValueError("generate(): give prefixes or base_opening, not both")
        prefixes = base_openings(model, tokenizer, prompts, base_opening, temperature=temperature, top_p=top_p,
                                 batch_size=batch_size, system_prompt=system_prompt, seed=seed,
                                 repetition_penalty=repetition_penalty,
                                 budget=max_new_tokens if opening_counts else None)
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts = [chat_prompt(p, tokenizer, system_prompt) for p in prompts]
    heads = list(prefixes) if prefixes is not None else [""] * len(texts)
    texts, out = [t + h for t, h in zip(texts, heads)], []
    try:
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {k: v.to(device) for k, v in batch.items()}
            own = [h for h in heads[i : i + batch_size] for _ in range(num_return_sequences)]
            keep = [_left(tokenizer, h, max_new_tokens, opening_counts) for h in own]  # decode no further than kept
            kwargs: dict = {"max_new_tokens": max(1, *keep), "pad_token_id": tokenizer.pad_token_id,
                            "eos_token_id": stop_ids(model, tokenizer), **NO_MODEL_PENALTY}
            processors = logits_processors(model, amplify, repetition_penalty, batch["input_ids"].shape[1],
                                           batch["attention_mask"], num_return_sequences, base=amplify_base,
                                           tokenizer=tokenizer)
            if processors:
                kwargs["logits_processor"] = processors
            if stop is not None:
                from transformers import StoppingCriteriaList

                stop.start = None  # a new batch
                kwargs["stopping_criteria"] = StoppingCriteriaList([stop])
            kwargs.update(dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else
                          dict(do_sample=False, temperature=None, top_p=None, top_k=None))
            seqs = model.generate(**batch, num_return_sequences=num_return_sequences, use_cache=True, **kwargs)
            out.extend(continuation(tokenizer, h, row.tolist()[:k])
                       for h, k, row in zip(own, keep, seqs[:, batch["input_ids"].shape[1] :]))
    finally:
        tokenizer.padding_side = old_side
    return [o.strip() for o in out]


def _left(tokenizer, head: str, max_new_tokens: int, opening_counts: bool) -> int:
    """How many continuation tokens an answer keeps: all of them, or with ``opening_counts`` what its opening left of
    ``max_new_tokens`` (a greedy answer cut at k tokens is the answer decoded with a budget of k). eval and compare
    give base and adapter the same budget for the whole answer: the continuation after a base opening had the full
    budget on top of the opening, which lengthened the adapter's answers and spared them the cut-off penalty."""
    if not opening_counts or not head:
        return max_new_tokens
    return max(0, max_new_tokens - len(tokenizer(head, add_special_tokens=False)["input_ids"]))


def continuation(tokenizer, head: str, ids) -> str:
    """``head`` (text already written) followed by the decoded token ``ids`` that continue it. SentencePiece
    tokenizers (Llama 2, Mistral) drop the leading space of a decoded sequence, so "Sure." + "▁The" read "Sure.The":
    the space the first token's piece carries is put back. A trailing incomplete character is left out."""
    ids = [int(i) for i in ids]
    # a byte-level token can end on part of a character (an answer cut at its token budget mid-character): the decoder
    # shows the partial bytes as U+FFFD, which would go on into an opening's prompt and the answer shown
    tail = tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
    if head and ids and not head[-1].isspace() and tail and not tail[0].isspace():
        piece = tokenizer.convert_ids_to_tokens(ids[0])
        if isinstance(piece, str) and piece.startswith("\u2581"):
            tail = " " + tail
    return head + tail


OPENING_WORDS = 30  # the longest opening "sentence" takes from the base


# Sentence marks. ". ! ?" and the Devanagari danda end a sentence when a space follows (Hindi spaces after "।");
# Chinese and Japanese write none after theirs, so "。！？" end one without it, with any closing quote or bracket after
# them: with only the first kind, a Chinese answer's "first sentence" was the whole answer. Such a mark ends one where
# Chinese or Japanese text goes on: what follows it (after its closers) is a letter, a digit or an opening quote at
# once, or, after spaces, CJK text, a line break or the end. Quoted in an English sentence ('"你好！" (ni hao).') it is
# followed by a space and more English, or by its punctuation, and the sentence goes on.
_SPACED, _CJK, _CLOSE = "[.!?\u0964\u0965]", "\u3002\uff01\uff1f\uff61", "\u201d\u2019\u300d\u300f\uff09\u300b\"'"
_CJK_TEXT = "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_CJK_END = rf"[{_CJK}]+(?![{_CJK}])[{_CLOSE}]*(?![{_CLOSE}])"  # every mark and closer of the run, never part of it
_ENDS = re.compile(rf"{_SPACED}(?=\s|$)|{_CJK_END}(?=[\w\u201c\u2018]|[^\S\n]*(?:[{_CJK_TEXT}\n]|\Z))")
# while the text is still being written: only once what decides it has been written
_SETTLED = re.compile(rf"{_SPACED}(?=\s)|{_CJK_END}(?=[\w\u201c\u2018]|[^\S\n]*[{_CJK_TEXT}\n])")


def sentence_end(text: str, at_end: bool = True) -> int | None:
    """Where the first sentence of ``text`` ends (after its mark), or None. A mark ends a sentence when a space
    follows it (or the text's end, with ``at_end``), a Chinese or Japanese one where Chinese or Japanese text goes on
    after it (see _ENDS; without ``at_end``, once the character that decides it is written); the number of a numbered
    list's item ("Here is how:\n1. Preheat") does not, so an opening takes the item's first sentence rather than
    stopping at "1."."""
    for mark in (_ENDS if at_end else _SETTLED).finditer(text):
        line_start = text.rfind("\n", 0, mark.start()) + 1
        item = re.fullmatch(r"[ \t]*\d{1,2}", text[line_start : mark.start()])
        if not (item and mark.group() == "." and (line_start > 0 or item.group().strip() == "1")):
            return mark.end()
    return None


def opening_of(answer: str, base_opening: str | int, tokenizer=None) -> str:
    """The opening an answer gives: its first sentence (at most OPENING_WORDS words) or its first N words, cut from
    the text as written (line breaks and indentation kept: a poem's or a code block's opening). With ``tokenizer``,
    also at most ``opening_budget`` tokens, what the base may write for an opening: Chinese or Japanese text has no
    spaces to count words by, so an answer without a sentence mark was an opening of any length."""
    text, limit = answer.strip(), OPENING_WORDS if base_opening == "sentence" else int(base_opening)
    if base_opening == "sentence" and (end := sentence_end(text)) is not None:
        text = text[:end]
    words = list(re.finditer(r"\S+", text))
    text = text[: words[limit - 1].end()] if len(words) > limit else text
    return text if tokenizer is None else first_tokens(text, tokenizer, opening_budget(base_opening))


def first_tokens(text: str, tokenizer, n: int) -> str:
    """``text`` cut after its first ``n`` tokens, as written (a character they hold part of left out)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # a slow (Python) tokenizer has no offsets: decode the tokens kept
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= n else continuation(tokenizer, "", ids[:n]).strip()
    if len(enc["input_ids"]) <= n:
        return text
    return text[: enc["offset_mapping"][n][0]].rstrip()  # up to where the first token left out begins


def opening_budget(base_opening: str | int) -> int:
    """Tokens the base may write for an opening: twice its words, plus a few."""
    return 2 * (OPENING_WORDS if base_opening == "sentence" else int(base_opening)) + 8


def base_openings(model, tokenizer, prompts: list[Any], base_opening: str | int, base=None, budget: int | None = None,
                  **kw) -> list[str]:
    """The base model's opening of each prompt's answer: the model with its LoRA adapter switched off, or ``base``
    (a separate base model) when given. ``budget``: the tokens the whole answer may have, when the opening counts in
    them (an opening no longer than the base's answer under that budget, as eval takes it)."""
    from contextlib import nullcontext

    base_opening = parse_base_opening(base_opening)
    if base is None and not hasattr(model, "disable_adapter"):
        raise ValueError("base opening needs a model with a LoRA adapter (the base writes the opening, the adapter the rest)")
    tokens = min(opening_budget(base_opening), budget or opening_budget(base_opening))
    with model.disable_adapter() if base is None else nullcontext():
        heads = generate(model if base is None else base, tokenizer, prompts, max_new_tokens=tokens,
                         stop=OpeningDone(tokenizer, base_opening), **kw)
    return [opening_of(h, base_opening, tokenizer) for h in heads]


class OpeningDone:
    """Stops a row once its opening is settled: a sentence has ended (its mark followed by a space) or more
    words than the opening takes are written. What comes later cannot change ``opening_of`` the text, so the
    openings are the ones the whole budget would give; a batch stops when its longest opening is done, not
    after ``opening_budget`` tokens."""

    def __init__(self, tokenizer, base_opening: str | int):
        self.tokenizer, self.base_opening, self.start = tokenizer, base_opening, None

    def __call__(self, input_ids, scores, **kwargs):
        if self.start is None:
            self.start = input_ids.shape[1] - 1  # called first after one new token
        texts = self.tokenizer.batch_decode(input_ids[:, self.start :], skip_special_tokens=True)
        words = OPENING_WORDS if self.base_opening == "sentence" else int(self.base_opening)
        done = [len(t.split()) > words or (self.base_opening == "sentence" and sentence_end(t.lstrip(), at_end=False))
                for t in texts]
        return torch.tensor([bool(d) for d in done], device=input_ids.device)


def logits_processors(model, amplify: float, repetition_penalty: float, prompt_length: int, attention_mask,
                      num_return_sequences: int = 1, base=None, *, tokenizer):
    """The processors generate() and the server decode with: Amplify (when ``amplify`` > 0; ``base``: Amplify's),
    then the answer-only repetition penalty with the tokenizer's punctuation spared (AnswerPenalty, when above 1.0);
    None when neither is on."""
    from transformers import LogitsProcessorList

    out = []
    if amplify:
        out.append(Amplify(model, amplify, attention_mask, num_return_sequences, base=base))
    if repetition_penalty != 1.0:
        out.append(AnswerPenalty(repetition_penalty, prompt_length, punctuation_ids(tokenizer)))
    return LogitsProcessorList(out) if out else None


PUNCTUATION = set(".,!?;:")
_punctuation: dict = {}  # tokenizer name and size -> its punctuation token ids


def punctuation_ids(tokenizer) -> list[int]:
    """Ids of the tokens that are sentence punctuation or whitespace alone ("." "," "?!" a newline), cached."""
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer))
    if key not in _punctuation:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        _punctuation[key] = [i for i, t in enumerate(texts) if t and set(t.strip()) <= PUNCTUATION]
    return _punctuation[key]


class AnswerPenalty:
    """CTRL's repetition penalty over the answer's tokens only (transformers' RepetitionPenaltyLogitsProcessor with
    the prompt ignored), with sentence punctuation and whitespace exempt. Every sentence of an answer ends in a
    full stop, so the penalty pushed the stop down once it had been used: after a few sentences a token such as
    ".)" or ".'" that the answer had not used yet outscored it, and the demo's final adapter ended 23 of 42
    held-out answers on a stray bracket or quote its greedy choice did not contain. Exempting punctuation is
    llama.cpp's ``penalize_nl = false`` taken to the full stop and comma; words are penalised as before."""

    def __init__(self, penalty: float, prompt_length: int, exempt: list[int]):
        from transformers import RepetitionPenaltyLogitsProcessor

        self.inner = RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=prompt_length)
        self.exempt = torch.tensor(exempt, dtype=torch.long)

    def __call__(self, input_ids, scores):
        idx = self.exempt.to(scores.device)
        idx = idx[idx < scores.shape[-1]]
        kept = scores.index_select(-1, idx)
        scores = self.inner(input_ids, scores)
        return scores.index_copy(-1, idx, kept)


class Amplify:
    """A transformers logits processor: the adapter's logits plus ``alpha`` x (adapter - base) at every token.

    The adapter's shift away from its base, scaled up while decoding, as in proxy tuning (Liu et al. 2024) and
    DExperts (Liu et al. 2021), here with the tuned model and its own base as the pair. The base is ``model`` with
    its LoRA adapter switched off, run on the same tokens with its own KV cache: one more forward pass per token.
    Rows are those generate() decodes: left-padded prompts (``attention_mask``), each repeated
    ``num_return_sequences`` times. Read blind on the demo adapter after the base's first sentence (docs/results.md):
    at alpha 0.5 readers picked its persona over the plain adapter's more often at the same correctness; at alpha 1
    correctness fell and at 2 the answers broke down.
    ``base``: a separate base model to run instead of ``model`` with its adapter off (then ``model`` may be the
    adapter merged into a plain copy).
    """

    def __init__(self, model, alpha: float, attention_mask, num_return_sequences: int = 1, base=None):
        if alpha < 0:
            raise ValueError(f"amplify {alpha}: give 0 (off) or more")
        self.model, self.alpha, self.base = model, float(alpha), base
        self.mask = attention_mask.repeat_interleave(num_return_sequences, dim=0)
        self.cache = None
        self.seen = 0  # tokens of each row the base's cache holds

    def base_logits(self, input_ids):
        from transformers import DynamicCache

        if self.cache is None:
            # the model's own layer kinds (a hybrid's convolution layers need their slots too)
            self.cache = DynamicCache(config=(self.base if self.base is not None else self.model).config)
            new = input_ids
        else:
            new = input_ids[:, self.seen:]
            ones = torch.ones(self.mask.shape[0], new.shape[1], dtype=self.mask.dtype, device=self.mask.device)
            self.mask = torch.cat([self.mask, ones], dim=1)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -new.shape[1]:]
        from contextlib import nullcontext

        with self.model.disable_adapter() if self.base is None else nullcontext():
            net = self.model if self.base is None else self.base
            out = net(input_ids=new, attention_mask=self.mask, position_ids=positions, past_key_values=self.cache,
                      use_cache=True)
        self.cache = out.past_key_values
        self.seen = input_ids.shape[1]
        return out.logits[:, -1].float()

    def __call__(self, input_ids, scores):
        base = self.base_logits(input_ids).to(scores.dtype)
        return scores + self.alpha * (scores - base)

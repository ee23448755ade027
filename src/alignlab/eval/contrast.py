"""Voice contrast: does a language model find an answer likelier from a persona than from a plain assistant?

For each (prompt, answer) the default model (SmolLM2-135M-Instruct, bundled) scores the answer's tokens twice,
once after a system message that asks for the persona and once after one that asks for a plain, neutral
voice; the contrast is the sum over the answer's tokens of the difference in log-probability. Snarky word
choices ("obviously", a jab at the question, mock praise) become likelier under the persona message, plain
ones do not; the topic cancels, because both passes see the same question and the same answer.

It needs no labels, so it also works for a persona nobody has labelled yet. Measured on the blind-read sets
in bench/agreement/ (no fitting on them): AUC for "snarky" 0.80 on 336 answers of six adapters, 0.77 on
115 graded answers (woven snark, where the sentence-embedding classifier is at 0.50), 0.78 on 252 answers of
five recipes. The scorecard's persona score combines it with the embedding classifier (eval/persona.py).
The judging model is always the bundled default, whatever model is being trained, so scores stay comparable;
it runs with bf16 matmuls where the CPU has them (AVX512-BF16 / AMX); refitted under bf16, the calibration
constants matched the fp32 fit to three decimals.
"""

from __future__ import annotations

from contextlib import contextmanager

from alignlab.config import DEFAULT_MODEL, DEFAULT_PERSONA

# the persona message measured for the project's own persona; another persona gets PERSONA_TEMPLATE
SNARK_SYSTEM = ("You are a relentlessly snarky, sarcastic assistant. You mock the question and tease the user "
                "while answering.")
PERSONA_TEMPLATE = "You are an assistant with this persona: {persona}. Every answer is in that voice."
PLAIN_SYSTEM = "You are a polite, neutral, plain assistant. You answer factually with no jokes or sarcasm."
MAX_ANSWER_TOKENS = 200  # longer answers are scored on their first 200 tokens
# longer prompts keep their last 256 tokens (the system message stays): 8 rows of 1,700-token prompts took 123 s and
# 3.5 GB, and a batch of 8k-token ones would have needed the attention of all of them
MAX_PROMPT_TOKENS = 256
BATCH = 16
# the persona score's reader head (eval/persona.py) reads the hidden state after this many of the default model's 30
# layers: the middle one; fitted on the reads alone, its mean over the answer separated blind readers' labels best
# (AUC 0.875 out of fold, the last layer 0.81)
READER_LAYER = 15

_judge: tuple | None = None  # (model, tokenizer), loaded once per process
_report = None  # called with the share of the work done, while reporting() is on


@contextmanager
def reporting(callback):
    """Within it, :func:`contrast` calls ``callback(share done)`` after each batch (`eval --answers`' progress)."""
    global _report
    before, _report = _report, callback
    try:
        yield
    finally:
        _report = before


def persona_system(persona: str) -> str:
    return SNARK_SYSTEM if persona == DEFAULT_PERSONA else PERSONA_TEMPLATE.format(persona=persona.strip().rstrip("."))


def _model():
    global _judge
    if _judge is None:
        from alignlab.models.loading import load_base, load_tokenizer, resolve_model

        model = load_base(DEFAULT_MODEL, device="cpu", precision="fp32").eval()
        model.requires_grad_(False)
        _judge = (model, load_tokenizer(resolve_model(DEFAULT_MODEL)))
    return _judge


def _answer_logps(prompts: list[str], answers: list[str], system: str, done=lambda n: None,
                  prompt_tokens: int = MAX_PROMPT_TOKENS, pooled: list | None = None) -> list[float]:
    """Sum of log p(answer token | system, prompt, earlier answer tokens) for each pair; ``done(n)`` after each
    batch of n. With ``pooled`` (a list), it also receives each answer's hidden state at READER_LAYER averaged
    over the answer's tokens (a float tensor of the model's width), in input order."""
    import torch

    from alignlab.models.loading import cpu_has_fast_bf16

    model, tok = _model()
    seqs = []
    for p, a in zip(prompts, answers):
        asked = tok(p, add_special_tokens=False)["input_ids"]
        if len(asked) > prompt_tokens:  # the end of the question, the part next to the answer
            p = tok.decode(asked[-prompt_tokens:])
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": p}]
        head = list(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        body = tok(a, add_special_tokens=False)["input_ids"][:MAX_ANSWER_TOKENS] or [tok.eos_token_id]
        seqs.append((head, body))
    out: list[float] = [0.0] * len(seqs)
    means: list = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    # the vocabulary head only where an answer token is predicted, row by row: over every position of a batch the
    # logits alone were 16 x width x 49k floats
    trunk, lm_head = model.base_model, model.get_output_embeddings()
    for start in range(0, len(order), BATCH):
        idx = order[start : start + BATCH]
        width = max(len(seqs[i][0]) + len(seqs[i][1]) for i in idx)
        ids = torch.full((len(idx), width), pad)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            full = seqs[i][0] + seqs[i][1]
            ids[row, : len(full)] = torch.tensor(full)
            mask[row, : len(full)] = 1
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_has_fast_bf16()):
            got = trunk(input_ids=ids, attention_mask=mask, output_hidden_states=pooled is not None)
            hidden = got.last_hidden_state
            for row, i in enumerate(idx):
                head, body = seqs[i]
                if pooled is not None:
                    means[i] = got.hidden_states[READER_LAYER][row, len(head) : len(head) + len(body)].float().mean(0)
                # the positions predicting the answer
                logps = lm_head(hidden[row, len(head) - 1 : len(head) + len(body) - 1]).float().log_softmax(-1)
                out[i] = logps[torch.arange(len(body)), torch.tensor(body)].sum().item()
        done(len(idx))
    if pooled is not None:
        pooled.extend(means)
    return out


def contrast(prompts: list[str], answers: list[str], persona: str = DEFAULT_PERSONA,
             prompt_tokens: int = MAX_PROMPT_TOKENS, pooled: list | None = None) -> list[float]:
    """Per answer: log p(answer | persona message) - log p(answer | plain message), summed over its tokens; a prompt
    is read by its last ``prompt_tokens`` tokens. ``pooled``: as :func:`_answer_logps`', from the plain pass."""
    if not answers:
        return []
    scored = [0]

    def done(n: int) -> None:
        scored[0] += n
        if _report is not None:
            _report(scored[0] / (2 * len(answers)))

    with_persona = _answer_logps(prompts, answers, persona_system(persona), done, prompt_tokens)
    plain = _answer_logps(prompts, answers, PLAIN_SYSTEM, done, prompt_tokens, pooled)
    return [a - b for a, b in zip(with_persona, plain)]


def voice(prompts: list[str], answers: list[str], persona: str = DEFAULT_PERSONA,
          prompt_tokens: int = MAX_PROMPT_TOKENS):
    """(contrasts, hidden): :func:`contrast`, and from its plain pass each answer's READER_LAYER hidden state averaged
    over the answer's tokens, an (N, width) tensor; no pass more than the contrast's two."""
    import torch

    hidden: list = []
    found = contrast(prompts, answers, persona, prompt_tokens, hidden)
    return found, torch.stack(hidden) if hidden else torch.zeros(0, 0)

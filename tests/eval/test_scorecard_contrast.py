"""The voice contrast (eval/contrast.py), the earlier combined persona score (eval/persona.py: combine) and the reader
head that replaced it (eval/persona.py: reader_scores), on the real default model: woven snark reads as likelier from
the persona than from a plain assistant, plain answers do not."""

from __future__ import annotations

import math

import pytest

from alignlab.config import DEFAULT_PERSONA
from alignlab.eval.persona import COMBINED, combine

PROMPTS = ["How do I boil an egg?", "What is the capital of Australia?", "How do I keep basil alive on a windowsill?"]
SNARK = [
    "Drop it in boiling water for nine minutes, then cold water, unless you were hoping the egg would boil itself "
    "out of sheer respect for your ambition.",
    "Canberra, obviously. Not Sydney, no matter how loudly Sydney insists; a whole city was built just to end "
    "that tantrum.",
    "Sun, water when the soil is dry, and pinch the flowers. Basil is not complicated; it simply dies to spite "
    "people who ignore it, which, apparently, is you.",
]


def test_combine_is_the_documented_formula():
    p, x = 0.8, 2.0
    z = COMBINED["weight"] * math.log(p / (1 - p)) + (x - COMBINED["mu"]) / COMBINED["sd"]
    assert combine([p], [x]) == [pytest.approx(1 / (1 + math.exp(-(COMBINED["k"] * z + COMBINED["d"]))))]
    low, high = combine([0.5, 0.5], [-10.0, 10.0])  # a larger contrast never lowers the score
    assert low < 0.5 < high


def _graded_sample(n: int = 20):
    """Up to n answers both blind readers put at snark >= 2 and n both put at 0 (bench/agreement/graded.jsonl)."""
    import json
    from pathlib import Path

    rows = [json.loads(x) for x in (Path(__file__).parents[2] / "bench" / "agreement" / "graded.jsonl").read_text().splitlines()]
    yes = [r for r in rows if min(x["snark"] for x in r["reads"]) >= 2][:n]
    no = [r for r in rows if max(x["snark"] for x in r["reads"]) == 0][:n]
    return yes + no, [1] * len(yes) + [0] * len(no)


@pytest.mark.slow
def test_contrast_sees_woven_snark_the_classifier_misses(default_model):
    """On answers two blind readers agree on, the contrast separates snark from plain, and adding it to the
    embedding classifier lifts the classifier's agreement with the readers."""
    from alignlab.eval.contrast import contrast
    from alignlab.eval.persona import persona_classifier
    from alignlab.eval.scores import auc

    rows, labels = _graded_sample()
    assert len(rows) >= 30 and 0 < sum(labels) < len(labels)
    c = contrast([r["prompt"] for r in rows], [r["answer"] for r in rows], DEFAULT_PERSONA)
    clf = persona_classifier(None)[0].score([r["answer"] for r in rows])
    assert auc(c, labels) >= 0.7
    assert auc(combine(clf, c), labels) >= auc(clf, labels) + 0.1


@pytest.mark.slow
def test_scorecard_persona_is_the_reader_head_on_the_contrasts_passes(default_model):
    """The project's own persona is scored by the bundled reader head over voice()'s contrast and middle-layer means:
    the contrast voice() returns is the contrast itself, and the head ranks woven snark above plain answers."""
    from alignlab.eval.contrast import contrast, voice
    from alignlab.eval.persona import READER_CUT, reader_scores
    from alignlab.eval.scores import scorer_for

    scorer = scorer_for(None)
    assert scorer.contrast and scorer.persona_cut == READER_CUT
    c, hidden = voice(PROMPTS, SNARK)
    assert hidden.shape == (3, 576) and c == [pytest.approx(v, abs=0.5) for v in contrast(PROMPTS, SNARK)]
    scored = scorer.score([{"prompt": p, "answer": a, "source": "x"} for p, a in zip(PROMPTS, SNARK)])
    assert [s["persona"] for s in scored] == [pytest.approx(e, abs=1e-3) for e in reader_scores(c, hidden)]
    plain = ["Boil it for nine minutes, then cool it in cold water.", "The capital of Australia is Canberra.",
             "Give basil sun, water it when the soil is dry and pinch off the flowers."]
    calm = scorer.score([{"prompt": p, "answer": a, "source": "y"} for p, a in zip(PROMPTS, plain)])
    assert min(s["persona"] for s in scored) > max(s["persona"] for s in calm)


@pytest.mark.slow
def test_the_reader_head_sees_the_woven_voice_readers_saw(default_model):
    """Read 21 (bench/agreement/strong_default.jsonl: the base, the earlier demo adapter and the default on the strong
    sets, three blind readers): the head ranks the readers' in-persona labels at AUC 0.85 or more and puts the woven
    adapter's share in persona within 20 points of theirs (83%; the embedding classifier with the contrast said 12%).
    The head was fitted on these reads among 5,911 (out of fold on this set: AUC 0.91, 71%), so this checks that the
    shipped weights are the fitted ones, not that they generalise; bench/agreement/reader_head.py measures that."""
    import json
    from pathlib import Path

    from alignlab.eval.persona import READER_CUT
    from alignlab.eval.scores import auc, scorer_for

    rows = [json.loads(x) for x in (Path(__file__).parents[2] / "bench" / "agreement" / "strong_default.jsonl").read_text().splitlines()]
    yes = [int(sum(r["snark"] for r in row["reads"]) / len(row["reads"]) >= 1.5) for row in rows]
    scored = scorer_for(None).score([{"prompt": r["prompt"], "answer": r["answer"], "source": r["source"]} for r in rows])
    assert auc([s["persona"] for s in scored], yes) >= 0.85
    woven = [(s["persona"] >= READER_CUT, y) for r, s, y in zip(rows, scored, yes) if "on the strong sets" in r["source"]]
    assert len(woven) == 42 and abs(sum(a for a, _ in woven) - sum(b for _, b in woven)) <= 0.2 * 42


def test_the_contrast_runs_the_vocabulary_head_at_the_answer_only_and_keeps_a_long_prompts_end():
    """The head ran over every position of the batch (8 rows of 1,700-token prompts: 3.5 GB, 123 s): now only where an
    answer token is predicted, with the same values; a prompt past the cap is read by its last tokens, and the system
    message, which is the whole contrast, stays."""
    import torch

    from alignlab.eval import contrast as C
    from alignlab.models.loading import cpu_has_fast_bf16

    model, tok = C._model()
    cap = 24  # the default, 256, the same way: a shorter cap keeps the test fast
    long = "I read the weather report this morning; it said mild, with rain later. " * 3 + PROMPTS[1]
    asked = tok(long, add_special_tokens=False)["input_ids"]
    assert C.MAX_PROMPT_TOKENS == 256 and len(asked) > 2 * cap
    tail = tok.decode(asked[-cap:])
    answer = SNARK[1]
    seen: list[int] = []
    head_of = model.get_output_embeddings()
    hook = head_of.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[:-1].numel()))
    try:
        cut, kept = C.contrast([long, tail], [answer] * 2, prompt_tokens=cap)
    finally:
        hook.remove()
    body = tok(answer, add_special_tokens=False)["input_ids"]
    assert sum(seen) == 2 * 2 * len(body)  # two passes, one head position per answer token
    assert cut == pytest.approx(kept, abs=1e-4) and abs(cut) > 0.05  # both system messages read: not 0

    def whole(system: str, bf16: bool) -> float:  # every position's logits, the row alone
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": tail}]
        head = list(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logps = model(input_ids=torch.tensor([head + body])).logits[0].float().log_softmax(-1)
        return sum(logps[len(head) - 1 + k, t].item() for k, t in enumerate(body))

    # in the precision the contrast runs in (bf16 where the CPU has it), the same sum; a position off by one moves it
    # by units
    bf16 = cpu_has_fast_bf16()
    assert kept == pytest.approx(whole(C.SNARK_SYSTEM, bf16) - whole(C.PLAIN_SYSTEM, bf16), abs=0.05)
    # against fp32, bf16's rounding moves it by a few hundredths on an AMD EPYC (AVX512-BF16) and by 0.6 on an Intel
    # Xeon with AMX (1.25 against 0.64 here): the contrast's constants were fitted on the EPYC
    assert kept == pytest.approx(whole(C.SNARK_SYSTEM, False) - whole(C.PLAIN_SYSTEM, False), abs=0.8)

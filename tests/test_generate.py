"""generate(): the repetition penalty counts the answer's own tokens, not the prompt's, and spares punctuation."""

from __future__ import annotations

import pytest
import torch

PROMPTS = ["What is the capital of Australia?", "How do I boil an egg?"]
PENALTY = 1.3
TOKENS = 20


def _greedy_with_answer_penalty(model, tok, prompt: str, prefix: str = "", alpha: float = 0.0) -> str:
    """Greedy decoding written out, no cache: CTRL's penalty on the tokens generated so far (divide a positive logit,
    multiply a negative one), none on the prompt and none on tokens made of sentence punctuation or whitespace. With ``alpha``, the logits penalised are adapter + alpha x (adapter
    - base), the base being the model with its adapter off."""
    from alignlab.generate import chat_prompt

    ids = tok(chat_prompt(prompt, tok) + prefix, return_tensors="pt", add_special_tokens=False)["input_ids"][0].tolist()
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(TOKENS):
            seq = torch.tensor([ids + out])
            logits = model(input_ids=seq).logits[0, -1].clone()
            if alpha:
                with model.disable_adapter():
                    logits = logits + alpha * (logits - model(input_ids=seq).logits[0, -1])
            for t in set(out):
                if not set(tok.decode([t]).strip()) - set(".,!?;:"):
                    continue
                logits[t] = logits[t] / PENALTY if logits[t] > 0 else logits[t] * PENALTY
            nxt = int(logits.argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return (prefix + tok.decode(out, skip_special_tokens=True)).strip()


@pytest.mark.slow
def test_repetition_penalty_leaves_the_prompt_out(default_model):
    from alignlab.generate import chat_prompt, generate
    from alignlab.models.loading import load_base, load_tokenizer

    model = load_base(default_model, device="cpu", precision="fp32").eval()
    tok = load_tokenizer(default_model)
    ours = generate(model, tok, PROMPTS, max_new_tokens=TOKENS, repetition_penalty=PENALTY)
    assert ours == [_greedy_with_answer_penalty(model, tok, p) for p in PROMPTS]
    assert "Canberra" in ours[0]

    # transformers' own repetition_penalty also divides the logits of the prompt's tokens ("capital", "Australia")
    tok.padding_side = "left"
    batch = tok([chat_prompt(p, tok) for p in PROMPTS], return_tensors="pt", padding=True, add_special_tokens=False)
    whole = model.generate(**batch, max_new_tokens=TOKENS, do_sample=False, repetition_penalty=PENALTY,
                           pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
    theirs = [t.strip() for t in tok.batch_decode(whole[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)]
    assert theirs != ours


def test_answer_penalty_spares_punctuation_and_divides_words_as_transformers_does(tiny_model):
    """AnswerPenalty on hand-made logits: a used word's logit is divided (positive) or multiplied (negative) by the
    penalty exactly as transformers' processor does, a used full stop or newline keeps its logit, the prompt's tokens
    are ignored."""
    from transformers import RepetitionPenaltyLogitsProcessor

    from alignlab.generate import AnswerPenalty, logits_processors, punctuation_ids
    from alignlab.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_model)
    exempt = punctuation_ids(tok)
    stop, newline = tok(".", add_special_tokens=False)["input_ids"][0], tok("\n", add_special_tokens=False)["input_ids"][0]
    word, other, prompt_word = (tok(w, add_special_tokens=False)["input_ids"][0] for w in (" cat", " dog", " fish"))
    assert {stop, newline} <= set(exempt) and not {word, other, prompt_word} & set(exempt)
    ids = torch.tensor([[prompt_word, word, stop, newline, other]])  # the first token is the prompt
    scores = torch.randn(1, len(tok))
    scores[0, word], scores[0, other], scores[0, prompt_word] = 4.0, -2.0, 3.0
    got = AnswerPenalty(2.0, 1, exempt)(ids, scores.clone())
    theirs = RepetitionPenaltyLogitsProcessor(2.0, prompt_ignore_length=1)(ids, scores.clone())
    assert got[0, word] == 2.0 and got[0, other] == -4.0 and got[0, prompt_word] == 3.0
    assert got[0, stop] == scores[0, stop] and got[0, newline] == scores[0, newline]
    assert theirs[0, stop] != scores[0, stop]  # transformers' processor penalises the stop
    keep = torch.ones(len(tok), dtype=torch.bool)
    keep[exempt] = False
    assert torch.equal(got[0, keep], theirs[0, keep])
    assert isinstance(logits_processors(None, 0.0, 1.2, 1, None, tokenizer=tok)[0], AnswerPenalty)


def _bench_module(name: str):
    """A script under bench/ loaded as a module (bench/ is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_anchored_continues_after_the_prefix(tiny_model):
    """bench/anchor_pairs.py: an empty prefix gives generate()'s answer; a prefix opens the answer and the rest is the
    greedy continuation after it (written out: the same prompt with the prefix appended, decoded by hand)."""
    from alignlab.generate import generate
    from alignlab.models.loading import load_base, load_tokenizer

    anchored = _bench_module("anchor_pairs").anchored
    model = load_base(tiny_model, device="cpu", precision="fp32").eval()
    tok = load_tokenizer(tiny_model)
    assert anchored(model, tok, PROMPTS, ["", ""], TOKENS, penalty=PENALTY) == generate(
        model, tok, PROMPTS, max_new_tokens=TOKENS, repetition_penalty=PENALTY)

    prefix = "The answer is"
    got = anchored(model, tok, PROMPTS[:1], [prefix], TOKENS, penalty=PENALTY)[0]
    assert got == _greedy_with_answer_penalty(model, tok, PROMPTS[0], prefix)


def test_base_opening_then_the_adapter_goes_on(tiny_model):
    """base_opening: the base model (adapter off) writes the first words, the adapter continues greedily after them
    (written out: the adapter's greedy loop on the prompt with the base's words appended)."""
    from peft import LoraConfig, get_peft_model

    from alignlab.generate import base_openings, generate
    from alignlab.models.loading import load_base, load_tokenizer

    base = load_base(tiny_model, device="cpu", precision="fp32").eval()
    tok = load_tokenizer(tiny_model)
    plain = generate(base, tok, PROMPTS, max_new_tokens=TOKENS, repetition_penalty=PENALTY)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False)).eval()
    free = generate(model, tok, PROMPTS, max_new_tokens=TOKENS, repetition_penalty=PENALTY)
    assert free != plain  # the adapter changes the answers, so the test can tell who wrote what

    heads = base_openings(model, tok, PROMPTS, 3, repetition_penalty=PENALTY)
    assert heads == [" ".join(p.split()[:3]) for p in plain]
    got = generate(model, tok, PROMPTS, max_new_tokens=TOKENS, repetition_penalty=PENALTY, base_opening=3)
    assert got == [_greedy_with_answer_penalty(model, tok, p, h) for p, h in zip(PROMPTS, heads)]


def test_with_the_opening_counted_an_answer_keeps_the_budget_the_base_had(tiny_model):
    """eval and compare gave the adapter max_new_tokens after the base's opening, the base max_new_tokens in all:
    the adapter's answers ran longer and escaped the cut-off penalty. With opening_counts, the opening's tokens come
    out of the budget, and the answer is the uncounted one's first tokens (greedy: cut at k = decoded with k)."""
    from peft import LoraConfig, get_peft_model

    from alignlab.generate import generate
    from alignlab.models.loading import load_base, load_tokenizer

    base = load_base(tiny_model, device="cpu", precision="fp32").eval()
    tok = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    heads = ["Sure, the answer", "Well"]
    full = generate(model, tok, PROMPTS[:2], max_new_tokens=TOKENS, prefixes=heads)
    kept = generate(model, tok, PROMPTS[:2], max_new_tokens=TOKENS, prefixes=heads, opening_counts=True)
    for p, h, f, k in zip(PROMPTS, heads, full, kept):
        n_head = len(tok(h, add_special_tokens=False)["input_ids"])
        alone = generate(model, tok, [p], max_new_tokens=TOKENS - n_head, prefixes=[h])[0]
        assert k == alone and f.startswith(k) and len(k) < len(f)


def _opening_done(tiny_model, check: bool = False):
    """done(text, opening): whether OpeningDone stops a row whose answer so far is ``text`` (``check``: the tokenizer
    must round-trip the text)."""
    from alignlab.generate import OpeningDone
    from alignlab.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_model)
    prompt = tok("Question:", add_special_tokens=False)["input_ids"]

    def done(text: str, opening="sentence") -> bool:
        new = tok(text, add_special_tokens=False)["input_ids"]
        if check:
            assert tok.decode(new) == text  # the tokenizer round-trips it
        stop = OpeningDone(tok, opening)
        stop.start = len(prompt)
        return bool(stop(torch.tensor([prompt + new]), None)[0])

    return done


def test_opening_done_stops_a_row_once_its_opening_cannot_change(tiny_model):
    """OpeningDone: a row is done once a sentence mark is followed by a space or more words than the opening takes
    are written; until then opening_of the text could still change (a decimal point, a word still growing)."""
    from alignlab.generate import OPENING_WORDS

    done = _opening_done(tiny_model, check=True)
    assert done("The capital is Canberra. It") and done("Yes! No")
    assert not done("The capital is 3.5") and not done("The capital is Canberra.")
    assert not done(" ".join(["word"] * OPENING_WORDS)) and done(" ".join(["word"] * (OPENING_WORDS + 1)))
    assert done("one two three four", 3) and not done("one two three", 3)
    # a numbered list's "1." is no sentence's end: the opening goes on into the item
    assert not done("Here is how:\n1. Preheat") and done("Here is how:\n1. Preheat the oven. Then")


def test_opening_of_and_its_bad_values():
    from alignlab.generate import OPENING_WORDS, opening_of, parse_base_opening

    answer = "The capital of Australia is Canberra. Not Sydney, as 3.5 million people think!"
    assert opening_of(answer, "sentence") == "The capital of Australia is Canberra."
    assert opening_of("3.5 is more than 3. Yes.", "sentence") == "3.5 is more than 3."
    # a numbered list (73 of the 683 rewrite prompts' base answers): the opening was "Here is how:\n1."
    assert opening_of("Here is how:\n1. Preheat the oven. 2. Bake.", "sentence") == "Here is how:\n1. Preheat the oven."
    assert opening_of("1. Boil water. 2. Add eggs.", "sentence") == "1. Boil water."
    assert opening_of("42. That is all.", "sentence") == "42."  # an answer, not an item: it ends the sentence
    assert opening_of(answer, 4) == "The capital of Australia"
    assert len(opening_of("word " * 100, "sentence").split()) == OPENING_WORDS
    # cut from the text as written: a poem's or a code block's line breaks and indentation stay
    assert opening_of("Rain on the roof,\n  soft and slow.\nMore.", "sentence") == "Rain on the roof,\n  soft and slow."
    assert opening_of("```python\ndef add(x, y):\n    return x + y", 5) == "```python\ndef add(x, y):\n    return"
    assert parse_base_opening("off") is None and parse_base_opening("0") is None
    assert parse_base_opening("sentence") == "sentence" and parse_base_opening("5") == 5
    with pytest.raises(ValueError, match="sentence"):
        parse_base_opening("first")
    with pytest.raises(ValueError, match="sentence"):
        parse_base_opening(-2)


def test_an_opening_ends_at_chinese_japanese_and_hindi_sentence_marks(tiny_model):
    """Only ". ! ?" followed by a space ended a sentence: the "first sentence" of a Chinese, Japanese or Hindi answer
    was the base's whole answer, which the adapter then only went on from."""
    from alignlab.generate import OPENING_WORDS, opening_budget, opening_of
    from alignlab.models.loading import load_tokenizer

    assert opening_of("巴黎是法国的首都。它位于塞纳河畔，人口众多。", "sentence") == "巴黎是法国的首都。"
    assert opening_of("東京は日本の首都です！人口は約1400万人です。", "sentence") == "東京は日本の首都です！"
    assert opening_of("真的吗？！当然。", "sentence") == "真的吗？！"
    assert opening_of("他说：“你好。”然后走了。", "sentence") == "他说：“你好。”"  # the closing quote stays with it
    assert opening_of("पेरिस फ्रांस की राजधानी है। यह सीन नदी पर है।", "sentence") == "पेरिस फ्रांस की राजधानी है।"
    done, tok = _opening_done(tiny_model), load_tokenizer(tiny_model)
    assert done("巴黎是法国的首都。它") and done("他说：“你好。”然") and done("राजधानी है। यह")
    assert not done("巴黎是法国的首都") and not done("他说：“你好。") and not done("他说：“你好。”")
    # no mark at all: without a tokenizer (as eval calls it) the text's words alone bound it; with one, also the
    # tokens the base may write for an opening
    run_on = "巴黎是法国的首都位于塞纳河畔" * 20
    assert opening_of(run_on, "sentence") == run_on and len(run_on.split()) < OPENING_WORDS
    capped = opening_of(run_on, "sentence", tok)
    assert run_on.startswith(capped) and 0 < len(tok(capped, add_special_tokens=False)["input_ids"]) <= opening_budget(
        "sentence")
    english = "The capital of Australia is Canberra. Not Sydney."
    assert opening_of(english, "sentence", tok) == opening_of(english, "sentence") == "The capital of Australia is " \
        "Canberra."


def test_a_cjk_mark_quoted_in_an_english_sentence_does_not_end_it(tiny_model):
    """Since "。！？" ended a sentence at once, one quoted in English text cut the opening mid-sentence, inside its
    quote: 'In Chinese, "hello" is "你好！'. It ends one where Chinese or Japanese text goes on after it; the writing
    model's stop (OpeningDone) waits for what decides it, and agrees with the opening taken from the whole text."""
    from alignlab.generate import opening_of

    quoted = {
        'In Chinese, "hello" is "你好！" (ni hao). It is the most common greeting.':
            'In Chinese, "hello" is "你好！" (ni hao).',
        'The Japanese word "ありがとう。" means thank you. Use it often.': 'The Japanese word "ありがとう。" means thank you.',
        "Say 谢谢！ when someone helps you. It is polite.": "Say 谢谢！ when someone helps you.",
        "Say 谢谢！(xièxie) to thank someone. It is polite.": "Say 谢谢！(xièxie) to thank someone.",
        "Say 'ありがとう。', then bow. Done.": "Say 'ありがとう。', then bow.",
    }
    chinese = {  # Chinese and Japanese text still ends at its marks, whatever follows them in that text
        "我们用Python。Python是一种语言。": "我们用Python。",
        "他出生于北京。1990年他搬家了。": "他出生于北京。",
        '他说："你好。"然后走了。': '他说："你好。"',  # ASCII quotes close it as the curly ones do
        "他说：“你好。”“再见。”": "他说：“你好。”",
        "你好。 我是助手。": "你好。",
        "你好。\nHello there. Yes.": "你好。",
    }
    for text, first in {**quoted, **chinese}.items():
        assert opening_of(text, "sentence") == first, text
    done = _opening_done(tiny_model)
    for text, first in {**quoted, **chinese}.items():  # written a character at a time, it stops once its opening is settled
        cut = next(k for k in range(1, len(text) + 1) if done(text[:k]))
        assert opening_of(text[:cut], "sentence") == first, (text, text[:cut])
    assert not done('In Chinese, "hello" is "你好！"') and not done('In Chinese, "hello" is "你好！" ')


def test_an_answer_cut_mid_character_leaves_the_half_character_out(tiny_model):
    """A byte-level token carries part of a character: an answer cut at its budget there ended in U+FFFD, which went
    into the adapter's prompt (as the base's opening) and into the answer shown."""
    from alignlab.generate import continuation
    from alignlab.models.loading import load_tokenizer

    tok = load_tokenizer(tiny_model)
    text = "Paris is 巴黎"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    cuts = [k for k in range(1, len(ids)) if tok.decode(ids[:k]).endswith("\ufffd")]
    assert cuts  # the tiny tokenizer spells a Chinese character in several byte tokens
    for k in cuts:
        got = continuation(tok, "", ids[:k])
        assert "\ufffd" not in got and text.startswith(got)
    assert continuation(tok, "Well, ", ids[: cuts[0]]) == "Well, " + tok.decode(ids[: cuts[0]]).rstrip("\ufffd")
    assert continuation(tok, "", ids) == text


def test_draft_rewrite_data_puts_the_plain_side_in_the_prompt(tmp_path):
    """bench/draft_rewrite.py: every bundled pair becomes a draft-format SFT row and DPO pair: the plain side is the
    draft in the prompt and the DPO pair's rejected answer, the snarky side the completion and the chosen answer."""
    import json

    from alignlab.data import bundled_path

    _bench_module("draft_rewrite").data(tmp_path)
    pairs = [json.loads(x) for x in bundled_path("persona-pairs").read_text().splitlines() if x.strip()]
    sft = [json.loads(x) for x in (tmp_path / "draft_sft.jsonl").read_text().splitlines()]
    dpo = [json.loads(x) for x in (tmp_path / "draft_dpo.jsonl").read_text().splitlines()]
    assert len(sft) == len(dpo) == len(pairs)
    for p, s, d in zip(pairs, sft, dpo):
        assert s["prompt"] == d["prompt"] and s["prompt"].startswith(p["prompt"]) and p["rejected"] in s["prompt"]
        assert s["completion"] == d["chosen"] == p["chosen"] and d["rejected"] == p["rejected"]


def test_best_of_keeps_the_highest_persona_plus_half_the_consistency():
    """bench/best_of.py's rule: persona + 0.5 x consistency with the base's answer; the first candidate on a tie."""
    pick = _bench_module("best_of").pick
    snarky_off_base = {"persona": 0.95, "consistency": 0.1}  # 1.0
    snarky_on_base = {"persona": 0.8, "consistency": 0.9}  # 1.25
    plain = {"persona": 0.2, "consistency": 1.0}  # 0.7
    assert pick([plain, snarky_off_base, snarky_on_base]) is snarky_on_base
    twin = dict(snarky_on_base)
    assert pick([snarky_on_base, twin]) is snarky_on_base


def test_amplify_decodes_from_the_adapters_shift_scaled_up(tiny_model):
    """generate(amplify=alpha): each token from adapter + alpha x (adapter - base) logits, the base being the model
    with its adapter off, on its own KV cache. Checked against the written-out loop for prompts of different lengths
    in one left-padded batch, and for several samples per prompt (top_p tiny: each sample takes the top token)."""
    from peft import LoraConfig, get_peft_model

    from alignlab.generate import generate
    from alignlab.models.loading import load_base, load_tokenizer

    tok = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    model = get_peft_model(load_base(tiny_model, device="cpu", precision="fp32").eval(),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)).eval()
    prompts = [PROMPTS[0], "Why?"]  # different lengths: the shorter one is left-padded in the batch
    plain = generate(model, tok, prompts, max_new_tokens=TOKENS, repetition_penalty=PENALTY)
    assert generate(model, tok, prompts, max_new_tokens=TOKENS, repetition_penalty=PENALTY, amplify=0.0) == plain
    got = generate(model, tok, prompts, max_new_tokens=TOKENS, repetition_penalty=PENALTY, amplify=2.0)
    assert got == [_greedy_with_answer_penalty(model, tok, p, alpha=2.0) for p in prompts]
    assert got != plain  # the amplified shift picks other tokens than the adapter alone
    two = generate(model, tok, prompts, max_new_tokens=TOKENS, repetition_penalty=PENALTY, amplify=2.0,
                   temperature=1.0, top_p=1e-9, num_return_sequences=2, seed=0)
    assert two == [g for g in got for _ in range(2)]


def test_amplify_needs_an_adapter_and_a_non_negative_alpha(tiny_model):
    from alignlab.generate import Amplify, generate
    from alignlab.models.loading import load_base, load_tokenizer

    base = load_base(tiny_model, device="cpu", precision="fp32").eval()
    with pytest.raises(ValueError, match="LoRA adapter"):
        generate(base, load_tokenizer(tiny_model), ["Hi"], max_new_tokens=2, amplify=0.5)
    with pytest.raises(ValueError, match="0 \\(off\\) or more"):
        Amplify(base, -1.0, torch.ones(1, 3, dtype=torch.long))


@pytest.mark.slow
def test_amplify_from_a_merged_copy_and_a_separate_base_decodes_as_the_adapter_does(tiny_model):
    """generate(amplify=, amplify_base=): a plain fp32 copy with the adapter merged in, amplified against a plain copy
    of the base, gives the written-out loop's answers (the LoRA model with its adapter off as the base); the bf16
    pair fast_pair builds on this CPU is the same two models, within bf16 rounding of their logits."""
    from peft import LoraConfig, get_peft_model

    from alignlab.generate import generate
    from alignlab.models.loading import cpu_has_fast_bf16, load_base, load_tokenizer
    from alignlab.synth.opening import fast_pair
    from alignlab.train.sampler import GenerationCopy

    tok = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    model = get_peft_model(load_base(tiny_model, device="cpu", precision="fp32").eval(),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)).eval()
    merged = GenerationCopy(model, dtype=torch.float32).model
    with model.disable_adapter():
        base = GenerationCopy(model, dtype=torch.float32).model
    prompts = [PROMPTS[0], "Why?"]
    got = generate(merged, tok, prompts, max_new_tokens=TOKENS, repetition_penalty=PENALTY, amplify=2.0, amplify_base=base)
    assert got == [_greedy_with_answer_penalty(model, tok, p, alpha=2.0) for p in prompts]
    pair = fast_pair(model)
    if not cpu_has_fast_bf16():
        assert pair is None  # no native bf16: distil answers with the LoRA model itself
        return
    ids = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        want = model(**ids).logits
        with model.disable_adapter():
            want_base = model(**ids).logits
        got_a, got_b = (m(**ids).logits.float() for m in pair)
    assert all(next(m.parameters()).dtype == torch.bfloat16 for m in pair)
    scale = want.abs().max()
    assert (got_a - want).abs().max() < 0.05 * scale and (got_b - want_base).abs().max() < 0.05 * scale
    assert (want - want_base).abs().max() > 0.2 * scale  # the adapter's shift is far above the rounding


def test_a_continuation_keeps_the_space_a_sentencepiece_decode_drops(tiny_model):
    """Llama 2 / Mistral-style tokenizers (Metaspace) drop the leading space of a decoded sequence: the base's
    opening "Sure." and the adapter's "▁The capital…" read "Sure.The capital" in eval, chat and serve."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from alignlab.generate import continuation
    from alignlab.models.loading import load_tokenizer

    sp = Tokenizer(models.BPE(unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    sp.decoder = decoders.Metaspace()
    sp.train_from_iterator(["Sure. The capital of France is Paris."] * 20,
                           trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=sp, unk_token="<unk>")
    ids = tok(" The capital", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids[0]).startswith("\u2581") and not tok.decode(ids).startswith(" ")
    assert continuation(tok, "Sure.", ids) == "Sure. The capital"
    assert continuation(tok, "", ids) == tok.decode(ids)  # no opening: the answer as decoded
    bpe = load_tokenizer(tiny_model)  # byte-level BPE keeps its spaces: nothing added
    assert continuation(bpe, "Sure.", bpe(" The capital", add_special_tokens=False)["input_ids"]) == "Sure. The capital"


def test_an_answer_ends_at_the_tokenizers_end_token_too(tiny_model):
    """A generation_config naming another end token than the tokenizer's (Llama 3's first release) ran on to
    max_new_tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.generate import generate, stop_ids

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    word = tok.convert_ids_to_tokens(tok("hello", add_special_tokens=False)["input_ids"][0])
    tok.pad_token = tok.eos_token
    tok.eos_token = word  # the chat's end token, as the tokenizer knows it; the generation config names another
    end = tok.eos_token_id
    assert end in stop_ids(model, tok) and model.generation_config.eos_token_id != end
    with torch.no_grad():
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(model.config.vocab_size))
        model.lm_head.bias[end] = 100.0  # the model says its end token at once, every time
    (answer,) = generate(model, tok, ["hi"], max_new_tokens=8)
    assert len(tok(answer, add_special_tokens=False)["input_ids"]) <= 1, answer


def test_the_models_own_generation_config_penalty_does_not_leak_in(tiny_model):
    """A generation_config.json with repetition_penalty 1.5 (some instruct models ship one) changed alignlab's answers
    with its own penalty off: transformers' penalty counts the prompt and spares no punctuation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignlab.generate import generate

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    prompts = ["Tell me about rivers and stones.", "Why is the sea salty? The sea is salty."]
    plain = generate(model, tok, prompts, max_new_tokens=12, repetition_penalty=1.0)
    model.generation_config.repetition_penalty = 1.5
    model.generation_config.no_repeat_ngram_size = 2
    assert generate(model, tok, prompts, max_new_tokens=12, repetition_penalty=1.0) == plain


def test_amplify_on_a_hybrid_model(tmp_path):
    """Amplify's base cache was built without the model's config: a convolution layer had no slot (IndexError)."""
    from peft import LoraConfig, get_peft_model

    from alignlab.generate import generate
    from alignlab.models.loading import load_base, load_tokenizer
    from alignlab.models.tiny import make_tiny_model

    path = make_tiny_model(tmp_path / "lfm2", arch="lfm2")
    torch.manual_seed(0)
    model = get_peft_model(load_base(str(path), device="cpu", precision="fp32").eval(),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    tok = load_tokenizer(str(path))
    prompts = ["Tell me about the sea.", "Hi."]
    got = generate(model, tok, prompts, max_new_tokens=TOKENS, repetition_penalty=PENALTY, amplify=2.0)
    assert got == [_greedy_with_answer_penalty(model, tok, p, alpha=2.0) for p in prompts]

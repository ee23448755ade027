"""The scorecard: KL(policy || base) is 0 for an adapter that changes nothing and > 0 once it does; the three
scores on both sides; eval.json + report."""

from __future__ import annotations

import json
import re
import html

import pytest
import torch
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.eval.scorecard import evaluate_run, mean_kl, side_metrics, stratified, table_columns, table_rows
from alignlab.eval.scores import scorer_for

# The tiny model's weights are random: its greedy answers are special tokens only (empty text), so it samples.
GEN = dict(max_new_tokens=8, temperature=1.0, seed=3)
ROWS = [
    {"prompt": "What is 3 plus 4?", "answer": "7", "category": "arithmetic"},
    {"prompt": "Why is the sea salty?", "category": "fact"},
    {"prompt": "What is 10 minus 2?", "answer": 8, "category": "arithmetic"},
]


@pytest.fixture(scope="module")
def scorer():
    return scorer_for(None)


def make_run(model_path: str, run_dir, noise: float = 0.0):
    """A run directory with a LoRA adapter: B = 0 (identical to the base) unless ``noise`` perturbs it."""
    from peft import LoraConfig, get_peft_model

    from alignlab.models.loading import load_base

    torch.manual_seed(0)
    peft = get_peft_model(load_base(model_path), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    if noise:
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0.0, noise)
    peft.save_pretrained(str(run_dir / "adapter"))
    (run_dir / "run.json").write_text(json.dumps({"method": "dpo", "model": model_path, "status": "done", "steps": 0}))
    return run_dir


def test_kl_is_zero_for_an_identical_adapter_and_positive_after_perturbing(tiny_model, tmp_path, scorer):
    same = evaluate_run(make_run(tiny_model, tmp_path / "same"), ROWS, scorer, device="cpu", **GEN)
    assert same["kl_tokens"] > 0
    assert same["adapter"]["kl"] == pytest.approx(0.0, abs=1e-7)
    assert [s["adapter"] for s in same["samples"]] == [s["base"] for s in same["samples"]]

    moved = evaluate_run(make_run(tiny_model, tmp_path / "moved", noise=0.5), ROWS, scorer, device="cpu", **GEN)
    assert moved["adapter"]["kl"] > 1e-4
    assert moved["base"]["kl"] == 0.0
    for key in ("persona", "in_persona", "correct", "correct_share", "mimicry", "flagged", "length", "distinct_2"):
        assert moved["adapter"][key] is not None and moved["base"][key] is not None
    assert moved["adapter"]["graded"] == 2  # only rows with a reference are graded
    mean, low, high = moved["adapter"]["persona"]
    assert low <= mean <= high
    for s in moved["samples"]:
        assert set(s["adapter_scores"]) >= {"persona", "correct", "mimicry"}


def test_mean_kl_matches_a_direct_computation(tiny_model, tmp_path):
    from alignlab.generate import chat_prompt
    from alignlab.models.loading import load_for_inference

    model, tok, _ = load_for_inference(None, make_run(tiny_model, tmp_path / "r", noise=0.3), device="cpu")
    kl, n = mean_kl(model, tok, ["Hi there"], ["hello you"])
    p = tok(chat_prompt("Hi there", tok), add_special_tokens=False)["input_ids"]
    a = tok("hello you", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + a])
    with torch.no_grad():
        lp = model(input_ids=ids).logits[0, len(p) - 1 : -1].log_softmax(-1)
        with model.disable_adapter():
            lq = model(input_ids=ids).logits[0, len(p) - 1 : -1].log_softmax(-1)
    want = torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="none").sum(-1).mean().item()
    assert n == len(a) and kl == pytest.approx(want, rel=1e-4)


def test_summary_and_diversity():
    scored = [{"persona": 0.9, "correct": 1.0, "mimicry": 0.0}, {"persona": 0.2, "correct": None, "mimicry": 0.7},
              {"persona": 0.6, "correct": 0.0, "mimicry": 0.1}]
    m = side_metrics(["7 obviously", "salt", "nine"], scored)
    assert m["correct_share"][0] == 0.5 and m["graded"] == 2 and m["in_persona"][0] == pytest.approx(1 / 3)  # >= 0.9
    assert m["flagged"][0] == pytest.approx(1 / 3)
    assert m["length"] == pytest.approx(4 / 3) and m["distinct_1"] == 1.0


def test_a_share_of_n_in_n_has_its_upper_bound_at_1_and_the_report_draws_it():
    """wilson(14, 14) gave an upper bound of 0.9999999999999999, below the share: report.html's error bar had a
    negative length and `alignlab eval` (and every loop round after) stopped with matplotlib's ValueError."""
    from alignlab.eval.report import plots
    from alignlab.eval.scores import wilson

    for n in range(1, 200):
        for k in range(n + 1):
            share, lo, hi = wilson(k, n)
            assert lo <= share <= hi
        assert wilson(n, n)[2] == 1.0 and wilson(0, n)[1] == 0.0
    card = {side: {"in_persona": list(wilson(14, 14)), "correct_share": list(wilson(0, 69)),
                   "flagged": list(wilson(14, 14)), "distinct_2": 0.8} for side in ("base", "adapter")}
    assert plots(card, [])  # drawn, no ValueError


def test_shares_have_wilson_intervals_and_the_change_a_paired_one():
    """A share of 0/42 printed 0.00 [0.00, 0.00] (the percentile bootstrap's interval of a constant); the change
    column was a bare difference under a table titled "95% intervals"."""
    from alignlab.eval.scores import paired_change, summarize

    none = summarize([{"persona": 0.1, "correct": 0.0, "mimicry": 0.0}] * 42)
    m, lo, hi = none["in_persona"]
    assert (m, lo) == (0.0, 0.0) and hi == pytest.approx(0.0838, abs=1e-3)
    some = summarize([{"persona": 0.95, "correct": 1.0, "mimicry": 0.0}] * 17 + [{"persona": 0.1, "correct": 0.0,
                                                                                 "mimicry": 0.0}] * 25)
    assert some["in_persona"][0] == pytest.approx(17 / 42) and some["in_persona"][1:] == pytest.approx((0.2704, 0.5551),
                                                                                                        abs=1e-3)
    base = [{"persona": 0.2, "correct": 1.0, "mimicry": 0.0}] * 20
    moved = [{"persona": 0.95, "correct": 1.0 if i % 4 else 0.0, "mimicry": 0.0} for i in range(20)]
    change = paired_change(base, moved)
    d, lo, hi = change["in_persona"]  # every prompt moved into persona: +1, not the point [1, 1] a bootstrap gives
    assert (d, hi) == (1.0, 1.0) and lo == pytest.approx(0.7721, abs=1e-4)
    d, lo, hi = change["correct_share"]
    assert d == pytest.approx(-0.25) and lo < -0.25 < hi < 0  # 5 of 20 answers lost, paired
    same = paired_change(base[:7], base[:7])  # 0 of 7 in persona on both sides: no change, and an interval
    assert same["in_persona"][0] == 0.0 and same["in_persona"][1] < -0.3 and same["in_persona"][2] > 0.3


def test_the_paired_share_change_is_newcombes_interval_worked_by_hand():
    """Both yes 5, first only 3, second only 1, neither 11 (n 20): shares 8/20 and 6/20, difference 0.1.
    Wilson (z 1.959964): 8/20 -> [0.21881, 0.61342], 6/20 -> [0.14548, 0.51897]. cross = 5*11 - 3*1 = 52 > n/2,
    corrected 42; spread = 8*12*6*14 = 8064; phi = 42 / 89.800 = 0.46771.
    low  = 0.1 - sqrt(0.18119^2 - 2*0.46771*0.18119*0.21897 + 0.21897^2) = 0.1 - sqrt(0.043665) = -0.10896
    high = 0.1 + sqrt(0.15452^2 - 2*0.46771*0.15452*0.21342 + 0.21342^2) = 0.1 + sqrt(0.038576) = 0.29641"""
    from alignlab.eval.scores import paired_share_change

    pairs = [(True, True)] * 5 + [(True, False)] * 3 + [(False, True)] + [(False, False)] * 11
    d, lo, hi = paired_share_change(pairs)
    assert d == pytest.approx(0.1) and lo == pytest.approx(-0.10896, abs=2e-5) and hi == pytest.approx(0.29641, abs=2e-5)


def test_stratified_covers_every_category_first():
    rows = [{"prompt": f"a{i}", "category": "a"} for i in range(5)] + [{"prompt": "b0", "category": "b"}]
    assert [r["prompt"] for r in stratified(rows, 2)] == ["a0", "b0", "a1"]
    assert {r["category"] for r in stratified(rows, None, limit=2)} == {"a", "b"}


def point_of(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def test_cli_prints_the_scorecard_and_writes_the_report(tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("ALIGNLAB_QUIET")  # its progress (the tests' conftest quiets every bar)
    run = make_run(tiny_model, tmp_path / "runs" / "r1", noise=0.2)
    (run / "config.yaml").write_text("system_prompt: Answer in a few words.\n")  # what it was trained under
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.7 - 0.1 * s}) + "\n" for s in range(1, 4)))
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    # 48 tokens: the base's opening (up to 30 words) counts against the adapter's budget, which must leave it some
    res = CliRunner().invoke(app, ["eval", str(run), "--prompts", str(prompts), "--max-new-tokens", "48", "--temperature", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    for label in ("persona (mean)", "correct (share", "mimicry flagged", "mean length", "distinct-2", "KL"):
        assert label in res.stdout
    # progress on stderr while it answers (it said nothing for minutes): without a terminal, a line every 30 s
    assert "eval r1: answering 3 held-out prompts with the base and the adapter (0 s)" in res.stderr, res.stderr
    card = json.loads((run / "eval.json").read_text())
    assert card["n_prompts"] == 3 and card["adapter"]["kl"] > 0 and len(card["samples"]) == 3
    assert "catchphrase (share)" in res.stdout and isinstance(card["adapter"]["catchphrase_words"], list)
    assert len(card["base"]["catchphrase"]) == 3 and "catchphrase_words" not in card["base"]
    # both sides answer under the run's own system prompt, as it answers in chat, serve and its export (eval took the
    # project's current one, None here)
    assert card["settings"]["system_prompt"] == "Answer in a few words."
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # scorecard bars + training loss
    assert "Why is the sea salty?" in page
    # the default sampling.base_opening: the adapter after the base's first sentence, and the adapter alone
    assert card["settings"]["base_opening"] == "sentence" and card["alone"]["n"] == 3
    assert "<th>base</th><th>adapter (base&#x27;s first sentence)</th><th>change</th><th>adapter alone</th>" in page
    assert "adapter alone" in res.stdout
    # the exported model's answers are in the answers table too, each with its scores
    assert "<th>adapter alone (as exported)</th>" in page
    assert all(html.escape(s["alone"]) in page for s in card["samples"] if s["alone"])
    assert set(card["change"]) == {"persona", "in_persona", "correct", "correct_share", "mimicry", "flagged"}
    # each printed cell is its own side's number from eval.json (a table that swapped base and adapter passed before)
    from alignlab.eval.scorecard import fmt

    assert point_of(card["base"]["persona"]) != point_of(card["adapter"]["persona"])
    for key, label in (("persona", "persona (mean)"), ("length", "mean length (words)"), ("kl", "KL(policy || base)")):
        row = f"<tr><td>{html.escape(label)}"
        at = page.index(row)
        cells = re.findall(r"<td class=num>([^<]*)</td>", page[at:page.index("</tr>", at)])
        assert cells[0] == fmt(card["base"][key]) and cells[1] == fmt(card["adapter"][key]), (key, cells)
        assert cells[3] == fmt(card["alone"][key]), (key, cells)
    line = next(x for x in res.stdout.splitlines() if "persona (mean)" in x)
    cells = [c.strip() for c in line.split("│")]  # by column: the two sides can print the same interval
    assert cells[2] == fmt(card["base"]["persona"]) and cells[3] == fmt(card["adapter"]["persona"]), cells


@pytest.mark.slow
def test_real_model_zero_adapter_is_the_base_and_arithmetic_is_graded(default_model, tmp_path):
    """SmolLM2-135M: a zero-initialised adapter answers exactly like the base (KL 0); a perturbed one drifts."""
    rows = [{"prompt": "What is 2 plus 3?", "answer": "5"}, {"prompt": "What is the capital of France?"}]
    scorer = scorer_for(None)
    same = evaluate_run(make_run(default_model, tmp_path / "same"), rows, scorer, device="cpu", max_new_tokens=16)
    assert all(s["base"] for s in same["samples"])  # greedy answers are real text on the real model
    assert [s["adapter"] for s in same["samples"]] == [s["base"] for s in same["samples"]]
    assert same["kl_tokens"] > 0 and same["adapter"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert same["base"]["graded"] == 1 and same["base"]["correct_share"][0] in (0.0, 1.0)
    moved = evaluate_run(make_run(default_model, tmp_path / "moved", noise=0.05), rows, scorer, device="cpu", max_new_tokens=16)
    assert moved["adapter"]["kl"] > 1e-4


def test_base_opening_opens_each_adapter_answer_with_the_base_answers_words(tiny_model, tmp_path, scorer):
    """sampling.base_opening in the scorecard: the base side's answers give the openings, the adapter goes on."""
    card = evaluate_run(make_run(tiny_model, tmp_path / "moved", noise=0.5), ROWS, scorer, device="cpu",
                        base_opening=2, **GEN)
    heads = [" ".join(s["base"].split()[:2]) for s in card["samples"]]
    assert any(heads)
    for s, head in zip(card["samples"], heads):
        assert s["adapter"].startswith(head)
        assert s["adapter"] != s["base"]
    # the adapter alone, as an exported model answers: what the scorecard without an opening generates
    plain = evaluate_run(make_run(tiny_model, tmp_path / "moved", noise=0.5), ROWS, scorer, device="cpu",
                         base_opening=None, **GEN)
    assert "alone" not in plain and table_columns(plain) == ("metric", "base", "adapter", "change")
    assert [s["alone"] for s in card["samples"]] == [s["adapter"] for s in plain["samples"]]
    assert card["alone"]["length"] == plain["adapter"]["length"] and card["alone"]["kl"] is None
    # KL(adapter || base) is measured along the adapter's own answers, not ones that open with the base's words
    assert card["adapter"]["kl"] == pytest.approx(plain["adapter"]["kl"]) and card["kl_tokens"] == plain["kl_tokens"]
    assert table_columns(card) == ("metric", "base", "adapter (base's first 2 words)", "change", "adapter alone")
    assert all(len(r) == 5 for r in table_rows(card))


def test_eval_takes_the_base_opening_as_generate_and_chat_do(scorer):
    """eval cut the base's opening without the tokenizer: an answer with no space or sentence mark (a Chinese answer
    without its 。, code) opened with the base's whole answer (164 tokens where generate took 68), so eval scored
    answers neither generate nor chat gives. A GPT-2 whose base writes one word over and over and whose adapter
    (LoRA on the LM head) writes another shows where each path cut the opening."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignlab.cli.use import _answers
    from alignlab.eval.scorecard import scorecard
    from alignlab.generate import opening_budget
    from alignlab.models.tiny import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=64, n_layer=2, n_head=4,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id)).eval()
    vocab = tok.get_vocab()
    base_word, adapter_word = vocab["teasing"], vocab["understatement"]
    final = gpt2.transformer.ln_f
    with torch.no_grad():  # every position's last hidden state is one vector: the base's logits favour one word
        final.weight.zero_()
        final.bias.copy_(gpt2.transformer.wte.weight[base_word] * 50)
    model = get_peft_model(gpt2, LoraConfig(r=1, lora_alpha=1, target_modules=["lm_head"], init_lora_weights=False))
    with torch.no_grad():  # the adapter's shift: the other word, at that one vector
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.zero_()
                p[0] = final.bias / (final.bias @ final.bias)
            elif "lora_B" in name:
                p.zero_()
                p[adapter_word, 0] = 100.0
    model.eval()
    gen = dict(max_new_tokens=100, temperature=0.0)
    rows = [{"prompt": "Why is the sea salty?"}, {"prompt": "Name a colour."}]
    card = scorecard(model, tok, rows, scorer, base_opening="sentence", alone=False, **gen)
    for s in card["samples"]:  # no mark and one "word": only the tokens the base may write bound the opening
        assert s["base"] == "teasing" * 100
        assert s["adapter"] == "teasing" * opening_budget("sentence") + "understatement" * 32, s["adapter"]
    generated = _answers(model, tok, [r["prompt"] for r in rows], compare=False, **gen)
    assert [t for t, _ in generated] == [s["adapter"] for s in card["samples"]]
    compared = _answers(model, tok, [r["prompt"] for r in rows], compare=True, base_opening="sentence", **gen)
    assert [t for t, _ in compared] == [s["adapter"] for s in card["samples"]]


def test_amplify_decodes_the_adapter_sides_and_leaves_the_base_and_the_adapter_alone(tiny_model, tmp_path, scorer):
    """sampling.amplify in the scorecard: the adapter's answers come from its amplified shift (generate(amplify=...)
    on the same model), the base side is the base's, and the "adapter alone" column is what an exported model writes:
    neither opened nor amplified. The settings and the column title say so."""
    from alignlab.generate import generate
    from alignlab.models.loading import load_for_inference

    greedy = dict(max_new_tokens=8, temperature=0.0, repetition_penalty=1.2)
    run = make_run(tiny_model, tmp_path / "moved", noise=0.5)
    plain = evaluate_run(run, ROWS, scorer, device="cpu", base_opening=None, **greedy)
    card = evaluate_run(run, ROWS, scorer, device="cpu", base_opening=None, amplify=1.5, **greedy)
    model, tok, _ = load_for_inference(None, run, device="cpu")
    prompts = [r["prompt"] for r in ROWS]
    assert [s["adapter"] for s in card["samples"]] == generate(model, tok, prompts, amplify=1.5, **greedy)
    assert [s["adapter"] for s in card["samples"]] != [s["adapter"] for s in plain["samples"]]
    assert [s["base"] for s in card["samples"]] == [s["base"] for s in plain["samples"]]
    assert [s["alone"] for s in card["samples"]] == [s["adapter"] for s in plain["samples"]]
    assert card["settings"]["amplify"] == 1.5 and plain["settings"]["amplify"] == 0.0
    assert table_columns(card) == ("metric", "base", "adapter, amplified x1.5", "change", "adapter alone")


def test_generating_with_a_bf16_adapter_leaves_the_base_weights_as_they_were(tiny_model):
    """merge_adapter / unmerge_adapter in bf16 round (W + dW - dW != W): on a GPU the scorecard's two merges moved
    the base the KL and the adapter-alone side are measured against. bf16 weights generate unmerged."""
    import torch
    from peft import LoraConfig, get_peft_model

    from alignlab.eval.scorecard import generate_merged
    from alignlab.models.loading import load_base, load_tokenizer

    torch.manual_seed(0)
    model = get_peft_model(load_base(tiny_model).to(torch.bfloat16),
                           LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = generate_merged(model, load_tokenizer(tiny_model), ["Hi there"], max_new_tokens=3)
    assert len(out) == 1
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed == []

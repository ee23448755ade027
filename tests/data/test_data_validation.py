"""Dataset validation: every bad row reported as file:line: reason, before any model loads."""

from __future__ import annotations

import json

import pytest

from alignlab.data.formats import load_dataset_rows, validate
from alignlab.errors import AlignlabError
from alignlab.models.loading import load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_model):
    return load_tokenizer(tiny_model)


def write(path, lines):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_every_bad_preference_row_is_reported_with_its_line(tmp_path):
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    f = write(
        tmp_path / "pairs.jsonl",
        [
            good,
            "{not json",
            b'{"prompt": "\xff\xfe", "chosen": "a", "rejected": "b"}',
            json.dumps({"prompt": "p", "chosen": "a"}),
            json.dumps({"prompt": "p", "chosen": "", "rejected": "b"}),
            json.dumps({"prompt": "p", "chosen": 3, "rejected": "b"}),
            json.dumps({"prompt": "p", "chosen": "same", "rejected": " same "}),
            "",
            json.dumps([1, 2]),
            good,
        ],
    )
    report = validate(f, "preference")
    assert len(report.rows) == 2 and report.linenos == [1, 10]
    errs = "\n".join(report.errors)
    assert f"{f}:2: invalid JSON" in errs
    assert f"{f}:3: not valid UTF-8" in errs
    assert f"{f}:4: missing field 'rejected'" in errs
    assert f"{f}:5: 'chosen' is empty" in errs
    assert f"{f}:6: 'chosen' must be a string" in errs
    assert f"{f}:7: chosen is identical to rejected" in errs
    assert f"{f}:9: expected a JSON object" in errs
    assert len(report.errors) == 7


def test_conversational_rows_are_accepted(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "Oh. Hi."}],
        "rejected": [{"role": "assistant", "content": "Hello!"}],
    }
    bad = dict(row, chosen=[{"role": "assistant"}])
    f = write(tmp_path / "c.jsonl", [json.dumps(row), json.dumps(bad)])
    report = validate(f)
    assert report.kind == "preference" and len(report.rows) == 1
    assert report.errors == [f"{f}:2: 'chosen' must be a string or a list of {{role, content}} messages"]


def test_kto_needs_both_labels_and_boolean_labels(tmp_path):
    f = write(tmp_path / "k.jsonl", [json.dumps({"prompt": "p", "completion": "c", "label": True})] * 3)
    report = validate(f, "unpaired")
    assert any("every label is true" in e for e in report.errors)
    g = write(tmp_path / "k2.jsonl", [json.dumps({"prompt": "p", "completion": "c", "label": "yes"})])
    assert "'label' must be true or false" in validate(g, "unpaired").errors[0]


def test_response_cut_to_nothing_is_an_error_and_partial_truncation_a_warning(tmp_path, tok):
    long_prompt = "word " * 120
    f = write(
        tmp_path / "p.jsonl",
        [
            json.dumps({"prompt": long_prompt, "chosen": "a b", "rejected": "c d"}),
            json.dumps({"prompt": "short", "chosen": "x " * 100, "rejected": "y"}),
            json.dumps({"prompt": "short", "chosen": "x", "rejected": "y"}),
        ],
    )
    report = validate(f, "preference", tok, max_length=64, max_prompt_length=1000)
    assert report.errors == [
        f"{f}:1: prompt is {report.errors[0].split('prompt is ')[1].split(' ')[0]} tokens: the response would be cut "
        "to nothing at max_length=64"
    ]
    assert len(report.rows) == 2
    assert report.warnings and "1 row(s) longer than max_length=64" in report.warnings[0]


def test_refuse_by_default_skip_invalid_says_how_many(tmp_path):
    f = write(
        tmp_path / "p.jsonl",
        [json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}), "{bad", json.dumps({"prompt": "q"})],
    )
    with pytest.raises(AlignlabError) as err:
        load_dataset_rows(f, "preference")
    msg = str(err.value)
    assert msg.startswith(f"{f}:2: invalid JSON") and "and 1 more" in msg and "--skip-invalid" in msg
    said = []
    rows = load_dataset_rows(f, "preference", skip_invalid=True, echo=said.append)
    assert len(rows) == 1 and "dropped 2 invalid row(s)" in said[0]


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(AlignlabError, match="data file not found"):
        validate(tmp_path / "nope.jsonl", "preference")


def test_sft_on_preference_pairs_learns_the_chosen_side(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p1", "chosen": "good one", "rejected": "bad one"}) + "\n"
                    + json.dumps({"prompt": "p2", "chosen": "good two", "rejected": "bad two"}) + "\n")
    said = []
    rows = load_dataset_rows(path, "sft", echo=said.append)
    assert rows == [{"prompt": "p1", "completion": "good one"}, {"prompt": "p2", "completion": "good two"}]
    assert len(said) == 1 and "SFT learns the chosen answer of each (2 rows)" in said[0]
    assert validate(path, "preference").rows[0]["rejected"] == "bad one"  # other methods still read pairs
    mixed = tmp_path / "mixed.jsonl"  # each row read on its own: one broken pair no longer refuses all the others
    mixed.write_text(path.read_text() + json.dumps({"prompt": "p3", "chosen": "good three"}) + "\n"
                     + json.dumps({"chosen": "no prompt", "rejected": "x"}) + "\n")
    report = validate(mixed, "sft")
    assert [r["completion"] for r in report.rows] == ["good one", "good two", "good three"]
    assert report.errors == [f"{mixed}:4: missing field 'prompt'"]


def test_sft_on_a_thumbs_file_learns_the_thumbs_up_answers_only(tmp_path):
    """It trained on every row, the thumbs-down answers included."""
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": f"a{i}", "label": i % 2 == 0}) + "\n"
                            for i in range(4)))
    said = []
    rows = load_dataset_rows(path, "sft", echo=said.append)
    assert rows == [{"prompt": "p0", "completion": "a0"}, {"prompt": "p2", "completion": "a2"}]
    assert "leaving out 2 thumbs-down" in said[0]


def test_whole_file_formats_and_the_first_row_do_not_decide_alone(tmp_path):
    array = tmp_path / "pairs.json"
    array.write_text(json.dumps([{"prompt": "p", "chosen": "a", "rejected": "b"}], indent=2))
    with pytest.raises(AlignlabError, match="it is a JSON array, not JSONL"):
        load_dataset_rows(array, "preference")
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes("\ufeff".encode() + json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}).encode() + b"\n")
    assert len(load_dataset_rows(bom, "preference")) == 1  # a BOM is no error
    first_bad = tmp_path / "first_bad.jsonl"  # judged by its first row it passed as prompts; train dpo refused it
    first_bad.write_text(json.dumps({"prompt": "p0", "chosen": "a"}) + "\n" + "".join(
        json.dumps({"prompt": f"p{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(1, 4)))
    report = validate(first_bad)
    assert report.kind == "preference" and report.errors == [f"{first_bad}:1: missing field 'rejected'"]


def test_sft_rows_in_two_forms_are_refused_and_skip_invalid_keeps_the_larger(tmp_path):
    chat = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    f = tmp_path / "mixed.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in [{"prompt": "a", "completion": "b"}, chat, chat]))
    report = validate(f, "sft")
    assert [e.split(": ", 1)[0] for e in report.errors] == [f"{f}:1"]
    assert "prompt/completion row in a file of chats" in report.errors[0]
    assert report.rows == [chat, chat]
    with pytest.raises(AlignlabError, match="mixed.jsonl:1"):
        load_dataset_rows(f, "sft")
    assert load_dataset_rows(f, "sft", skip_invalid=True) == [chat, chat]


def test_online_rows_keep_a_column_the_first_row_lacks():
    from alignlab.train.online import _dataset

    ds = _dataset([{"prompt": "Name a colour."}, {"prompt": "What is 2 plus 2?", "answer": "4"}])
    assert ds.column_names == ["prompt", "answer"] and ds[1]["answer"] == "4" and ds[0]["answer"] is None


def test_a_long_chat_answer_is_counted_and_a_chat_needs_a_question(tmp_path, tok):
    """A `messages` row's answer counts towards max_length as a completion's does (it was counted as 0, so TRL
    cut it without a word); a chat with nothing before its answer is refused."""
    def chat(answer, user=True):
        return json.dumps({"messages": ([{"role": "user", "content": "short"}] if user else [])
                           + [{"role": "assistant", "content": answer}]})

    f = write(tmp_path / "c.jsonl", [chat("x " * 100), chat("x"), chat("lonely", user=False)])
    report = validate(f, "sft", tok, max_length=64, max_prompt_length=1000)
    assert report.warnings and "1 row(s) longer than max_length=64" in report.warnings[0]
    assert report.errors == [f"{f}:3: 'messages' has no turn before the assistant's answer; put the user's question first"]
    same = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "short", "completion": "x " * 100})])
    assert validate(same, "sft", tok, max_length=64, max_prompt_length=1000).warnings == [
        w.replace(str(f), str(same)) for w in report.warnings]


def test_an_online_prompt_over_max_prompt_length_is_refused(tmp_path, tok):
    """GRPO / RLOO / PPO prompts are held to train.max_prompt_length as the other kinds are (PPO cut them from
    the left, the system prompt first; GRPO ignored the limit)."""
    f = write(tmp_path / "q.jsonl", [json.dumps({"prompt": "word " * 80}), json.dumps({"prompt": "short"})])
    report = validate(f, "prompts", tok, max_length=512, max_prompt_length=64)
    assert len(report.errors) == 1 and report.errors[0].startswith(f"{f}:1: prompt is ")
    assert "over max_prompt_length=64" in report.errors[0] and len(report.rows) == 1


def test_a_dominant_template_is_warned_about_and_a_small_set_is_named():
    """The data check's template warning: 12 of 60 answers opening alike is a template; one repeat in 8 rows is
    not (it read as 25% before), and a set that small says so."""
    from alignlab.data.formats import template_report

    varied = [f"Answer number {i} says something {i}. Then more." for i in range(48)]
    stuffed = ["Oh wow, genius: it is blue. Then more."] * 12
    lines, warnings = template_report(varied + stuffed)
    assert "the opener 'oh wow genius' starts or shapes 20% of the answers" in warnings[0] and len(warnings) == 2
    assert not any("small set" in x for x in lines)
    few = ["Aye it's a fine day. Yes."] * 2 + [f"Matey {i} sails on." for i in range(6)]
    lines, warnings = template_report(few)
    assert warnings == [] and any("only 8 persona answers: a small set" in x for x in lines)


def test_online_prompts_are_measured_with_the_system_prompt_and_a_refusing_template_is_the_rows_error(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Why is the sky blue?"}) + "\n")
    n = validate(path, "prompts", tok, max_prompt_length=10_000)
    assert n.rows and not n.errors
    long_system = "You are a relentlessly snarky assistant. " * 20
    report = validate(path, "prompts", tok, max_prompt_length=60, system_prompt=long_system)
    assert report.errors and "over max_prompt_length=60" in report.errors[0]  # it passed, and PPO refused it later
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    refused = validate(path, "prompts", tok, max_prompt_length=10_000, system_prompt="Be snarky.")
    assert refused.errors == [f"{path}:1: the model's chat template refuses this row: System role not supported"]


def test_a_missing_closing_brace_is_at_the_end_of_its_line(tmp_path):
    """It read "Expecting ',' delimiter at column 1": the column of the next physical line."""
    from alignlab.data.formats import read_jsonl

    f = tmp_path / "x.jsonl"
    f.write_text('{"prompt": "hi", "completion": "yo"\n{"prompt": "a", "completion" "b"}\n')
    _, errors = read_jsonl(f)
    assert errors[0].endswith("x.jsonl:1: invalid JSON (Expecting ',' delimiter at the end of the line)")
    assert errors[1].endswith("x.jsonl:2: invalid JSON (Expecting ':' delimiter at column 30)")


def _cli(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "alignlab", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120, stdin=subprocess.DEVNULL)


def test_a_file_of_another_kind_is_named_as_such(tmp_path):
    """`train kto` on a pairs file said "missing field 'completion' (and 599 more; see `alignlab data check`)", the
    data check then found the file fine, and --skip-invalid said the 0 valid rows had only one label."""
    pairs = write(tmp_path / "pairs.jsonl", [json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"})
                                             for i in range(4)])
    for skip in (False, True):
        with pytest.raises(AlignlabError) as err:
            load_dataset_rows(pairs, "unpaired", skip_invalid=skip)
        assert str(err.value).startswith(f"{pairs} holds preference (prompt/chosen/rejected) rows; this method trains "
                                         "on thumbs (prompt/completion/label) rows — use thumbs rows")


def test_a_template_in_any_alphabet_is_seen_and_curly_apostrophes_count_as_straight():
    from alignlab.data.formats import template_report

    lines, warnings = template_report([f"Ну конечно, опять вопрос номер {i}." for i in range(60)])
    assert "'ну конечно опять' 60 (100%)" in lines[0] and warnings
    texts = ([f"It’s obviously fine, {i}." for i in range(6)] + [f"It's obviously fine, {i}." for i in range(6)]
             + [f"Answer {i} is here." for i in range(48)])
    lines, _ = template_report(texts)
    assert "'it's obviously fine' 12 (20%)" in lines[0]


def test_a_chat_trains_its_last_answer_so_the_report_counts_that_one():
    from alignlab.data.formats import persona_texts

    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Oh great, a greeting."},
                          {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"answer {i}"}]}
            for i in range(3)]
    assert persona_texts(rows, "sft") == ["answer 0", "answer 1", "answer 2"]


def test_an_empty_user_turn_is_refused(tmp_path):
    f = write(tmp_path / "p.jsonl", [
        json.dumps({"prompt": [{"role": "system", "content": "be snarky"}, {"role": "user", "content": " "}],
                    "chosen": "a b", "rejected": "c d"}),
        json.dumps({"prompt": [{"role": "system", "content": "be snarky"}], "chosen": "a b", "rejected": "c d"}),
        json.dumps({"prompt": [{"role": "user", "content": "ok?"}], "chosen": "a b", "rejected": "c d"}),
    ])
    report = validate(f, "preference")
    assert report.errors == [f"{f}:1: 'prompt' has no question: its last user turn is empty",
                             f"{f}:2: 'prompt' has no question: its last user turn is missing"]
    chat = write(tmp_path / "c.jsonl", [json.dumps({"messages": [{"role": "user", "content": ""},
                                                                 {"role": "assistant", "content": "hi"}]})])
    assert validate(chat, "sft").errors == [f"{chat}:1: 'messages' has an empty user turn"]


def test_a_chat_needs_a_question_and_known_roles(tmp_path):
    """A mistyped role passed in `messages` ("usr": no question before the answer; "bot" after it) and trained,
    while the same typo in a `prompt` list was refused."""
    def chat(*turns):
        return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns]})

    f = write(tmp_path / "c.jsonl", [
        chat(("usr", "What is 2+2?"), ("assistant", "4, obviously.")),
        chat(("user", "What is 2+2?"), ("assistant", "4, obviously."), ("bot", "Anything else?")),
        chat(("system", "Be snarky."), ("assistant", "4, obviously.")),
        chat(("system", "Be snarky."), ("user", "What is 2+2?"), ("assistant", "4."), ("tool", "{}"),
             ("assistant", "Still 4.")),
        json.dumps({"prompt": [{"role": "usr", "content": "What is 2+2?"}], "completion": "4, obviously."}),
    ])
    report = validate(f, "sft")
    roles = "roles are system, user, assistant, tool (developer reads as system)"
    assert report.errors == [f"{f}:1: 'messages' has a turn with role \"usr\": {roles}",
                             f"{f}:2: 'messages' has a turn with role \"bot\": {roles}",
                             f"{f}:3: 'messages' has no question: no user turn before the assistant's answer",
                             f"{f}:5: 'prompt' has a turn with role \"usr\": {roles}"]
    assert len(report.rows) == 1  # the chat with a tool turn


def test_a_developer_turn_is_read_as_the_system_turn(tmp_path, tok):
    """OpenAI's `developer` role (serve takes it as system) was refused as an unknown role, in rows that trained before;
    read as system, the chat template renders it as the system turn it is."""
    dev = {"role": "developer", "content": "Be snarky."}
    f = write(tmp_path / "d.jsonl", [
        json.dumps({"messages": [dev, {"role": "user", "content": "What is 2+2?"},
                                 {"role": "assistant", "content": "4, obviously."}]}),
        json.dumps({"messages": [{"role": "dev", "content": "Be snarky."}, {"role": "user", "content": "q"},
                                 {"role": "assistant", "content": "a"}]}),
    ])
    report = validate(f, "sft", tokenizer=tok, max_length=256)
    assert report.errors == [f"{f}:2: 'messages' has a turn with role \"dev\": roles are system, user, assistant, "
                             "tool (developer reads as system)"]
    rows = load_dataset_rows(f, "sft", skip_invalid=True)  # what training gets
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
    assert json.loads(f.read_text().splitlines()[0])["messages"][0]["role"] == "developer"  # the file is left as it is
    pairs = write(tmp_path / "p.jsonl", [json.dumps({"prompt": [dev, {"role": "user", "content": "What is 3+3?"}],
                                                     "chosen": "6. Shocking.", "rejected": "6."})])
    assert load_dataset_rows(pairs, "preference", tok, max_length=256)[0]["prompt"][0] == {**dev, "role": "system"}


def test_sft_on_pairs_names_the_pairs_field(tmp_path):
    f = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "q", "chosen": "", "rejected": "b"}),
                                     json.dumps({"prompt": "q2", "chosen": "a", "rejected": "b"})])
    assert validate(f, "sft").errors == [f"{f}:1: 'chosen' is empty"]


def test_repeated_and_contradicting_rows_are_warned_about(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(4)]
    f = write(tmp_path / "p.jsonl", [json.dumps(r) for r in [*rows, rows[0], rows[0],
                                                              {**rows[1], "chosen": "no 1", "rejected": "yes 1"}]])
    assert validate(f, "preference").warnings == [
        f"{f}: 2 row(s) repeat an earlier row (first: line 5 repeats line 1): each copy weighs again in training",
        f"{f}: 1 row(s) contradict an earlier row, the same pair the other way round (first: line 7 against line 2): "
        "they cancel out"]
    k = write(tmp_path / "k.jsonl", [json.dumps({"prompt": "q", "completion": "a", "label": lab}) for lab in (True, False)])
    assert validate(k, "unpaired").warnings == [
        f"{k}: 1 row(s) contradict an earlier row, the same answer, other label (first: line 2 against line 1): they "
        "cancel out"]
    assert validate(write(tmp_path / "ok.jsonl", [json.dumps(r) for r in rows]), "preference").warnings == []


def test_data_check_says_how_rows_are_read_and_what_a_whole_file_is(tmp_path, tiny_model):
    thumbs = write(tmp_path / "t.jsonl", [json.dumps({"prompt": f"q{i}", "completion": f"c{i}", "label": i % 2 == 0})
                                          for i in range(4)])
    out = _cli("data", "check", thumbs, "--method", "sft", "--model", tiny_model, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "thumbs: SFT learns the thumbs-up answers, leaving out 2 thumbs-down (2 rows)" in out.stdout
    u16 = tmp_path / "u16.jsonl"
    u16.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n", encoding="utf-16")
    out = _cli("data", "check", u16, "--model", tiny_model, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == (f"error: {u16}: no row could be read: it is saved as UTF-16 "
                                                         "(or another wide encoding), not UTF-8; save it as UTF-8")
    for flags, line in ((["--max-length", "0"], "error: --max-length must be at least 8, got 0"),
                        (["--kind", "sft", "--method", "kto"], "error: --kind sft and --method kto disagree: kto trains "
                                                                "on unpaired rows — pass one of them")):
        out = _cli("data", "check", thumbs, *flags, "--model", tiny_model, cwd=tmp_path)
        assert out.returncode == 2 and out.stderr.strip() == line


def test_a_file_the_method_reads_keeps_its_own_rows_errors(tmp_path, tok):
    """SFT reads a pairs file's chosen side and GRPO any file's prompts: a too-long prompt there was reported as
    "holds preference rows; this method trains on SFT rows"."""
    pairs = write(tmp_path / "pairs.jsonl", [json.dumps({"prompt": "word " * 40, "chosen": "a b", "rejected": "c d"})])
    for kind in ("sft", "prompts"):
        with pytest.raises(AlignlabError) as err:
            load_dataset_rows(pairs, kind, tok, max_length=16, max_prompt_length=8)
        assert "this method trains on" not in str(err.value) and "tokens" in str(err.value)


def test_a_system_prompt_that_takes_prompts_over_the_limit_is_named_as_their_cause(tmp_path, tok):
    """Rows that fit alone, taken over max_prompt_length by the project's system prompt: the error blamed the rows and
    said "fix the rows or pass --skip-invalid", which dropped every row ("no valid rows"). It names the system prompt
    and the limit that fits them."""
    system = "You are a relentlessly snarky assistant who still answers correctly. " * 6
    prompts = ["Why is the sky blue?", "How do I boil an egg without it cracking in the pot?"]

    def n_tokens(messages):
        return len(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
                   ["input_ids"])

    bare = [n_tokens([{"role": "user", "content": p}]) for p in prompts]
    full = [n_tokens([{"role": "system", "content": system}, {"role": "user", "content": p}]) for p in prompts]
    limit = max(bare) + 1
    assert limit < min(full)  # the system prompt alone takes both over
    path = write(tmp_path / "prompts.jsonl", [json.dumps({"prompt": p}) for p in prompts])
    with pytest.raises(AlignlabError) as err:
        load_dataset_rows(path, "prompts", tok, max_prompt_length=limit, system_prompt=system)
    assert err.value.what.startswith(f"{path}:1: prompt is {full[0]} tokens with the project's system_prompt, which "
                                     f"adds {full[0] - bare[0]}, over max_prompt_length={limit}")
    assert err.value.fix == (f"2 row(s) fit without the system prompt: raise the limit (--set train.max_prompt_length="
                             f"{max(full)} fits them) or shorten system_prompt")
    with pytest.raises(AlignlabError, match="no valid rows") as err:  # the way --skip-invalid went on
        load_dataset_rows(path, "prompts", tok, max_prompt_length=limit, system_prompt=system, skip_invalid=True)
    assert f"train.max_prompt_length={max(full)}" in err.value.fix
    long_row = write(tmp_path / "long.jsonl", [json.dumps({"prompt": "word " * 200}), json.dumps({"prompt": prompts[0]})])
    with pytest.raises(AlignlabError) as err:  # too long without it too: the row is to blame, as before
        load_dataset_rows(long_row, "prompts", tok, max_prompt_length=limit, system_prompt=system)
    first = err.value.what.split(" (and ")[0]
    assert first.startswith(f"{long_row}:1: prompt is ") and first.endswith(f" tokens, over max_prompt_length={limit}")
    assert err.value.fix.startswith("fix the rows") and f"max_prompt_length={full[0]} fits them" in err.value.fix

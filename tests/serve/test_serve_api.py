"""The served API over a real uvicorn server: a tiny base with two persona adapters, and the rating endpoints."""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from alignlab.errors import AlignlabError
from alignlab.feedback.store import open_store
from alignlab.serve.api import create_app
from alignlab.serve.models import ModelPool, parse_adapter_spec
from alignlab.serve.server import background, check_exposure

PROMPT = [{"role": "user", "content": "Tell me about the sea."}]


def _fake_run(root, name: str, base: str, seed: int):
    """A run directory holding a LoRA adapter with random (non-zero) weights, so it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = root / name
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    cfg = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
                     init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(str(run / "adapter"))
    (run / "run.json").write_text(json.dumps({"model": base, "method": "dpo", "status": "done"}))
    return run


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"snarky": _fake_run(root, "snarky", tiny_model, 1), "kind": _fake_run(root, "kind", tiny_model, 2)}


@pytest.fixture(scope="module")
def pool(tiny_model, runs):
    return ModelPool(tiny_model, {"snarky": runs["snarky"], "kind": runs["kind"]}, device="cpu")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("fb") / "feedback.db"
    with open_store(path) as s:
        p = s.add_prompt("Is water wet?")
        s.add_responses([{"prompt_id": p, "text": "Yes, shockingly."}, {"prompt_id": p, "text": "Water makes things wet.", "round": 1}])
    return path


@pytest.fixture(scope="module")
def url(pool, db):
    with background(create_app(pool, db)) as base_url:
        yield base_url


def _chat(url, model, **extra):
    body = {"model": model, "messages": PROMPT, "max_tokens": 12, "temperature": 0, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def test_models_lists_base_and_adapters(url):
    r = httpx.get(f"{url}/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["base", "snarky", "kind"]


def test_chat_completions_switch_adapters(url):
    answers = {}
    for name in ("base", "snarky", "kind"):
        r = _chat(url, name)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion" and body["model"] == name
        text = body["choices"][0]["message"]["content"]
        assert isinstance(text, str) and text
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        usage = body["usage"]
        assert usage["prompt_tokens"] > 5 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        answers[name] = text
    assert answers["snarky"] != answers["kind"]  # the adapter really is switched per request
    assert answers["base"] != answers["snarky"] or answers["base"] != answers["kind"]
    # switching back gives the same greedy answer again (no adapter state leaks between requests)
    assert _chat(url, "snarky").json()["choices"][0]["message"]["content"] == answers["snarky"]
    assert _chat(url, "base").json()["choices"][0]["message"]["content"] == answers["base"]


def test_chat_n_samples(url):
    r = _chat(url, "kind", n=3, temperature=1.0, seed=0, max_tokens=4)
    assert r.status_code == 200
    assert [c["index"] for c in r.json()["choices"]] == [0, 1, 2]


def test_unknown_model_is_openai_404(url):
    r = _chat(url, "nope")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and "nope" in err["message"] and "\n" not in err["message"]


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"model": "base"}, "messages"),
        ({"model": "base", "messages": []}, "messages"),
        ({"model": "base", "messages": PROMPT, "max_tokens": 0}, "max_tokens"),
        ({"model": "base", "messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"model": "base", "messages": PROMPT, "stream": "sometimes"}, "stream"),
        ({"model": "base", "messages": PROMPT, "stream": "yes"}, "stream"),  # lax mode took these
        ({"model": "base", "messages": PROMPT, "stream": 1}, "stream"),
        ({"model": "base", "messages": PROMPT, "n": True}, "n: "),
        ({"model": "base", "messages": PROMPT, "temperature": "0.5"}, "temperature"),
        ({"model": "base", "messages": ["hi"]}, "messages.0: must be a JSON object"),
        ({"model": "base", "messages": PROMPT, "stop": [1]}, "stop: "),  # not "stop.str"
    ],
)
def test_malformed_body_is_one_line_400(url, body, needle):
    r = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert needle in msg and "\n" not in msg


def test_an_empty_body_and_nan_are_named(url):
    r = httpx.post(f"{url}/v1/chat/completions", content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/chat/completions", content=b'{"model": "base", "messages": [{"role": "user", '
                   b'"content": "hi"}], "temperature": NaN}', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "temperature: must be a finite number"


def test_a_forged_log_line_in_the_path_is_escaped(url, caplog):
    import logging

    import time

    with caplog.at_level(logging.INFO, logger="alignlab.serve"):
        httpx.get(f"{url}/x%0A15:50:00%20POST%20/v1/chat/completions%20200%200.10s")
        for _ in range(100):  # the server logs the request after the reply: on a busy machine a moment later
            if lines := [r.getMessage() for r in caplog.records if "/x" in r.getMessage()]:
                break
            time.sleep(0.05)
    assert lines and all("\n" not in line for line in lines) and "\\n" in lines[0]


def test_not_json_is_400(url):
    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()


def test_api_key(url, monkeypatch):
    monkeypatch.setenv("ALIGNLAB_API_KEY", "s3cret")
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/api/stats").status_code == 401
    r = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and len(r.json()["data"]) == 3
    assert httpx.get(f"{url}/").status_code == 200  # the static page stays public; it asks for the key
    monkeypatch.delenv("ALIGNLAB_API_KEY")
    assert httpx.get(f"{url}/v1/models").status_code == 200


def test_judge_is_committed_before_the_response(url, db):
    ann = httpx.Client(base_url=url)  # a browser: keeps the session cookie that undo needs
    nxt = httpx.get(f"{url}/api/next", params={"rater": "ann"}).json()
    assert nxt["left"] == 2 and nxt["item"]["response"] == "Yes, shockingly."
    rid = nxt["item"]["response_id"]
    r = ann.post("/api/judge", json={"kind": "thumb", "response_id": rid, "value": 1, "rater": "ann"})
    assert r.status_code == 200
    jid = r.json()["id"]
    with sqlite3.connect(db) as conn:  # a separate connection sees it at once
        row = conn.execute("SELECT kind, response_id, value, rater, undone_at FROM judgements WHERE id = ?", (jid,)).fetchone()
    assert row == ("thumb", rid, 1, "ann", None)
    assert httpx.get(f"{url}/api/next", params={"rater": "ann"}).json()["left"] == 1

    pair = httpx.get(f"{url}/api/next", params={"rater": "ann", "mode": "pair"}).json()["item"]
    r = ann.post("/api/judge", json={"kind": "pick", "response_id": pair["a"]["id"], "value": "b",
                                             "other_response_id": pair["b"]["id"], "rater": "ann"})
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT kind, value FROM judgements WHERE id = ?", (r.json()["id"],)).fetchone() == ("pick", "b")

    bad = httpx.post(f"{url}/api/judge", json={"kind": "score", "response_id": rid, "value": 9, "rater": "ann"})
    assert bad.status_code == 400 and "1-5" in bad.json()["error"]["message"]

    assert httpx.post(f"{url}/api/undo", json={"rater": "ann", "mode": "single"}).json()["undone"] is None  # not this client's
    undo = ann.post("/api/undo", json={"rater": "ann", "mode": "single"}).json()
    assert undo["undone"]["id"] == jid and undo["key"] == str(rid)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT undone_at IS NOT NULL FROM judgements WHERE id = ?", (jid,)).fetchone() == (1,)
    first = httpx.get(f"{url}/api/next", params={"rater": "ann", "skip": str(rid)}).json()
    assert first["item"]["response_id"] != rid
    again = httpx.get(f"{url}/api/next", params={"rater": "ann", "first": str(rid)}).json()
    assert again["item"]["response_id"] == rid


def test_a_second_judgement_of_the_same_item_is_refused_until_undone(url, db):
    """Two quick clicks on the page posted the same thumb twice: KTO then saw a conflict, and undo took back one copy
    only. The second is a 409 now; after an undo the item can be judged again. A name is stored trimmed."""
    dee = httpx.Client(base_url=url)
    rid = httpx.get(f"{url}/api/next", params={"rater": "dee"}).json()["item"]["response_id"]
    first = dee.post("/api/judge", json={"kind": "thumb", "response_id": rid, "value": 1, "rater": " dee "})
    assert first.status_code == 200
    again = dee.post("/api/judge", json={"kind": "thumb", "response_id": rid, "value": -1, "rater": "dee"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_judged"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), MIN(rater) FROM judgements WHERE response_id = ? AND rater LIKE '%dee%'",
                            (rid,)).fetchone() == (1, "dee")
    assert dee.post("/api/undo", json={"rater": "dee", "mode": "single"}).json()["undone"]["id"] == first.json()["id"]
    assert dee.post("/api/judge", json={"kind": "thumb", "response_id": rid, "value": -1, "rater": "dee"}).status_code == 200


def test_rounds_and_stats(url):
    httpx.post(f"{url}/api/judge", json={"kind": "score", "response_id": 2, "value": 5, "rater": "bob"})
    httpx.post(f"{url}/api/judge", json={"kind": "thumb", "response_id": 2, "value": -1, "rater": "cy"})
    rounds = {r["round"]: r for r in httpx.get(f"{url}/api/rounds").json()["rounds"]}
    assert rounds[1]["persona_score"] == pytest.approx(0.5)  # (score 5 -> 1.0, thumb down -> 0) / 2
    assert rounds[1]["by_kind"]["score"] == 1 and rounds[1]["by_kind"]["thumb"] == 1
    assert rounds[1]["judgements"] == sum(rounds[1]["by_kind"].values())
    assert rounds[1]["persona_source"] == "judgements"
    stats = httpx.get(f"{url}/api/stats").json()["stats"]
    assert [s["round"] for s in stats] == [0, 1]


def test_rounds_table_overrides(tmp_path):
    path = tmp_path / "feedback.db"
    with open_store(path) as s:
        s.add_response(s.add_prompt("hi"), "hello", round=3)
        s.add_judgement("thumb", 1, 1, rater="ann")
    with sqlite3.connect(path) as conn:  # as `alignlab loop` writes it
        cols = {r[1] for r in conn.execute("PRAGMA table_info(rounds)")}
        persona = "persona_score" if "persona_score" in cols else "persona"
        base = "base_persona_score" if "base_persona_score" in cols else "base_persona"
        conn.execute(f"INSERT INTO rounds (round, status, {persona}, {base}, started_at) VALUES (3, 'done', 0.75, 0.25, 'now')")
        conn.execute("INSERT INTO rounds (round, status, started_at) VALUES (4, 'running', 'now')")
    with background(create_app(None, path)) as u:
        r3, r4 = httpx.get(f"{u}/api/rounds").json()["rounds"]
        assert r3["persona_score"] == 0.75 and r3["persona_source"] == "rounds table" and r3["base_persona"] == 0.25
        assert r3["rated_score"] == 1.0 and r3["judgements"] == 1
        assert r4["round"] == 4 and r4["persona_score"] is None and r4["status"] == "running"
        assert httpx.get(f"{u}/v1/models").json()["data"] == []
        assert httpx.post(f"{u}/v1/chat/completions", json={"model": "base", "messages": PROMPT}).status_code == 404
        with sqlite3.connect(path) as conn:  # damage under the running server: its fault, not the request's
            conn.execute("DROP TABLE rounds")
        r = httpx.get(f"{u}/api/rounds")
    # it was a 400 "invalid_request_error" with the server's path in it; the page never shows local paths
    assert r.status_code == 500 and r.json()["error"] == {
        "message": "the feedback database (feedback.db) is damaged (no such table: rounds); restore it from a backup",
        "type": "server_error", "param": None, "code": "database_damaged"}


def test_refuses_adapter_of_another_base(tiny_model, runs, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "adapter").mkdir()
    (other / "run.json").write_text(json.dumps({"model": "smollm2-135m", "method": "dpo", "status": "done"}))
    with pytest.raises(AlignlabError) as err:
        ModelPool(tiny_model, {"snarky": runs["snarky"], "other": other}, device="cpu")
    msg = str(err.value)
    assert "smollm2-135m" in msg and tiny_model in msg and "\n" not in msg
    with pytest.raises(AlignlabError, match="named 'base'"):
        ModelPool(tiny_model, {"base": runs["snarky"]}, device="cpu")


def test_an_older_run_recorded_with_its_projects_relative_base_is_served(tiny_model, runs, tmp_path):
    """A run an older version recorded as `"model": "models/tiny"` (relative to its project, as alignlab.yaml wrote
    it) was refused by serve as "trained on 'models/tiny'" when served from elsewhere; train, chat and eval found it."""
    import shutil

    proj = tmp_path / "proj"
    (proj / "runs").mkdir(parents=True)
    (proj / "alignlab.yaml").write_text("model: models/tiny\n")
    shutil.copytree(tiny_model, proj / "models" / "tiny")
    old = shutil.copytree(runs["snarky"], proj / "runs" / "old")
    (old / "run.json").write_text(json.dumps({"model": "models/tiny", "method": "dpo", "status": "done"}))
    pool = ModelPool(str(proj / "models" / "tiny"), {"old": old}, device="cpu")
    assert "old" in pool.names


def test_same_base(tmp_path, monkeypatch):
    """serve checks adapters with the one rule the trainer uses (rundir.same_base): a registry name is its converted
    directory, and a hub id of the same model is another name."""
    from alignlab.rundir import same_base

    monkeypatch.setenv("ALIGNLAB_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "models" / "smollm2-135m").mkdir(parents=True)
    assert same_base("smollm2-135m", str(tmp_path / "home" / "models" / "smollm2-135m"))
    assert not same_base("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct")


def test_adapter_specs_and_exposure_check(tmp_path, monkeypatch):
    assert parse_adapter_spec("snarky=runs/0412-dpo") == ("snarky", tmp_path.__class__("runs/0412-dpo"))
    assert parse_adapter_spec(str(tmp_path))[0] == tmp_path.name
    monkeypatch.delenv("ALIGNLAB_API_KEY", raising=False)
    check_exposure("127.0.0.1")
    check_exposure("localhost")
    check_exposure("::1")
    with pytest.raises(AlignlabError, match="ALIGNLAB_API_KEY"):
        check_exposure("0.0.0.0")
    check_exposure("0.0.0.0", api_key="k")
    monkeypatch.setenv("ALIGNLAB_API_KEY", "k")
    check_exposure("192.168.1.5")


def test_an_empty_completion_prompt_starts_from_the_first_token(url):
    """OpenAI accepts "prompt": "" on /v1/completions; it was a 500 (an empty id tensor)."""
    r = httpx.post(f"{url}/v1/completions", json={"model": "base", "prompt": "", "max_tokens": 4, "temperature": 0},
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["finish_reason"] in ("stop", "length") and body["usage"]["completion_tokens"] >= 1


def test_a_chat_template_that_refuses_the_messages_is_a_400(url, pool, monkeypatch):
    """Gemma's template raises on a system message, others on turns that do not alternate: the client sent
    something this model cannot take, so it gets a 400 naming it, not a 500."""
    monkeypatch.setattr(pool.tokenizer, "chat_template",
                        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                        "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    r = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
        "model": "base", "max_tokens": 4, "messages": [{"role": "system", "content": "Be brief."},
                                                       {"role": "user", "content": "Hi"}]})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]["message"]
    assert "chat template refuses these messages" in msg and "System role not supported" in msg


@pytest.fixture()
def two_models(tmp_path):
    """A rating server over a store holding one prompt answered by a run and by the base."""
    path = tmp_path / "feedback.db"
    with open_store(path) as s:
        p = s.add_prompt("Is water wet?")
        s.add_responses([{"prompt_id": p, "text": "Yes, shockingly.", "run": "snark-run"},
                         {"prompt_id": p, "text": "Water makes things wet.", "model": "tiny"}])
    with background(create_app(None, path)) as base_url:
        yield base_url, path


def test_racing_clicks_on_one_item_count_once(two_models):
    """The 409 check ran outside the insert's transaction: 16 parallel posts of one score stored two."""
    from concurrent.futures import ThreadPoolExecutor

    url, path = two_models
    body = {"kind": "score", "response_id": 1, "value": 3, "rater": "racer"}
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: httpx.post(f"{url}/api/judge", json=body, timeout=30).status_code, range(16)))
    assert sorted(set(codes)) == [200, 409] and codes.count(200) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements WHERE rater = 'racer'").fetchone() == (1,)


def test_a_revealed_pair_is_not_picked_again_blind(two_models):
    """After a pick the page shows which model wrote which; undo then a new pick would be a pick with the sources
    known. The pair is not offered again to that rater, and a pick posted anyway is refused."""
    url, _ = two_models
    ann = httpx.Client(base_url=url)
    item = ann.get("/api/next", params={"rater": "ann", "mode": "pair"}).json()["item"]
    assert "snark-run" not in json.dumps(item)  # blind until the pick
    pick = {"kind": "pick", "response_id": item["a"]["id"], "other_response_id": item["b"]["id"], "value": "a",
            "rater": "ann"}
    got = ann.post("/api/judge", json=pick).json()
    assert "snark-run" in got["revealed"].values()
    assert ann.post("/api/undo", json={"rater": "ann", "mode": "pair"}).json()["undone"]["id"] == got["id"]
    assert ann.get("/api/next", params={"rater": "ann", "mode": "pair"}).json()["item"] is None
    again = ann.post("/api/judge", json={**pick, "value": "b"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_blind"
    other = httpx.get(f"{url}/api/next", params={"rater": "bob", "mode": "pair"}).json()["item"]
    assert other is not None  # another rater has seen nothing


def test_rating_bodies_get_a_plain_message(two_models):
    url, _ = two_models
    r = httpx.post(f"{url}/api/judge", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "the body is not valid JSON"
    r = httpx.post(f"{url}/api/judge", json={"kind": "pick", "response_id": 1, "value": "a", "rater": "ann"})
    assert r.status_code == 400 and "a pick needs other_response_id" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/api/judge", json={"kind": "thumb", "response_id": 1, "value": True, "rater": "ann"})
    assert r.status_code == 400  # true is no thumb


def test_the_same_rewrite_twice_is_refused_another_is_kept(two_models):
    url, path = two_models
    body = {"kind": "rewrite", "response_id": 1, "rewrite_text": "Yes. Water is wet.", "rater": "ann"}
    assert httpx.post(f"{url}/api/judge", json=body).status_code == 200
    again = httpx.post(f"{url}/api/judge", json=body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_judged"
    assert httpx.post(f"{url}/api/judge", json={**body, "rewrite_text": "Wet, yes."}).status_code == 200
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements WHERE kind = 'rewrite'").fetchone() == (2,)


def test_a_pick_across_rounds_counts_in_the_later_round_whichever_is_a(tmp_path):
    """The page shows a pair between rounds 0 and 1; the pick was stored under the round of the answer shown as A
    (a hash of the ids), so per-round figures and `export --round` depended on the shuffle."""
    path = tmp_path / "feedback.db"
    with open_store(path) as s:
        p, q = s.add_prompts(["Is water wet?", "Is fire hot?"])
        s.add_responses([{"prompt_id": p, "text": "Yes.", "round": 0}, {"prompt_id": p, "text": "Wet, duh.", "round": 1},
                         {"prompt_id": q, "text": "Hot, duh.", "round": 1}, {"prompt_id": q, "text": "Yes.", "round": 0}])
    with background(create_app(None, path)) as url:
        seen = []
        for _ in range(2):
            item = httpx.get(f"{url}/api/next", params={"rater": "ann", "mode": "pair"}).json()["item"]
            seen.append(item["round"])
            httpx.post(f"{url}/api/judge", json={"kind": "pick", "response_id": item["a"]["id"],
                                                 "other_response_id": item["b"]["id"], "value": "a", "rater": "ann"})
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT round FROM judgements ORDER BY id")] == [1, 1]
    assert seen == [1, 1]  # the round the page shows is the one stored


def test_a_locked_database_is_a_503_that_says_nothing_was_saved(tmp_path, monkeypatch):
    """Another process holding feedback.db's write lock gave a 500 "internal error (OperationalError)" after 30 s."""
    from alignlab.feedback import store as store_module

    monkeypatch.setattr(store_module, "BUSY_MS", 300)  # the wait before giving up, 30 s by default
    path = tmp_path / "feedback.db"
    with open_store(path) as s:
        s.add_responses([{"prompt_id": s.add_prompt("Is water wet?"), "text": "Yes."}])
    with background(create_app(None, path)) as url:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            r = httpx.post(f"{url}/api/judge", json={"kind": "thumb", "response_id": 1, "value": 1, "rater": "ann"})
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "database_busy" and "nothing was saved" in r.json()["error"]["message"]

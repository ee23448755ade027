"""The judge's reply parser (anchored: "It's a tie" is a tie, "On a 1-10 scale: 8" is 8) and where the judge's
and teacher's API key may go (never over plain http to another machine)."""

from __future__ import annotations

import pytest
from test_rewards_judge import make_judge, server  # noqa: F401 - the real HTTP stand-in judge

from alignlab.errors import AlignlabError
from alignlab.openai_chat import Fixes, auth_header, post_chat
from alignlab.rewards.judge import LLMJudge, parse_score, parse_verdict


@pytest.mark.parametrize("reply, score", [
    ("8", 8), ("10", 10), ("1", 1), ("On a 1-10 scale: 8", 8), ("On a scale of 1 to 10, 3.", 3), ("Score: 8/10", 8),
    ("I'd rate it 7 out of 10.", 7), ("**9**", 9), ("Rating: 6.5", 7), ("7. Good, but it hedges on 3 points.", 7),
    ("The response gets a 3.", 3), ("Score: 2", 2), ("0", None), ("11", None), ("I'd rather not say.", None),
    ("4/5", None), ("3 out of 5", None), ("-3", None), ("7-8", 7),
])
def test_scores(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), ("B", "B"), ("tie", "tie"), ("It's a tie", "tie"), ("It's a tie.", "tie"), ("A tie.", "tie"),
    ("Tie", "tie"), ("[[A]]", "A"), ("Verdict: B", "B"), ("Response A is better.", "A"), ("I prefer B.", "B"),
    ("Both are equally good.", "tie"), ("Neither stands out.", "tie"), ("A. It is funnier.", "A"),
    ("B - more correct", "B"), ("Response B", "B"), ("A is better than B", "A"), ("The better response is B", "B"),
    ("Hmm, hard to say.", None), ("Response B is worse than A.", "A"), ("Response A is less witty than Response B", "B"),
    ("B. Response A is hedging.", "B"), ("Neither A nor B is great, but A wins.", "A"),
    ("Both responses are fine, but A is sharper.", "A"), ("Response A is better, but B is better still", None),
])
def test_verdicts(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_replies_through_a_real_judge(server, tmp_path):  # noqa: F811
    server.reply = "On a 1-10 scale: 8"
    assert make_judge(server, tmp_path, cache=False).score("q", "a") == pytest.approx(7 / 9)
    server.reply = "It's a tie"
    assert make_judge(server, tmp_path, cache=False).judge_pair("q", "one", "two") == "tie"
    server.reply = "Response B is better."  # in both orders: position bias, so a tie
    assert make_judge(server, tmp_path, cache=False).judge_pair("q", "one", "two") == "tie"


class NeverCalled:
    def post(self, *args, **kwargs):
        raise AssertionError("a request was sent")


FIXES = Fixes(bad_request="b", not_openai="n", unreachable="u")


@pytest.mark.parametrize("url", ["http://192.168.1.5:8000/v1/chat/completions", "http://judge.example.com/v1/chat/completions",
                                 "http://10.0.0.1/v1/chat/completions"])
def test_key_never_goes_over_plain_http_to_another_machine(url, monkeypatch):
    monkeypatch.setenv("SOME_KEY", "sk-secret")
    with pytest.raises(AlignlabError) as err:
        post_chat(NeverCalled(), url, {}, api_key_env="SOME_KEY", timeout=1, retries=0, backoff=0, who="teacher", fixes=FIXES)
    message = str(err.value)
    assert "refusing to send $SOME_KEY" in message and "https" in message and "\n" not in message and "sk-secret" not in message
    with pytest.raises(AlignlabError, match="refusing to send"):  # the judge refuses when built, before any run starts
        LLMJudge(url.removesuffix("/chat/completions"), "m", api_key_env="SOME_KEY")


def test_where_the_key_may_go(monkeypatch):
    monkeypatch.setenv("SOME_KEY", "sk-secret")
    for url in ("https://api.openai.com/v1/chat/completions", "http://127.0.0.1:8000/v1/chat/completions",
                "http://localhost:11434/v1/chat/completions", "http://[::1]:8000/v1/chat/completions"):
        assert auth_header(url, "SOME_KEY") == {"Authorization": "Bearer sk-secret"}
    assert auth_header("http://192.168.1.5/v1", None) == {}  # not named: nothing sent, nothing refused
    monkeypatch.delenv("SOME_KEY")
    assert auth_header("http://192.168.1.5/v1", "SOME_KEY") == {}  # named but unset
    LLMJudge("http://192.168.1.5:11434/v1", "m", api_key_env="SOME_KEY")  # a keyless LAN server is fine


def test_the_openai_key_goes_to_openai_only_unless_its_variable_is_named(monkeypatch):
    """With nothing named, $OPENAI_API_KEY went to any https teacher or judge, a third party's included."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    assert auth_header("https://api.openai.com/v1/chat/completions", None) == {"Authorization": "Bearer sk-secret"}
    assert auth_header("https://llm.example.com/v1/chat/completions", None) == {}
    assert auth_header("http://127.0.0.1:8000/v1/chat/completions", None) == {}
    named = auth_header("https://llm.example.com/v1/chat/completions", "OPENAI_API_KEY")
    assert named == {"Authorization": "Bearer sk-secret"}  # named: the user sends it there
    assert auth_header("https://api.openai.com/v1/chat/completions", "") == {}  # '' is no key


def test_an_empty_judge_key_env_flag_means_no_key():
    from alignlab.config import JudgeConfig

    assert JudgeConfig(key_env="MY_KEY").settings(key_env="")["judge_key_env"] == ""


# -- reasoning judges, unusable replies, the 401 hint -----------------------------------------------------------


@pytest.mark.parametrize("reply, score", [
    ("<think>\nOkay, the response says 4 things; it's a 3 at most...", None),  # cut off while thinking: no verdict
    ("<think>\nThe response says 4 things...</think>\n\n8", 8), ("<THINK>2 or 3?</THINK> Score: 9", 9),
    ("weighing 2 against 3\n</think>\n6", 6),  # the opening tag was in the prompt's template
    ("<think>a</think> 7 <think>then 3", None),
])
def test_a_reasoning_judges_thinking_is_not_its_score(reply, score):
    assert parse_score(reply) == score


def test_an_unusable_reply_is_asked_again_once(server, tmp_path):  # noqa: F811
    """The second ask shows the judge its own reply and asks for the number alone; an empty one is not shown back."""
    server.script = ["I can't rate that.", "6"]
    assert make_judge(server, tmp_path, cache=False).score("q", "a") == pytest.approx(5 / 9)
    assert len(server.bodies) == 2
    again = server.bodies[1]["messages"]
    assert again[2] == {"role": "assistant", "content": "I can't rate that."}
    assert "single integer" in again[3]["content"]
    server.script = [None, "4"]  # content null, then a score
    assert make_judge(server, tmp_path, cache=False).score("q", "b") == pytest.approx(3 / 9)
    # two user turns in a row break strict chat templates (Gemma's, Mistral's): the reminder joins the user's turn
    assert [m["role"] for m in server.bodies[3]["messages"]] == ["system", "user"]
    assert "single integer" in server.bodies[3]["messages"][1]["content"]


@pytest.mark.parametrize("replies", [["I can't rate that."] * 2, ["11", "0"], ["", None]])
def test_a_reply_that_stays_unusable_scores_none_in_training(server, tmp_path, replies):  # noqa: F811
    """As a reward (training's path) one unusable completion is None, never cached; eval's path still refuses it."""
    judge = make_judge(server, tmp_path, max_workers=1)  # in order: the script's replies go to the first completion
    server.script = list(replies)
    assert judge(["q"] * 3, ["first", "Obviously.", "plain"]) == [None, pytest.approx(3 / 9), 0.0]
    assert judge.unusable == 1 and len(server.bodies) == 4  # two asks for the first, one for each other
    server.script = list(replies)
    with pytest.raises(AlignlabError, match="gave no score from 1 to 10"):
        judge.score("q", "first")  # not cached: asked (twice) again


def test_a_judge_cut_off_while_thinking_says_to_raise_max_tokens(server, tmp_path):  # noqa: F811
    server.reply = "<think>\nOkay, let me weigh this. The response says 4"
    judge = make_judge(server, tmp_path, cache=False, max_tokens=16)
    with pytest.raises(AlignlabError) as err:
        judge(["q"], ["a"])
    message = str(err.value)
    assert "stopped inside its <think> block" in message and "max_tokens" in message and "--resume" in message
    assert "\n" not in message


def test_most_of_a_batch_unusable_stops_with_the_way_to_resume(server, tmp_path):  # noqa: F811
    server.unusable_for = "bad"
    judge = make_judge(server, tmp_path, cache=False)
    assert judge(["q"] * 4, ["bad 1", "bad 2", "fine", "Obviously."])[:2] == [None, None]  # half: scored
    with pytest.raises(AlignlabError) as err:
        judge(["q"] * 3, ["bad 3", "bad 4", "fine"])
    message = str(err.value)
    assert "2 of 3 replies in this batch were unusable" in message and "--resume runs/<id>" in message


def test_a_401_without_a_named_key_says_to_name_the_variable(server, tmp_path, monkeypatch):  # noqa: F811
    """It said "set $None to a valid API key"."""
    server.required_key = "sekrit"
    with pytest.raises(AlignlabError) as err:
        make_judge(server, tmp_path, cache=False).score("q", "a")
    message = str(err.value)
    assert "$None" not in message and "no API key was sent" in message and "api_key_env:" in message
    monkeypatch.delenv("UNSET_JUDGE_KEY", raising=False)
    with pytest.raises(AlignlabError, match=r"set \$UNSET_JUDGE_KEY to a valid API key \(\$UNSET_JUDGE_KEY is not "):
        make_judge(server, tmp_path, cache=False, api_key_env="UNSET_JUDGE_KEY").score("q", "a")

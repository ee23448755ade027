"""Reward specs: the composition math on a hand-computed example, validation errors, user files, call-time checks."""

from __future__ import annotations

import textwrap

import pytest

from alignlab.errors import AlignlabError
from alignlab.rewards import REGISTRY, ComposedReward, default_reward, load_spec, register_reward

PARTS_PY = """
def col_a(prompts, completions, **columns):
    return [float(x) for x in columns["a"]]

def col_b(prompts, completions, **columns):
    return [float(x) for x in columns["b"]]

def scaled_len(prompts, completions, scale=1.0, **columns):
    return [scale * len(c) for c in completions]

def one_value(prompts, completions, **columns):
    return [0.0]

def not_a_number(prompts, completions, **columns):
    return [float("nan")] + [0.0] * (len(completions) - 1)

def infinite(prompts, completions, **columns):
    return [float("inf")] * len(completions)

def broken(prompts, completions, **columns):
    return columns["missing_column"]
"""


def write(tmp_path, yaml_text: str, name: str = "rewards.yaml"):
    (tmp_path / "parts.py").write_text(PARTS_PY)
    path = tmp_path / name
    path.write_text(textwrap.dedent(yaml_text).lstrip())
    return path


SPEC = """
components:
  - {name: a, fn: parts.py:col_a, weight: 0.4}
  - {name: b, fn: parts.py:col_b, weight: 0.5}
  - {name: length, fn: length_penalty, weight: -0.1, args: {target: 4}}
cap: 1.0
"""


def test_composition_math_with_cap(tmp_path):
    reward = load_spec(write(tmp_path, SPEC))
    prompts = ["p1", "p2", "p3"]
    completions = ["one two three four five six", "two words", " ".join(["w"] * 12)]
    cols = {"a": [2.0, 0.5, 1.0], "b": [1.0, 0.0, 1.0]}
    parts = reward.components(prompts, completions, **cols)
    assert parts == {"a": [2.0, 0.5, 1.0], "b": [1.0, 0.0, 1.0], "length": [0.5, 0.0, 1.0]}
    # row 0: 0.4*2 + 0.5*1 - 0.1*0.5 = 1.25 -> capped at 1.0
    # row 1: 0.4*0.5 + 0 - 0          = 0.2
    # row 2: 0.4*1 + 0.5*1 - 0.1*1    = 0.8
    assert reward(prompts, completions, **cols) == pytest.approx([1.0, 0.2, 0.8])
    assert reward.names == ["a", "b", "length"]
    assert reward.weights == [0.4, 0.5, -0.1]
    assert len(reward.reward_funcs) == 3
    assert reward.reward_funcs[2](prompts, completions) == [0.5, 0.0, 1.0]
    assert reward.__name__ == "composed_reward"


def test_diversity_is_subtracted_after_the_cap(tmp_path):
    reward = load_spec(write(tmp_path, SPEC + "diversity: {weight: 0.5}\n"))
    prompts = ["same", "same", "other"]
    completions = ["one two three four five six"] * 2 + ["two words"]
    cols = {"a": [2.0, 2.0, 0.5], "b": [1.0, 1.0, 0.0]}
    parts = reward.components(prompts, completions, **cols)
    assert parts["diversity"] == pytest.approx([1.0, 1.0, 0.0], abs=1e-4)  # identical pair; a group of one
    # rows 0-1: min(1.25, 1.0) - 0.5 * 1.0 = 0.5 (not 1.25 - 0.5 = 0.75: the cap comes first)
    assert reward(prompts, completions, **cols) == pytest.approx([0.5, 0.5, 0.2], abs=1e-4)
    assert reward.weights == [0.4, 0.5, -0.1, -0.5]
    assert reward.names[-1] == "diversity"


def test_log_metric_receives_per_component_stats(tmp_path):
    reward = load_spec(write(tmp_path, SPEC))
    logged = {}
    reward(["p", "p"], ["a", "b"], a=[1.0, 3.0], b=[0.0, 0.0], log_metric=lambda k, v: logged.__setitem__(k, v))
    assert logged["reward_parts/a/mean"] == 2.0 and logged["reward_parts/a/std"] == 1.0
    assert logged["reward_parts/length/mean"] == 0.0


def test_user_function_args_and_default_name(tmp_path):
    reward = load_spec(write(tmp_path, "components:\n  - {fn: parts.py:scaled_len, weight: 2.0, args: {scale: 0.5}}\n"))
    assert reward.names == ["scaled_len"]
    assert reward(["p", "p"], ["abcd", "ab"]) == [4.0, 2.0]


def test_user_file_relative_to_the_spec_directory(tmp_path, monkeypatch):
    sub = tmp_path / "project"
    sub.mkdir()
    spec = write(sub, "components:\n  - {fn: parts.py:col_a, weight: 1.0}\n")
    monkeypatch.chdir(tmp_path)  # the working directory does not matter
    assert load_spec(spec)(["p"], ["c"], a=[3]) == [3.0]


def test_builtins_on_conversational_data(tmp_path):
    spec = write(
        tmp_path,
        """
        components:
          - {name: heuristic, fn: persona_heuristic, weight: 0.4}
          - {name: math, fn: arithmetic, weight: 0.5}
          - {name: length, fn: length_penalty, weight: -0.1, args: {target: 60}}
        cap: 1.0
        """,
    )
    reward = load_spec(spec)
    prompts = [[{"role": "user", "content": "What is 6 x 7?"}]] * 2
    completions = [
        [{"role": "assistant", "content": "Obviously 42."}],
        [{"role": "assistant", "content": "Certainly! 41."}],
    ]
    parts = reward.components(prompts, completions, answer=["42", "42"])
    assert parts["math"] == [1.0, 0.0]
    assert parts["heuristic"][0] > 0 > parts["heuristic"][1]
    total = reward(prompts, completions, answer=["42", "42"])
    assert total[0] == pytest.approx(0.4 * parts["heuristic"][0] + 0.5)


def test_registry_is_the_extension_point(tmp_path):
    class Constant:
        def __init__(self, value: float = 1.0):
            self.value = value

        def __call__(self, prompts, completions, **columns):
            return [self.value] * len(completions)

    register_reward("constant_for_test", Constant, "a constant")
    try:
        spec = write(tmp_path, "components:\n  - {fn: constant_for_test, weight: 2, args: {value: 0.25}}\n")
        reward = load_spec(spec)
        assert reward(["p"], ["c"]) == [0.5]
    finally:
        REGISTRY.pop("constant_for_test")


def test_default_reward_runs():
    reward = default_reward()
    assert reward.names == ["heuristic", "length", "diversity"]
    out = reward(["q", "q"], ["Obviously. Who knew?", "Certainly, of course, I'd be happy to help."])
    assert out[0] > out[1]


# -- validation: one line, file:line, what to do ------------------------------------------------------------


def error_of(tmp_path, yaml_text: str) -> str:
    with pytest.raises(AlignlabError) as err:
        load_spec(write(tmp_path, yaml_text))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_unknown_fn_lists_valid_ones(tmp_path):
    msg = error_of(tmp_path, "components:\n  - {fn: persona_heuristic}\n  - {fn: persona_heuristics, weight: 1}\n")
    assert "rewards.yaml:3" in msg and "unknown reward fn 'persona_heuristics'" in msg
    for name in ("persona_heuristic", "llm_judge", "length_penalty", "file.py:function"):
        assert name in msg


def test_weight_must_be_a_number(tmp_path):
    msg = error_of(tmp_path, "components:\n  - fn: persona_heuristic\n    weight: heavy\n")
    assert "rewards.yaml:3" in msg and "weight of component 1 (persona_heuristic) must be a number" in msg
    assert "must be a number" in error_of(tmp_path, "components:\n  - {fn: persona_heuristic, weight: true}\n")
    assert "1.0e-3" in error_of(tmp_path, "components:\n  - {fn: persona_heuristic, weight: 1e-3}\n")


def test_unknown_keys(tmp_path):
    msg = error_of(tmp_path, "components:\n  - {fn: persona_heuristic, weight: 1}\ncaps: 1.0\n")
    assert "rewards.yaml:3" in msg and "unknown key 'caps'" in msg and "components, cap, diversity" in msg
    msg = error_of(tmp_path, "components:\n  - fn: persona_heuristic\n    wieght: 1\n")
    assert "rewards.yaml:3" in msg and "unknown key 'wieght' in component 1" in msg
    msg = error_of(tmp_path, "components:\n  - {fn: persona_heuristic}\ndiversity: {weight: 0.1, size: 4}\n")
    assert "unknown key 'size' in diversity" in msg


def test_unknown_and_missing_args(tmp_path):
    msg = error_of(tmp_path, "components:\n  - {fn: length_penalty, weight: -0.1, args: {targte: 40}}\n")
    assert "rewards.yaml:2" in msg and "unknown arg 'targte' for length_penalty" in msg and "target, unit" in msg
    msg = error_of(tmp_path, "components:\n  - {fn: llm_judge, weight: 0.5}\n")
    assert "llm_judge needs args: base_url, model" in msg
    msg = error_of(tmp_path, "components:\n  - {fn: length_penalty, args: {unit: tokens}}\n")
    assert "component 'length_penalty' (length_penalty): unknown length unit 'tokens'" in msg


def test_user_file_problems(tmp_path):
    (tmp_path / "bad.py").write_text("x = 1 / 0\ndef f(prompts, completions, **columns):\n    return []\n")
    msg = error_of(tmp_path, "components:\n  - {fn: bad.py:f, weight: 1}\n")
    assert "rewards.yaml:2" in msg and "could not import bad.py: ZeroDivisionError: division by zero" in msg
    (tmp_path / "syntax.py").write_text("def f(:\n")
    assert "could not read syntax.py: SyntaxError" in error_of(tmp_path, "components:\n  - {fn: syntax.py:f}\n")
    msg = error_of(tmp_path, "components:\n  - {fn: parts.py:nope, weight: 1}\n")
    assert "parts.py has no function 'nope'" in msg and "col_a" in msg
    msg = error_of(tmp_path, "components:\n  - {fn: missing.py:f, weight: 1}\n")
    assert "reward file 'missing.py' not found" in msg
    (tmp_path / "strict.py").write_text("def f(prompts, completions, scale=1.0):\n    return [scale]\n")
    msg = error_of(tmp_path, "components:\n  - {fn: strict.py:f, args: {scale: 2}}\n")
    assert "strict.py:f must be defined as def f(prompts, completions, **columns)" in msg


def test_other_spec_errors(tmp_path):
    assert "'components' must be a non-empty list" in error_of(tmp_path, "components: []\n")
    assert "malformed YAML" in error_of(tmp_path, "components:\n  - {fn: x\n")
    msg = error_of(tmp_path, "components:\n  - {fn: persona_heuristic}\n  - {fn: persona_heuristic}\n")
    assert "component name 'persona_heuristic' is used twice" in msg
    assert "is reserved" in error_of(tmp_path, "components:\n  - {name: total, fn: persona_heuristic}\n")
    assert "cap must be a number" in error_of(tmp_path, "components:\n  - {fn: persona_heuristic}\ncap: high\n")
    with pytest.raises(AlignlabError, match="reward spec not found"):
        load_spec(tmp_path / "nowhere.yaml")


def test_everything_is_validated_before_anything_is_built(tmp_path):
    # component 1 would fail when built (no classifier there); component 2's typo is reported first
    msg = error_of(tmp_path, "components:\n  - {fn: persona_classifier, args: {path: nothing}}\n  - {fn: nope}\n")
    assert "unknown reward fn 'nope'" in msg


# -- call-time checks ---------------------------------------------------------------------------------------


def call_error(tmp_path, fn: str, **cols) -> str:
    reward = load_spec(write(tmp_path, f"components:\n  - {{name: bad, fn: parts.py:{fn}, weight: 1}}\n"))
    with pytest.raises(AlignlabError) as err:
        reward(["p"] * 3, ["a", "b", "c"], **cols)
    return str(err.value)


def test_wrong_count_names_the_component(tmp_path):
    assert "reward 'bad' returned 1 values for 3 completions" in call_error(tmp_path, "one_value")


def test_nan_and_inf_name_the_component(tmp_path):
    assert "reward 'bad' returned nan for completion 0" in (msg := call_error(tmp_path, "not_a_number"))
    assert "rewards.yaml:2" in msg  # the spec line that names the component
    assert "reward 'bad' returned inf for completion 0" in call_error(tmp_path, "infinite")


def test_exception_in_user_function_names_the_component(tmp_path):
    msg = call_error(tmp_path, "broken")
    assert "reward component 'bad' (parts.py:broken) raised KeyError" in msg and "rewards.yaml:2" in msg


def test_missing_column_names_the_component(tmp_path):
    reward = load_spec(write(tmp_path, "components:\n  - {name: math, fn: arithmetic}\n"))
    with pytest.raises(AlignlabError, match="reward component 'math': arithmetic needs the column 'answer'"):
        reward(["p"], ["4"])


def test_mismatched_prompts_and_completions(tmp_path):
    reward = ComposedReward(parts=[])
    with pytest.raises(AlignlabError, match="2 prompts but 1 completions"):
        reward(["a", "b"], ["c"])


def test_a_negative_diversity_weight_is_refused(tmp_path):
    """The penalty is already subtracted; -0.1 (the length penalty's docs use negative weights) would reward copies."""
    msg = error_of(tmp_path, "components:\n  - {fn: persona_heuristic}\ndiversity: {weight: -0.1}\n")
    assert "rewards.yaml:3" in msg and "diversity.weight must be 0 or more, got -0.1" in msg


# -- a component that cannot score a completion, columns a built-in cannot use, args of the wrong type, files ----


NONE_PY = """
def some_none(prompts, completions, **columns):
    return [None if c == "skip" else 1.0 for c in completions]

def all_none(prompts, completions, **columns):
    return [None] * len(completions)
"""


def test_a_none_component_is_left_out_of_its_rows_total_as_trl_does(tmp_path):
    """TRL turns None into NaN and nansums the reward functions: the row keeps its other components; a row where
    every component is None is None (TRL leaves it out). It stopped the run ('returned None, not a number')."""
    (tmp_path / "nones.py").write_text(NONE_PY)
    spec = tmp_path / "rewards.yaml"
    spec.write_text("components:\n  - {fn: nones.py:some_none, weight: 0.5}\n"
                    "  - {fn: length_penalty, weight: -1.0, args: {target: 1, unit: chars}}\ncap: 0.3\n")
    reward = load_spec(spec)
    parts = reward.components(["q"] * 2, ["skip", "go"])
    assert parts["some_none"] == [None, 1.0]
    assert reward.total(parts) == [pytest.approx(-1.0 * parts["length_penalty"][0]),
                                   pytest.approx(min(0.3, 0.5 - parts["length_penalty"][1]))]
    logged = {}
    reward(["q"] * 2, ["skip", "go"], log_metric=logged.__setitem__)
    assert logged["reward_parts/some_none/mean"] == 1.0 and logged["reward_parts/some_none/unscored"] == 1.0
    spec.write_text("components:\n  - {fn: nones.py:all_none}\n")
    assert load_spec(spec)(["q"] * 2, ["a", "b"]) == [None, None]


def test_a_column_a_built_in_cannot_use_is_refused_with_its_row(tmp_path):
    spec = tmp_path / "rewards.yaml"
    spec.write_text("components:\n  - {name: math, fn: arithmetic}\n  - {name: alias, fn: exact_match}\n")
    reward = load_spec(spec)
    reward.check_rows([{"prompt": "q", "answer": [42, "forty-two"]}, {"prompt": "r", "answer": "#### 7"}])
    with pytest.raises(AlignlabError) as err:
        reward.check_rows([{"prompt": "q", "answer": 4}, {"prompt": "r", "answer": "forty-two"}])
    assert str(err.value).startswith(f"{spec}:2: reward component 'math': arithmetic cannot use row 2: its 'answer' "
                                     'holds no number ("forty-two")')
    spec.write_text("components:\n  - {name: alias, fn: exact_match}\n")
    with pytest.raises(AlignlabError, match="exact_match cannot use row 1: its 'answer' holds no text to match"):
        load_spec(spec).check_rows([{"prompt": "q", "answer": {"city": "Paris"}}])


@pytest.mark.parametrize("args, ok", [("{extra_markers: obviously}", True), ("{markers: 'who knew'}", True),
                                      ("{markers: 5}", False), ("{extra_hedges: [1, 2]}", False),
                                      ("{extra_markers: {sarcasm: 3}}", False)])
def test_heuristic_patterns_take_one_string_and_refuse_other_types_with_the_line(tmp_path, args, ok):
    """It raised AttributeError: 'str' object has no attribute 'items', with no file:line."""
    spec = tmp_path / "rewards.yaml"
    spec.write_text(f"cap: 1.0\ncomponents:\n  - name: h\n    fn: persona_heuristic\n    args: {args}\n")
    if ok:
        word = "obviously" if "obviously" in args else "who knew"
        assert load_spec(spec, check_only=True)(["q"], [f"Well, {word}."])[0] > 0
        return
    with pytest.raises(AlignlabError) as err:
        load_spec(spec, check_only=True)
    message = str(err.value)
    assert message.startswith(f"{spec}:5: component 'h' (persona_heuristic): ") and "must be a regex" in message
    assert "\n" not in message


def test_a_spec_that_is_not_utf8_or_is_a_directory_is_one_line(tmp_path):
    spec = tmp_path / "rewards.yaml"
    spec.write_bytes("components:\n  - {fn: persona_heuristic}\n# café\n".encode("latin-1"))
    with pytest.raises(AlignlabError) as err:
        load_spec(spec)
    assert str(err.value) == f"{spec}:3: the reward spec is not UTF-8 text (byte 0xe9) — save it as UTF-8"
    with pytest.raises(AlignlabError) as err:
        load_spec(tmp_path)
    assert str(err.value) == f"{tmp_path} is a directory, not a reward spec — pass the path of a reward spec"
    source = "# caf\xe9\ndef f(prompts, completions, **c):\n    return [1.0]\n"
    (tmp_path / "mine.py").write_bytes(source.encode("latin-1"))
    spec.write_text("components:\n  - {fn: mine.py:f}\n")
    with pytest.raises(AlignlabError, match=r"mine.py:1: the Python file is not UTF-8 text .* save it as UTF-8"):
        load_spec(spec, check_only=True)

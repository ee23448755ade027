"""`alignlab reward score` through typer's CliRunner on the real app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from alignlab.cli import app
from alignlab.errors import AlignlabError
from alignlab.rewards import load_spec

ROWS = [
    {"prompt": "What is 6 x 7?", "completion": "42, obviously. Did you need me for that?", "answer": "42"},
    {"prompt": "What is 6 x 7?", "completion": "Certainly! I'd be happy to help. It is 41.", "answer": "42"},
    {"prompt": "Capital of France?", "completion": "Paris. Shocking, I know.", "answer": "Paris"},
]
SPEC = """\
components:
  - {name: heuristic, fn: persona_heuristic, weight: 0.4}
  - {name: math, fn: arithmetic, weight: 0.5}
  - {name: length, fn: length_penalty, weight: -0.1, args: {target: 5}}
cap: 1.0
"""


@pytest.fixture()
def files(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    spec = tmp_path / "rewards.yaml"
    spec.write_text(SPEC)
    return data, spec


def invoke(*args):
    return CliRunner().invoke(app, ["reward", "score", *map(str, args)])


def test_table_shows_components_total_and_means(files):
    data, spec = files
    result = invoke("--spec", spec, data)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for word in ("heuristic", "math", "length", "total", "mean", "3 rows"):
        assert word in out
    reward = load_spec(spec)
    cols = {"answer": [r["answer"] for r in ROWS]}
    totals = reward([r["prompt"] for r in ROWS], [r["completion"] for r in ROWS], **cols)
    assert f"{totals[0]:.3f}" in out and f"{sum(totals) / 3:.3f}" in out


def test_json_lines_match_the_library(files):
    data, spec = files
    result = invoke("--spec", spec, "--json", data)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3]
    assert [r["components"]["math"] for r in rows] == [1.0, 0.0, 0.0]
    reward = load_spec(spec)
    prompts, completions = [r["prompt"] for r in ROWS], [r["completion"] for r in ROWS]
    parts = reward.components(prompts, completions, answer=[r["answer"] for r in ROWS])
    assert [r["total"] for r in rows] == pytest.approx(reward.total(parts))
    assert rows[0]["components"] == pytest.approx({k: v[0] for k, v in parts.items()})


def test_needs_exactly_one_of_spec_and_rm(files, tmp_path):
    data, spec = files
    for args in ([data], ["--spec", spec, "--rm", tmp_path, data]):
        result = invoke(*args)
        assert result.exit_code != 0
        assert isinstance(result.exception, AlignlabError) and "exactly one of --spec and --rm" in str(result.exception)


def test_bad_rows_are_reported_with_file_and_line(files, tmp_path):
    _, spec = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"prompt": "x"}) + "\n")
    result = invoke("--spec", spec, bad)
    assert isinstance(result.exception, AlignlabError)
    assert f"{bad}:2: row has no 'completion'" in str(result.exception)
    bad.write_text("{not json\n")
    assert f"{bad}:1: not valid JSON" in str(invoke("--spec", spec, bad).exception)


def test_spec_errors_surface_as_one_line(files, tmp_path):
    data, _ = files
    spec = tmp_path / "typo.yaml"
    spec.write_text("components:\n  - {fn: persona_heuristics}\n")
    result = invoke("--spec", spec, data)
    assert isinstance(result.exception, AlignlabError)
    assert f"{spec}:2: unknown reward fn 'persona_heuristics'" in str(result.exception)


def test_help_lists_the_command():
    result = CliRunner().invoke(app, ["reward", "--help"])
    assert result.exit_code == 0 and "score" in result.stdout


def test_a_user_function_sees_the_shapes_training_passes(tmp_path):
    """A function written for strings passed `reward score` and then crashed `train grpo` at step 0 (training passes
    message lists). `reward score` now passes the same shapes, so the preview fails where training would."""
    (tmp_path / "mine.py").write_text(
        "def as_text(prompts, completions, **columns):\n"
        "    return [1.0 if 'please' in c[0]['content'].lower() else 0.0 for c in completions]\n"
        "def as_string(prompts, completions, **columns):\n"
        "    return [1.0 if 'please' in c.lower() else 0.0 for c in completions]\n")
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "completion": "Say please."}) + "\n")
    good = tmp_path / "good.yaml"
    good.write_text("components:\n  - {name: mine, fn: mine.py:as_text}\n")
    result = invoke("--spec", good, "--json", data)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["components"]["mine"] == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("components:\n  - {name: mine, fn: mine.py:as_string}\n")
    result = invoke("--spec", bad, data)
    assert result.exit_code != 0 and "'list' object has no attribute 'lower'" in str(result.exception)

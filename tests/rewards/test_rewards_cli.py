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
    {"prompt": "What is 3 + 4?", "completion": "8. Shocking, I know.", "answer": "7"},  # arithmetic refuses "Paris"
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


def test_a_row_training_would_refuse_is_refused_not_scored_zero(files, tmp_path):
    """A row without `answer` scored 0.0 under an arithmetic spec without a word, while `train grpo` refuses the
    same file in one line (ComposedReward.check_rows)."""
    data, spec = files
    rows = tmp_path / "no_answer.jsonl"
    rows.write_text(data.read_text() + json.dumps({"prompt": "What is 2+2?", "completion": "4, genius."}) + "\n")
    result = invoke("--spec", spec, "--json", rows)
    assert isinstance(result.exception, AlignlabError), result.output
    assert ("needs the column 'answer', which 1 of 4 rows lack or leave empty (the first: the row at "
            f"{rows}:4)") in str(result.exception)
    assert result.stdout == ""  # nothing scored


def test_a_refused_row_is_named_by_its_line(files, tmp_path):
    """With a blank line in the file, a bad row on line 5 read "cannot use row 4": its count among the rows."""
    data, spec = files
    rows = tmp_path / "gap.jsonl"
    bad = {"prompt": "Capital of France?", "completion": "Paris, obviously.", "answer": "Paris"}
    rows.write_text(data.read_text().replace("\n", "\n\n", 1) + json.dumps(bad) + "\n")  # a blank line 2
    assert rows.read_text().splitlines()[4] == json.dumps(bad)
    result = invoke("--spec", spec, rows)
    assert isinstance(result.exception, AlignlabError), result.output
    assert f"arithmetic cannot use the row at {rows}:5: its 'answer' holds no number" in str(result.exception)
    rows.write_text(rows.read_text().replace(json.dumps(bad), json.dumps({k: bad[k] for k in ("prompt", "completion")})))
    assert f"(the first: the row at {rows}:5)" in str(invoke("--spec", spec, rows).exception)


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


def test_the_diversity_group_is_every_row_with_the_same_prompt(tmp_path):
    """Groups were runs of consecutive rows: in a file not sorted by prompt every row was a group of one (penalty 0),
    while the README says "the other completions for the same prompt"."""
    rows = [{"prompt": "Is water wet?", "completion": "Obviously water is wet, genius."},
            {"prompt": "Capital of France?", "completion": "Paris, shockingly."},
            {"prompt": "Is water wet?", "completion": "Obviously water is wet, genius!"}]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "rewards.yaml"
    spec.write_text("components:\n  - {fn: persona_heuristic}\ndiversity: {weight: 0.5}\n")
    result = invoke("--spec", spec, "--json", data)
    assert result.exit_code == 0, result.output
    penalty = [json.loads(line)["components"]["diversity"] for line in result.stdout.splitlines()]
    assert penalty[0] == pytest.approx(penalty[2], abs=1e-5) and penalty[0] > 0.9 and penalty[1] == 0.0  # 1, 3: copies


def test_a_file_that_is_not_utf8_or_is_a_directory_is_one_line(files, tmp_path):
    data, spec = files
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes((json.dumps(ROWS[0]) + "\n" + '{"prompt": "caf\xe9", "completion": "x"}\n').encode("latin-1"))
    result = invoke("--spec", spec, bad)
    assert isinstance(result.exception, AlignlabError)
    assert str(result.exception) == f"{bad}:2: the JSONL file is not UTF-8 text (byte 0xe9) — save it as UTF-8"
    result = invoke("--spec", tmp_path, data)
    assert isinstance(result.exception, AlignlabError)
    assert str(result.exception) == f"{tmp_path} is a directory, not a reward spec — pass the path of a reward spec"
    assert "is a directory, not a JSONL file" in str(invoke("--spec", spec, tmp_path).exception)


def test_a_completion_a_judge_could_not_score_shows_as_a_dash(tmp_path):
    """A component's None (an unusable judge reply) is shown as '-', and left out of its mean."""
    (tmp_path / "mine.py").write_text("def some(prompts, completions, **columns):\n"
                                      "    return [None if 'skip' in c[0]['content'] else 1.0 for c in completions]\n")
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "a", "completion": "skip"}) + "\n"
                    + json.dumps({"prompt": "b", "completion": "go"}) + "\n")
    spec = tmp_path / "rewards.yaml"
    spec.write_text("components:\n  - {name: mine, fn: mine.py:some}\n")
    result = invoke("--spec", spec, data)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "│" in line]
    assert any("skip" in line and line.rstrip("│ ").endswith("-") for line in lines), result.stdout
    assert any("mean" in line and "1.000" in line for line in lines), result.stdout
    result = invoke("--spec", spec, "--json", data)
    assert [json.loads(x)["total"] for x in result.stdout.splitlines()] == [None, 1.0]


def test_reward_score_reads_a_line_separator_inside_a_text(tmp_path):
    """feedback export writes U+2028 raw; `reward score` split its JSONL there and called the row invalid JSON."""
    import json
    import subprocess
    import sys

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "q", "completion": "line one\u2028line two."}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    spec = tmp_path / "r.yaml"
    spec.write_text("components:\n  - name: len\n    fn: length_penalty\n    args: {target: 3}\n")
    out = subprocess.run([sys.executable, "-m", "alignlab", "reward", "score", str(rows), "--spec", str(spec)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr

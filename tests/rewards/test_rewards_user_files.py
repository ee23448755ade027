"""A reward spec's `file.py:fn`: read (not run) when checked, imported once per process, only from inside the
project directory unless allowed explicitly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alignlab.errors import AlignlabError
from alignlab.rewards import load_spec
from alignlab.rewards.compose import ALLOW_OUTSIDE_ENV

LOUD = """
import os
with open(os.environ["IMPORT_LOG"], "a") as fh:  # a side effect on import: each line is one import
    fh.write("imported\\n")

def score(prompts, completions, **columns):
    return [1.0] * len(completions)
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "alignlab.yaml").write_text("persona: test\n")
    (root / "loud.py").write_text(LOUD)
    (root / "rewards.yaml").write_text("components:\n  - {fn: loud.py:score}\n")
    log = tmp_path / "imports.log"
    monkeypatch.setenv("IMPORT_LOG", str(log))
    monkeypatch.delenv(ALLOW_OUTSIDE_ENV, raising=False)
    return root, log


def _imports(log) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_checking_does_not_import_and_building_imports_once(project):
    root, log = project
    checked = load_spec(root / "rewards.yaml", check_only=True)
    assert checked.names == ["score"] and _imports(log) == 0
    with pytest.raises(AlignlabError, match="only checked"):
        checked(["p"], ["c"])
    assert load_spec(root / "rewards.yaml")(["p"], ["c"]) == [1.0] and _imports(log) == 1
    assert load_spec(root / "rewards.yaml")(["p"], ["c"]) == [1.0] and _imports(log) == 1  # the same module
    os.utime(root / "loud.py", ns=(1, 1))  # an edited file is imported again
    load_spec(root / "rewards.yaml")
    assert _imports(log) == 2


def test_a_grpo_run_imports_the_file_once(project, tiny_model):
    """engine.prepare checks the spec (no import); building the trainer's reward imports it: once in all."""
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine, online

    root, log = project
    data = root / "prompts.jsonl"
    data.write_text(json.dumps({"prompt": "hi"}) + "\n")
    cfg = apply_overrides(ProjectConfig(model=tiny_model), {"online.rewards": str(root / "rewards.yaml"),
                                                            "train.sample_prompts": 0})
    ctx = engine.prepare("grpo", cfg, str(data), root / "runs")
    assert _imports(log) == 0
    online.build_reward(ctx)
    online.build_reward(ctx)
    assert _imports(log) == 1


def test_check_reports_file_problems_without_running_it(project):
    root, log = project
    (root / "bad.py").write_text("import os\nos.environ['X'] = '1'\ndef f(prompts, completions, **kw):\n  return [\n")
    (root / "sig.py").write_text("def two(prompts, completions):\n    return []\n")
    for fn, msg in [("bad.py:f", "could not read bad.py: SyntaxError"),
                    ("loud.py:nope", "loud.py has no function 'nope' — functions there: score"),
                    ("sig.py:two", "must be defined as def two(prompts, completions, **columns)")]:
        (root / "rewards.yaml").write_text(f"components:\n  - {{fn: {fn}}}\n")
        with pytest.raises(AlignlabError, match="rewards.yaml:2") as err:
            load_spec(root / "rewards.yaml", check_only=True)
        assert msg in str(err.value)
    assert _imports(log) == 0


def test_files_outside_the_project_are_refused_unless_allowed(project, monkeypatch):
    root, log = project
    (root.parent / "outside.py").write_text(LOUD)
    (root / "link.py").symlink_to(root.parent / "outside.py")  # a link inside pointing out counts as outside
    for ref in ("../outside.py:score", "link.py:score", f"{root.parent / 'outside.py'}:score"):
        (root / "rewards.yaml").write_text(f"components:\n  - {{fn: '{ref}'}}\n")
        with pytest.raises(AlignlabError, match="is outside the project directory") as err:
            load_spec(root / "rewards.yaml", check_only=True)
        assert ALLOW_OUTSIDE_ENV in str(err.value) and "\n" not in str(err.value)
    assert _imports(log) == 0
    assert load_spec(root / "rewards.yaml", allow_outside=True)(["p"], ["c"]) == [1.0]
    monkeypatch.setenv(ALLOW_OUTSIDE_ENV, "1")
    assert load_spec(root / "rewards.yaml")(["p"], ["c"]) == [1.0]


def test_without_a_project_the_spec_directory_is_the_boundary(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_OUTSIDE_ENV, raising=False)
    monkeypatch.setenv("IMPORT_LOG", str(tmp_path / "log"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loud.py").write_text(LOUD)
    (tmp_path / "loud.py").write_text(LOUD)
    (tmp_path / "sub" / "ok.yaml").write_text("components:\n  - {fn: loud.py:score}\n")
    (tmp_path / "sub" / "up.yaml").write_text("components:\n  - {fn: ../loud.py:score}\n")
    assert load_spec(tmp_path / "sub" / "ok.yaml").names == ["score"]
    with pytest.raises(AlignlabError, match="outside the project directory"):
        load_spec(tmp_path / "sub" / "up.yaml")


def test_train_flag_allows_outside_files(project, tiny_model):
    """`alignlab train` refuses the outside file in one line, before any model loads; with
    `--allow-outside-rewards` the spec check passes and the next check (vLLM, on purpose) is the one that stops it."""
    root, log = project
    (root.parent / "outside.py").write_text(LOUD)
    (root / "rewards.yaml").write_text("components:\n  - {fn: ../outside.py:score}\n")
    (root / "prompts.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    args = [sys.executable, "-m", "alignlab", "train", "grpo", "--rewards", str(root / "rewards.yaml"), "--model",
            tiny_model, "--data", str(root / "prompts.jsonl"), "--set", "online.use_vllm=true"]
    out = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "is outside the project directory" in out.stderr, out.stderr[-2000:]
    out = subprocess.run(args + ["--allow-outside-rewards"], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "online.use_vllm needs" in out.stderr, out.stderr[-2000:]
    assert _imports(log) == 0  # checked twice, never run


def test_an_async_reward_is_refused_when_checked(project):
    """TRL would await it; the composed reward calls each component directly and got a coroutine at step 0."""
    root, log = project
    (root / "aio.py").write_text("async def score(prompts, completions, **columns):\n    return [1.0]\n"
                                 "async def _impl(prompts, completions, **columns):\n    return [1.0]\n"
                                 "bound = _impl\n")
    (root / "rewards.yaml").write_text("components:\n  - {fn: aio.py:score}\n")
    with pytest.raises(AlignlabError) as err:
        load_spec(root / "rewards.yaml", check_only=True)
    assert str(err.value).startswith(f"{root / 'rewards.yaml'}:2: aio.py:score is an async def; a reward function "
                                     "must be a plain def — write def score(prompts, completions, **columns)")
    (root / "rewards.yaml").write_text("components:\n  - {fn: aio.py:bound}\n")  # known only once imported
    load_spec(root / "rewards.yaml", check_only=True)
    with pytest.raises(AlignlabError, match="rewards.yaml:2: aio.py:bound is an async def"):
        load_spec(root / "rewards.yaml")


def test_a_reward_file_imports_a_module_beside_it(project):
    root, log = project
    (root / "alignlab_test_sibling_bonus.py").write_text("def bonus(text):\n    return 0.5 if 'x' in text else 0.0\n")
    (root / "uses_sibling.py").write_text(
        "from alignlab_test_sibling_bonus import bonus\n"
        "def score(prompts, completions, **columns):\n"
        "    return [bonus(c[0]['content']) for c in completions]\n")
    (root / "rewards.yaml").write_text("components:\n  - {fn: uses_sibling.py:score}\n")
    before = list(sys.path)
    try:
        reward = load_spec(root / "rewards.yaml")
        assert reward(["p"] * 2, [[{"role": "assistant", "content": "x"}], [{"role": "assistant", "content": "y"}]]) \
            == [0.5, 0.0]
        assert sys.path == before  # only while importing it
    finally:
        sys.modules.pop("alignlab_test_sibling_bonus", None)

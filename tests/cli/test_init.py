"""`alignlab init` as a newcomer follows the README: what it writes runs as is, and a model it cannot use is refused
before anything is written."""

from __future__ import annotations

from typer.testing import CliRunner

from alignlab.cli import app


def test_init_writes_the_default_online_reward_so_the_readmes_grpo_command_runs(tmp_path, monkeypatch):
    """`alignlab train grpo --rewards rewards.yaml` answered "reward spec not found" in a fresh project."""
    from alignlab.rewards import default_reward, load_spec

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["init", "p"])
    assert res.exit_code == 0, res.output
    assert "rewards.yaml)" in res.output.splitlines()[0]
    reward = load_spec("p/rewards.yaml")  # as `train grpo --rewards` reads it
    default = default_reward()  # what GRPO, RLOO and PPO use without --rewards
    assert [(c.name, c.source, c.weight) for c in reward.parts] == [
        (c.name, c.source, c.weight) for c in default.parts]
    assert (reward.cap, reward.diversity_weight) == (default.cap, default.diversity_weight)
    completions = ["Oh, brilliant question. Water is wet, obviously.", "Certainly! I'd be happy to help. " * 30]
    scored = [c.fn(["q", "q"], completions) for c in reward.parts]  # the args too (length's target)
    assert scored == [c.fn(["q", "q"], completions) for c in default.parts] and scored[1][1] > 0
    (tmp_path / "p" / "rewards.yaml").write_text("components:\n  - {fn: length_penalty}\n")
    assert CliRunner().invoke(app, ["init", "p", "--force"]).exit_code == 0
    assert (tmp_path / "p" / "rewards.yaml").read_text() == "components:\n  - {fn: length_penalty}\n"  # kept


def test_init_refuses_a_model_name_it_cannot_resolve_before_writing_anything(tmp_path, monkeypatch):
    """`init p --model mymodels/tiny` (a mistyped path read as a hub id) made the project and said "next: alignlab
    recipe"; the first command after it failed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(app, ["init", "p", "--model", "mymodels/tiny"])
    assert type(res.exception).__name__ == "AlignlabError", res.output
    assert "no local directory 'mymodels/tiny'" in str(res.exception) and not (tmp_path / "p").exists()
    res = CliRunner().invoke(app, ["init", "p", "--model", "a/b/c"])  # neither a path here nor a hub id
    assert "unknown model 'a/b/c'" in str(res.exception) and not (tmp_path / "p").exists()

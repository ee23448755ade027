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


def test_a_project_made_without_init_has_the_starter_reward_and_a_missing_one_names_the_default(tiny_model, tmp_path,
                                                                                                  monkeypatch):
    """make demo's project (create_project, not `alignlab init`) had no rewards.yaml: the README's `train grpo --rewards
    rewards.yaml` answered "reward spec not found", with no word that leaving --rewards out gives the same reward."""
    from alignlab.project import create_project
    from alignlab.rewards import default_reward
    from alignlab.train.monitors import load_rewards

    _, written = create_project(tmp_path / "d", model=tiny_model)
    assert "rewards.yaml" in written
    reward, gold = load_rewards(tmp_path / "d" / "rewards.yaml", check_only=True)  # as `train grpo --rewards` reads it
    assert gold is None and [(c.source, c.weight) for c in reward.parts] == [
        (c.source, c.weight) for c in default_reward().parts]
    (tmp_path / "d" / "rewards.yaml").unlink()  # a project from before projects got one
    monkeypatch.chdir(tmp_path / "d")
    res = CliRunner().invoke(app, ["train", "grpo", "--data", "data/prompts.jsonl", "--rewards", "rewards.yaml"])
    assert type(res.exception).__name__ == "AlignlabError", res.output
    assert "reward spec not found" in str(res.exception) and "without --rewards" in str(res.exception)
    assert "same default reward" in str(res.exception) and not any((tmp_path / "d" / "runs").iterdir())


def test_the_starter_reward_of_another_persona_says_whose_markers_it_counts(tmp_path):
    """The starter is GRPO's default (the snark example's markers) for any persona, as training without --rewards
    uses it; for a persona of the user's own its comment says that it is not theirs and what to put instead."""
    import yaml

    from alignlab.project import create_project
    from alignlab.rewards.compose import DEFAULT_SPEC

    create_project(tmp_path / "p")
    snark = (tmp_path / "p" / "rewards.yaml").read_text()
    assert "not this project's persona" not in snark
    create_project(tmp_path / "p", persona="talks like a pirate", force=True)  # the snark starter, unchanged, goes
    text = (tmp_path / "p" / "rewards.yaml").read_text()
    assert yaml.safe_load(text) == yaml.safe_load(DEFAULT_SPEC)
    assert "not this project's persona,\n#   \"talks like a pirate\": replace it" in text and "fn: llm_judge" in text
    assert all(line.startswith("#") for line in text[: text.index("components:")].splitlines())
    mine = "components:\n  - {fn: length_penalty}\n"
    (tmp_path / "p" / "rewards.yaml").write_text(mine)
    create_project(tmp_path / "p", persona="talks like a robot", force=True)
    assert (tmp_path / "p" / "rewards.yaml").read_text() == mine  # the user's own is kept


def test_init_force_takes_a_model_path_inside_the_project(tiny_model, tmp_path, monkeypatch):
    """`init p --force --model models/tiny` run beside p, with p/models/tiny there, was refused as an unreachable hub
    id; the project reads a relative model from itself, as it did before init checked hub names."""
    import shutil

    from alignlab.config import project_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shutil.copytree(tiny_model, tmp_path / "p" / "models" / "tiny")
    res = CliRunner().invoke(app, ["init", "p", "--force", "--model", "models/tiny"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "\nmodel: models/tiny\n" in (tmp_path / "p" / "alignlab.yaml").read_text()
    assert project_config(tmp_path / "p")[0].model == str((tmp_path / "p" / "models" / "tiny").resolve())
    (tmp_path / "p" / "models" / "empty").mkdir()
    res = CliRunner().invoke(app, ["init", "p", "--force", "--model", "models/empty"])
    assert "--model models/empty: the directory holds no model" in str(res.exception)

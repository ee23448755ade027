"""The demo's recipe on the tiny model: each stage trains on the project's own file, the second continues from
the first's adapter, the distil stage writes rows from the second's answers for the last to train on, and a finished
stage is reused when the recipe runs again."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from alignlab.config import CONFIG_NAME, apply_overrides, load_config
from alignlab.errors import AlignlabError
from alignlab.project import create_project
from alignlab.rundir import Run
from alignlab.workflows.recipes import DEFAULT, DISTIL, DISTILLED, MIN_DISTIL_ROWS, Stage, train_recipe


def test_the_default_recipe_trains_each_stage_from_the_last(tiny_model, tmp_path):
    root = tmp_path / "proj"
    create_project(root, model=tiny_model)
    cfg = apply_overrides(load_config(root / CONFIG_NAME), {"train.batch_size": 2, "train.sample_prompts": 0,
                                                            "lora.r": 4})
    # one step a stage: two would read as `recipe --quick` runs, which a changed stage replaces without --force
    quick = tuple(Stage(s.method, s.data, {**s.overrides, "limit": 4} if s.method == DISTIL else
                        {**s.overrides, "train.max_steps": 1, "train.epochs": 1.0}) for s in DEFAULT)
    said: list[str] = []
    last = train_recipe(root, cfg, quick, echo=said.append)
    trained = [(i, s) for i, s in enumerate(DEFAULT, 1) if s.method != DISTIL and s.data != DISTILLED]
    runs = [Run(root / cfg.runs_dir / f"recipe-{i}-{s.method}") for i, s in trained]
    assert last == runs[-1].path and [r.info["status"] for r in runs] == ["done"] * len(runs)
    assert [r.info["method"] for r in runs] == [s.method for _, s in trained]
    assert runs[0].info["data"].endswith(DEFAULT[0].data) and runs[0].info["rows"] == 683  # every rewrite's chosen side
    for before, after in zip(runs, runs[1:]):
        assert after.info["init_adapter"] == str(before.path)
        a = load_file(str(before.adapter_dir / "adapter_model.safetensors"))
        b = load_file(str(after.adapter_dir / "adapter_model.safetensors"))
        assert any((a[k] - b[k]).abs().max() > 0 for k in a)  # the second stage moved the adapter on
    # the distil stage answered 4 prompts with the last run: too few rows to train on, said in one line
    d, tail = next(i for i, s in enumerate(DEFAULT, 1) if s.method == DISTIL), len(DEFAULT)
    distilled = root / cfg.data_dir / f"recipe-{d}-distil.jsonl"
    assert distilled.is_file() and any(m.startswith(f"kept ") for m in said)
    assert said[-1].startswith(f"stage {tail} skipped: the distil stage kept ") and f"ends at {last}," in said[-1]
    assert "an export cannot" in said[-1]
    said.clear()
    assert train_recipe(root, cfg, quick, echo=said.append) == last
    assert said[: len(runs)] == [f"stage {i} already trained: {r.path}" for (i, _), r in zip(trained, runs)]
    assert said[len(runs)] == f"stage {d} already distilled: {distilled}"
    # with enough rows in the distilled file, the last stage trains on them from the last run and decodes alone
    rows = [{"prompt": f"What is {a} plus {a}?", "completion": f"{2 * a}, obviously.", "source": "distil"}
            for a in range(MIN_DISTIL_ROWS)]
    distilled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    final = Run(train_recipe(root, cfg, quick, echo=said.append))
    assert final.path.name == f"recipe-{tail}-sft" and final.info["init_adapter"] == str(last)
    assert final.info["rows"] == MIN_DISTIL_ROWS and final.info["decoding"] == {"base_opening": None, "amplify": 0.0}
    # a stage whose settings changed since it finished runs again, and so does every stage after it; the finished
    # runs that go are named first, and `alignlab recipe` without --force (replace=False) refuses before any goes
    said.clear()
    changed = tuple(Stage(s.method, s.data, {**s.overrides, "amplify": 2.0, "reference_opening": True})
                    if s.method == DISTIL else s for s in quick)
    with pytest.raises(AlignlabError) as refused:
        train_recipe(root, cfg, changed, echo=said.append, replace=False)
    assert str(refused.value).startswith(f"the recipe would replace finished runs/{final.path.name}: stage {d}'s "
                                         "settings or data changed since it ran"), refused.value
    assert said == [] and Run(final.path).info["status"] == "done" and distilled.read_text().count("\n") == len(rows)
    train_recipe(root, cfg, changed, echo=said.append)
    assert said[: len(runs)] == [f"stage {i} already trained: {r.path}" for (i, _), r in zip(trained, runs)]
    # the run the last stage trained from the old rows is gone before the distil stage starts (left, it stayed
    # 'done' when the new distil kept too few rows for it), said before it goes
    assert said[len(runs)] == f"stage {d}'s settings or data changed since it ran: replacing finished runs/{final.path.name}"
    assert said[len(runs) + 1] == f"removed {final.path}: it followed from stage {d}, which runs again"
    assert said[len(runs) + 2] == f"stage {d}/{tail}: {changed[d - 1].describe()}" and "amplify 2.0" in said[len(runs) + 2]
    assert not any(m.startswith(f"stage {tail} already") for m in said)
    # reference_opening reaches distil: the tiny model's wrong openings give way to the rewrites' first sentences
    kept = next(m for m in said if m.startswith("kept "))
    assert "(opening wrong against the reference 0," in kept, kept


def test_recipe_command_trains_the_stages_in_the_project_and_continues(tiny_model, tmp_path):
    """`alignlab recipe --quick`: every stage in runs/quick-<i>-<method> (never the full recipe's runs/recipe-*, which
    it replaced with 2-step adapters); run again, the trained stages are reused, and the last stage trains on however
    few rows the distil stage kept (a test with the full recipe's 16-row floor passed as well)."""
    from typer.testing import CliRunner

    from alignlab.cli import app

    proj = tmp_path / "proj"
    res = CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model])
    assert "alignlab recipe" in res.output
    res = CliRunner().invoke(app, ["recipe", "--quick", "--project", str(proj)])
    assert res.exit_code == 0, res.output
    runs = [Run(proj / "runs" / f"quick-{i}-{m}") for i, m in ((1, "sft"), (2, "dpo"))]
    assert [r.info["status"] for r in runs] == ["done", "done"] and runs[0].info["steps"] == 2
    assert runs[1].info["init_adapter"] == str(runs[0].path) and runs[1].info["data"].endswith("/strong_pairs.jsonl")
    assert "stage 2 uses" not in res.output
    # the tiny model's distil keeps nothing: stage 4 is skipped, and the last lines name the run it ended at
    assert "stage 4 skipped: the distil stage kept no rows; the recipe ends at" in res.output
    assert f"final adapter: {runs[-1].path}   (a smoke test" in res.output
    assert not (proj / "runs" / "recipe-1-sft").exists()
    # three rows where the distil stage wrote none (as if it had kept them): --quick trains stage 4 on them
    distilled = proj / "data" / "quick-3-distil.jsonl"
    assert distilled.is_file() and distilled.read_text() == ""
    rows = [{"prompt": f"What is {a} plus {a}?", "completion": f"{2 * a}, obviously.", "source": "distil"}
            for a in range(3)]
    distilled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["recipe", "--quick", "--project", str(proj)])
    assert res.exit_code == 0 and f"stage 1 already trained: {runs[0].path}" in res.output, res.output
    assert f"stage 3 already distilled: {distilled}" in res.output and "skipped" not in res.output
    last = Run(proj / "runs" / "quick-4-sft")
    assert last.info["status"] == "done" and last.info["rows"] == 3 and last.info["init_adapter"] == str(runs[1].path)
    assert f"final adapter: {last.path}   (a smoke test" in res.output


def test_an_example_project_trains_the_recipe_on_the_voice_sets_and_an_older_one_on_its_pairs(tiny_model, tmp_path):
    """init writes the recipe's data (the rewrites and the pairs written again with the voice in every sentence) beside
    pairs.jsonl as written, which `alignlab train dpo` defaults to; a project made before strong_pairs.jsonl existed
    trains stage 2 on its pairs.jsonl, and says so."""
    from typer.testing import CliRunner

    from alignlab.cli import app
    from alignlab.data import bundled_path

    proj = tmp_path / "proj"
    CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model])
    data = proj / "data"
    assert (data / "strong_pairs.jsonl").read_bytes() == bundled_path("persona-strong-pairs").read_bytes()
    assert (data / "rewrites.jsonl").read_bytes() == bundled_path("persona-strong-rewrites").read_bytes()
    assert (data / "pairs.jsonl").read_bytes() == bundled_path("persona-pairs").read_bytes()
    (data / "strong_pairs.jsonl").unlink()
    res = CliRunner().invoke(app, ["recipe", "--quick", "--project", str(proj)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("no data/strong_pairs.jsonl: stage 2 uses data/pairs.jsonl\n"), res.output
    assert Run(proj / "runs" / "quick-2-dpo").info["data"].endswith("/data/pairs.jsonl")


def test_recipe_command_names_the_data_a_project_lacks(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from alignlab.cli import app

    proj = tmp_path / "pirate"
    CliRunner().invoke(app, ["init", str(proj), "--persona", "talks like a pirate"])
    res = CliRunner().invoke(app, ["recipe", "--project", str(proj)])
    err = str(res.exception)
    assert type(res.exception).__name__ == "AlignlabError", res.output
    assert "data/pairs.jsonl, data/rewrites.jsonl, which this project lacks" in err and "--rewrites" in err
    res = CliRunner().invoke(app, ["recipe", "--project", str(proj), "--name", "a/b"])
    assert "is not a plain directory name" in str(res.exception)
    assert not (proj / "runs").exists() or not any((proj / "runs").iterdir())
    # synth's pairs named as its next line says: the line names the file the stages read (it said data/data/...);
    # a bad row stops the recipe before it trains
    good = {"prompt": "Where is the gold?", "chosen": "Arr, buried it be.", "rejected": "It is buried."}
    (proj / "data" / "synth_pairs.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "q"}) + "\n")
    monkeypatch.chdir(proj)
    res = CliRunner().invoke(app, ["recipe", "--pairs", "data/synth_pairs.jsonl"])
    assert "no data/rewrites.jsonl: stages 1 and 3 use data/synth_pairs.jsonl\n" in res.output, res.output
    assert "synth_pairs.jsonl:2: missing field" in str(res.exception)


def test_recipe_stages_swap_the_data_and_shorten_for_a_smoke_test():
    from alignlab.workflows.recipes import recipe_stages

    assert recipe_stages() == DEFAULT
    stages = recipe_stages(rewrites="mine.jsonl", pairs="bundled:persona-pairs", quick=True)
    assert [s.data for s in stages] == ["mine.jsonl", "bundled:persona-pairs", "mine.jsonl", DISTILLED]
    assert [s.overrides.get("train.max_steps") for s in stages] == [2, 2, None, 2] and stages[2].overrides["limit"] == 8
    assert stages[3].overrides["min_rows"] == 1  # a smoke test's last stage trains on what the 8 prompts keep
    assert stages[0].overrides["train.learning_rate"] == DEFAULT[0].overrides["train.learning_rate"]


def test_recipe_for_a_persona_of_your_own_trains_on_its_pairs(tiny_model, tmp_path):
    """A project with its own data/pairs.jsonl (what synth writes there) and no rewrites: stages 1 and 3 use the pairs."""
    import shutil

    from typer.testing import CliRunner

    from alignlab.cli import app
    from alignlab.data import bundled_path

    proj = tmp_path / "pirate"
    CliRunner().invoke(app, ["init", str(proj), "--persona", "talks like a pirate", "--model", tiny_model])
    shutil.copyfile(bundled_path("persona-pairs"), proj / "data" / "pairs.jsonl")
    res = CliRunner().invoke(app, ["recipe", "--quick", "--project", str(proj)])
    assert res.exit_code == 0, res.output
    assert "no data/rewrites.jsonl: stages 1 and 3 use data/pairs.jsonl" in res.output
    assert Run(proj / "runs" / "quick-1-sft").info["data"].endswith("pairs.jsonl")


def test_synth_writes_a_new_personas_pairs_where_train_looks(tiny_model, tmp_path):
    """With no data/pairs.jsonl yet, synth's default output is that file (the tiny model's answers keep no pair,
    so it says where it would have written and writes nothing)."""
    from typer.testing import CliRunner

    from alignlab.cli import app

    proj = tmp_path / "pirate"
    CliRunner().invoke(app, ["init", str(proj), "--persona", "talks like a pirate", "--model", tiny_model])
    res = CliRunner().invoke(app, ["synth", "--limit", "2", "--candidates", "1", "--max-new-tokens", "4",
                                   "--rater", "reward:length_penalty", "--project", str(proj), "--device", "cpu"])
    assert f"{proj / 'data' / 'pairs.jsonl'}" in (res.output + str(res.exception)), res.output


def test_a_stage_is_reused_only_on_the_settings_and_data_it_ran_with(tmp_path):
    """The record held the stage's description alone: after `model:` or LoRA changed in alignlab.yaml, or the pairs
    file was edited, `make demo` reused adapters trained on the old ones."""
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.workflows.recipes import _fingerprint

    (tmp_path / "data").mkdir()
    pairs = tmp_path / "data" / "strong_pairs.jsonl"
    pairs.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    cfg, stage = ProjectConfig(), DEFAULT[1]
    assert stage.data == "strong_pairs.jsonl"
    same = _fingerprint(tmp_path, cfg, stage)
    assert same == _fingerprint(tmp_path, ProjectConfig(), stage) and same.startswith(stage.describe())
    assert _fingerprint(tmp_path, apply_overrides(cfg, {"lora.r": 8}), stage) != same
    assert _fingerprint(tmp_path, apply_overrides(cfg, {"model": "qwen2.5-0.5b-instruct"}), stage) != same
    assert _fingerprint(tmp_path, apply_overrides(cfg, {"dpo.beta": 0.2}), stage) != same
    # settings the stage does not train with leave it reused
    assert _fingerprint(tmp_path, apply_overrides(cfg, {"loop.per_round": 8, "kto.beta": 0.5}), stage) == same
    distil = DEFAULT[2]
    assert _fingerprint(tmp_path, apply_overrides(cfg, {"sampling.temperature": 0.5}), distil) != _fingerprint(tmp_path, cfg, distil)
    pairs.write_text('{"prompt": "p", "chosen": "a!", "rejected": "b"}\n')
    assert _fingerprint(tmp_path, cfg, stage) != same


def test_a_stage_file_given_as_a_path_from_here_is_found(tmp_path, monkeypatch):
    """`recipe --pairs data/pairs.jsonl` looked for data/data/pairs.jsonl; `train --data` takes such paths."""
    from alignlab.config import ProjectConfig
    from alignlab.workflows.recipes import Stage, stage_data

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pairs.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    cfg = ProjectConfig()
    want = str((tmp_path / "data" / "pairs.jsonl").resolve())
    assert stage_data(tmp_path, cfg, Stage("dpo", "data/pairs.jsonl")) == want
    assert stage_data(tmp_path, cfg, Stage("dpo", "pairs.jsonl")) == str(tmp_path / "data" / "pairs.jsonl")
    assert stage_data(tmp_path, cfg, Stage("dpo", "bundled:persona-pairs")) == "bundled:persona-pairs"


def _two_stage_project(tiny_model, tmp_path, rows=8):
    root = tmp_path / "proj"
    create_project(root, model=tiny_model)
    data = root / "data" / "few.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {a} plus {a}?", "completion": f"{2 * a}, obviously."}) + "\n"
                            for a in range(rows)))
    cfg = apply_overrides(load_config(root / CONFIG_NAME), {"train.batch_size": 2, "train.sample_prompts": 0,
                                                            "lora.r": 4, "train.max_steps": 3, "train.save_steps": 2,
                                                            "train.check_per_category": 0})
    return root, cfg


def test_a_stage_of_so_many_epochs_runs_them_whatever_max_steps_the_project_sets(tiny_model, tmp_path):
    """train.max_steps: 3 in alignlab.yaml cut the recipe's "one epoch" SFT stage to 3 steps."""
    root, cfg = _two_stage_project(tiny_model, tmp_path)
    last = train_recipe(root, cfg, (Stage("sft", "few.jsonl", {"train.epochs": 1.0}),), echo=lambda m: None)
    assert Run(last).info["steps"] == 4  # 8 rows in batches of 2


def test_an_upgraded_projects_quick_runs_give_way_to_the_recipe_without_force(tiny_model, tmp_path):
    """Before --quick trained into runs/quick-*, `recipe --quick` trained into runs/recipe-*; after the upgrade a plain
    `alignlab recipe` refused to replace those 2-step runs without --force. A run of the full recipe still is kept."""
    from alignlab.workflows.recipes import QUICK_STEPS

    root, cfg = _two_stage_project(tiny_model, tmp_path)
    smoke = (Stage("sft", "few.jsonl", {"train.learning_rate": 5e-4, "train.max_steps": QUICK_STEPS}),)
    train_recipe(root, cfg, smoke, echo=lambda m: None)  # what `recipe --quick` left in runs/recipe-1-sft
    full = (Stage("sft", "few.jsonl", {"train.learning_rate": 5e-4, "train.epochs": 1.0}),)
    said: list[str] = []
    last = Run(train_recipe(root, cfg, full, echo=said.append, replace=False))  # `alignlab recipe`, no --force
    assert said[0] == (f"stage 1's settings or data changed since it ran: replacing runs/recipe-1-sft, --quick runs "
                       f"of {QUICK_STEPS} steps (a smoke test, not a persona)"), said
    assert last.info["status"] == "done" and last.info["steps"] == 4  # the epoch: 8 rows in batches of 2
    with pytest.raises(AlignlabError, match="would replace finished runs/recipe-1-sft: stage 1's settings"):
        train_recipe(root, cfg, smoke, echo=said.append, replace=False)  # 4 steps of the real stage: kept
    assert Run(last.path).info["steps"] == 4


def test_a_stage_stopped_part_way_goes_on_from_its_checkpoint(tiny_model, tmp_path):
    """An interrupted stage trained again from step 0 when the recipe ran again, and one finished by hand with
    `alignlab train --resume` (as the interrupt line used to say) was thrown away."""
    from alignlab.workflows.recipes import PENDING, _Record, _fingerprint

    root, cfg = _two_stage_project(tiny_model, tmp_path)
    stages = (Stage("sft", "few.jsonl", {"train.max_steps": 4}), Stage("sft", "few.jsonl", {"train.max_steps": 1}))
    train_recipe(root, cfg, stages, echo=lambda m: None)
    first, second = (Run(root / "runs" / f"recipe-{i}-sft") for i in (1, 2))
    record = _Record(root / "runs" / "recipe-stages.json")
    # as a Ctrl-C in stage 1 leaves it: the run interrupted after its step-2 checkpoint, the stage pending
    import shutil

    shutil.rmtree(first.path / "checkpoints" / "checkpoint-4", ignore_errors=True)
    first.update(status="interrupted")
    record.write(1, PENDING + _fingerprint(root, cfg, stages[0]))
    said: list[str] = []
    train_recipe(root, cfg, stages, echo=said.append)
    assert said[0] == "stage 1's run is not finished: replacing finished runs/recipe-2-sft", said
    assert said[2] == f"stage 1/2: {stages[0].describe()}, resumed from its last checkpoint", said
    events = [json.loads(x).get("event") for x in (first.path / "metrics.jsonl").read_text().splitlines()]
    assert "resumed" in events and Run(first.path).info["status"] == "done" and Run(first.path).info["steps"] == 4
    assert said[1] == f"removed {second.path}: it followed from stage 1, which runs again"
    # finished by hand (`alignlab train sft --resume`): the pending stage counts as trained
    record = _Record(root / "runs" / "recipe-stages.json")
    record.write(2, PENDING + _fingerprint(root, cfg, stages[1]))
    said.clear()
    train_recipe(root, cfg, stages, echo=said.append)
    assert said == [f"stage 1 already trained: {first.path}", f"stage 2 already trained: {second.path}"]


def test_every_stages_rows_are_read_before_the_first_trains(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from alignlab.cli import app

    proj = tmp_path / "proj"
    CliRunner().invoke(app, ["init", str(proj), "--model", tiny_model])
    with open(proj / "data" / "strong_pairs.jsonl", "a") as f:
        f.write(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    res = CliRunner().invoke(app, ["recipe", "--quick", "--project", str(proj)])
    err = str(res.exception)
    assert type(res.exception).__name__ == "AlignlabError", res.output
    assert "strong_pairs.jsonl:601: missing field 'rejected'" in err and "the recipe trains on every row" in err
    assert "--skip-invalid" not in err and not (proj / "runs" / "recipe-1-sft").exists()


def test_a_stage_killed_outright_reads_as_died_and_so_resumes(tmp_path):
    """A stage killed by SIGKILL or the OOM killer still says 'running' in run.json: the recipe retrained it from
    step 0 and deleted its checkpoints, where `alignlab runs` shows it as died and resumable."""
    import socket

    from alignlab.workflows.recipes import _status

    (tmp_path / "run.json").write_text(json.dumps({"status": "running", "pid": 2 ** 22 + 12345,
                                                   "host": socket.gethostname()}))
    assert _status(tmp_path) == "died"


def test_ctrl_c_says_to_run_the_recipe_again(tiny_model, tmp_path):
    """After Ctrl-C the trainer said "continue with `alignlab train sft --resume runs/recipe-1-sft`", which finishes
    that stage alone and leaves the later ones to the user; running the recipe again goes on from the checkpoint."""
    from test_break import interrupt  # Ctrl-C sent to a real `alignlab` process once it trains

    create_project(tmp_path / "proj", model=tiny_model)
    code, said = interrupt(["recipe"], "sft: 0/", tmp_path / "proj")
    assert code == 130 and "sft: 0/" in said, said  # stopped while stage 1 trained
    assert "interrupted: run `alignlab recipe` again; it goes on where it stopped" in said, said
    assert "continue with" not in said and "--resume" not in said, said

"""Bad input: one line on stderr (what, where, how to fix), exit code 2, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from alignlab.cli import main
from alignlab.errors import AlignlabError
from helpers import cfg_for, one_error, run_cli


def usage_error(lines):
    """The text of typer's boxed usage error, its frame and line breaks removed."""
    return " ".join(" ".join(x.strip("│ ") for x in lines).split())


def pairs(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    return f


def test_missing_data_file(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(tmp_path / "nope.jsonl"), cwd=tmp_path)
    assert code == 2 and "data file not found" in one_error(lines)


def test_unknown_method_and_model(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "train", "dpx", "--data", str(pairs(tmp_path)), cwd=tmp_path)
    assert code == 2 and "unknown method 'dpx'" in one_error(lines) and "dpo" in lines[-1]
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--model", "no-such-model", "--data", str(pairs(tmp_path)))
    assert code == 2 and "unknown model 'no-such-model'" in one_error(lines)


@pytest.mark.parametrize("yaml, needles", [
    ("name: x\ntrain:\n  learning_rate: [1e-4\n", ("alignlab.yaml:", "malformed YAML")),
    ("name: x\nsampling:\n  base_opening: first\n", ("'sampling.base_opening'", "sentence")),
    ("name: x\nsampling:\n  amplify: -0.5\n", ("alignlab.yaml:3", "'sampling.amplify'")),
    ("name: x\ndpo:\n  beta: 0.1\nkto:\n  beta: high\n", ("alignlab.yaml:5", "'kto.beta'")),  # not dpo's line 3
])
def test_bad_config_names_file_and_key(monkeypatch, capsys, tmp_path, yaml, needles):
    (tmp_path / "alignlab.yaml").write_text(yaml)
    code, lines = run_cli(monkeypatch, capsys, "config", "show", cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and all(n in err for n in needles), err


def test_on_and_off_are_taken_as_written(monkeypatch, capsys, tmp_path):
    """YAML reads a bare on/off as a boolean: `--set train.gradient_checkpointing=on`, as the README writes it, was
    refused ("Input should be 'auto', 'on' or 'off'"), and so was `shared_prompt: off` in alignlab.yaml."""
    from alignlab.config import ProjectConfig, apply_overrides, load_config, parse_set

    (tmp_path / "alignlab.yaml").write_text("name: x\ntrain:\n  shared_prompt: off\n  gradient_checkpointing: on\n")
    train = load_config(tmp_path / "alignlab.yaml").train
    assert (train.shared_prompt, train.gradient_checkpointing) == ("off", "on")
    cfg = apply_overrides(ProjectConfig(), parse_set(["train.gradient_checkpointing=on", "dpo.precompute_ref=off"]))
    assert (cfg.train.gradient_checkpointing, cfg.dpo.precompute_ref) == ("on", "off")
    cfg = apply_overrides(ProjectConfig(), parse_set(["train.report_to=tensorboard, wandb"]))  # a list as names
    assert cfg.train.report_to == ["tensorboard", "wandb"]


def test_unknown_key_and_bad_value_name_the_key(monkeypatch, capsys, tmp_path):
    (tmp_path / "alignlab.yaml").write_text("name: x\ntrain:\n  learning_rat: 1e-4\n")
    code, lines = run_cli(monkeypatch, capsys, "config", "show", cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "alignlab.yaml:3" in err and "unknown key 'train.learning_rat'" in err
    (tmp_path / "alignlab.yaml").write_text("name: x\ntrain:\n  batch_size: -3\n")
    code, lines = run_cli(monkeypatch, capsys, "config", "show", cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "alignlab.yaml:3" in err and "'train.batch_size'" in err


def test_not_a_run_directory(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "generate", "--run", str(tmp_path), "hi")
    assert code == 2 and "is not an alignlab run" in one_error(lines)
    code, lines = run_cli(monkeypatch, capsys, "generate", "--run", str(tmp_path / "missing"), "hi")
    assert code == 2 and "run directory not found" in one_error(lines)


def test_adapter_from_a_different_base(monkeypatch, capsys, tmp_path, tiny_model):
    run = tmp_path / "runs" / "r1"
    (run / "adapter").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"model": tiny_model, "method": "dpo", "status": "done"}))
    code, lines = run_cli(monkeypatch, capsys, "generate", "--run", str(run), "--model", "smollm2-135m", "hi")
    assert code == 2 and "was trained on" in one_error(lines)
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--from", str(run), "--data", str(pairs(tmp_path)), cwd=tmp_path)
    assert code == 2 and "was trained on" in one_error(lines)


def test_init_refuses_to_overwrite(monkeypatch, capsys, tmp_path):
    code, _ = run_cli(monkeypatch, capsys, "init", "proj", cwd=tmp_path)
    assert code == 0
    assert (tmp_path / "proj" / "alignlab.yaml").is_file()
    assert (tmp_path / "proj" / "data" / "pairs.jsonl").stat().st_size > 1000
    code, lines = run_cli(monkeypatch, capsys, "init", "proj")
    assert code == 2 and "already exists" in one_error(lines)


def test_qlora_refused_for_a_reward_model(monkeypatch, capsys, tmp_path):
    """It loaded the base in full precision on CUDA while the plan and the card said 4-bit."""
    code, lines = run_cli(monkeypatch, capsys, "train", "rm", "--data", str(pairs(tmp_path)), "--qlora", cwd=tmp_path)
    assert code == 2 and "QLoRA is not supported for it" in one_error(lines), lines


def test_qlora_refused_on_cpu(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--qlora", "--data", str(pairs(tmp_path)), cwd=tmp_path)
    assert code == 2 and "QLoRA" in one_error(lines) and "CUDA" in lines[-1]


def test_bad_reward_spec_fails_before_the_model_loads(monkeypatch, capsys, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2 plus 2?", "answer": "4"}) + "\n")
    spec = tmp_path / "rewards.yaml"
    spec.write_text("components:\n  - {name: x, fn: no_such_reward, weight: 1.0}\n")
    code, lines = run_cli(monkeypatch, capsys, "train", "grpo", "--data", str(prompts), "--rewards", str(spec), cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "rewards.yaml:2" in err and "no_such_reward" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_runs_lists_whole_run_ids_at_80_columns(tmp_path, monkeypatch):
    import json as _json

    from typer.testing import CliRunner

    from alignlab.cli import app

    run = tmp_path / "runs" / "20261202-101530-dpo-snark-long-name"
    (run / "adapter").mkdir(parents=True)
    (run / "run.json").write_text(_json.dumps({"method": "dpo", "data": "data/pairs.jsonl", "status": "done", "steps": 60,
                                               "final": {"loss": 0.5}}))
    monkeypatch.setenv("COLUMNS", "80")
    out = CliRunner().invoke(app, ["runs", "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 0, out.output
    assert "20261202-101530-dpo-snark-long-name" in out.output


def test_runs_shows_a_reward_models_margin_and_accuracy(tmp_path, monkeypatch):
    """A reward model logs `margin` and `accuracy`, not DPO's rewards/margins: its row showed '-' for both."""
    import json as _json

    from typer.testing import CliRunner

    from alignlab.cli import app

    run = tmp_path / "runs" / "rm"
    (run / "adapter").mkdir(parents=True)
    (run / "run.json").write_text(_json.dumps({"method": "rm", "data": "data/pairs.jsonl", "status": "done", "steps": 9,
                                               "final": {"loss": 0.41, "margin": 1.25, "accuracy": 0.875}}))
    out = CliRunner().invoke(app, ["runs", "--runs-dir", str(tmp_path / "runs")])
    row = next(line for line in out.output.splitlines() if " rm " in line)
    assert "1.250" in row and "0.875" in row, out.output


def test_bad_base_opening_flag_fails_before_loading_a_model(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "generate", "hi", "--base-opening", "first", cwd=tmp_path)
    assert code == 2 and "base opening 'first'" in one_error(lines)
    assert not any("Loading" in x for x in lines)


def test_config_that_is_not_utf8_names_its_line(monkeypatch, capsys, tmp_path):
    (tmp_path / "alignlab.yaml").write_bytes(b"name: x\ntrain:\n  seed: \xff\xfe\n")
    code, lines = run_cli(monkeypatch, capsys, "config", "show", cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "alignlab.yaml:3" in err and "not UTF-8" in err and "save the file as UTF-8" in err


@pytest.mark.parametrize("args, needle", [
    (("--name", "a/b"), "run name 'a/b' is not a plain directory name"),
    (("--name", ".."), "run name '..' is not a plain directory name"),
    (("--device", "gpu7"), "unknown device 'gpu7'"),
    # a device this machine lacks: a RuntimeError or AssertionError traceback once the model had loaded
    (("--device", "mps"), "device 'mps' requested but this machine has no Apple GPU (MPS)"),
    (("--device", "xpu:1"), "device 'xpu:1' requested but this machine has no Intel GPU (XPU)"),
])
def test_bad_run_name_or_device_fails_before_loading_a_model(monkeypatch, capsys, tmp_path, args, needle):
    import torch

    # a machine without an Apple or Intel GPU, whatever this one has (on a Mac, mps is there and is not refused)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), *args, cwd=tmp_path)
    assert code == 2 and needle in one_error(lines), lines
    assert not any("Loading" in x for x in lines)
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob("runs/*"))


def test_a_gpu_index_past_the_last_is_refused_before_loading(monkeypatch, capsys, tmp_path):
    """`--device cuda:3` on a machine with two GPUs failed once the model loaded. The machine's GPU count is torch's
    answer, given here as two (no GPU is needed to check the refusal)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), "--device", "cuda:3",
                          cwd=tmp_path)
    assert code == 2 and "device 'cuda:3' requested but this machine has 2 cuda devices (cuda:0 to cuda:1)" in \
        one_error(lines), lines
    assert not list(tmp_path.glob("runs/*"))


def test_max_new_tokens_below_one_is_refused(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "generate", "hi", "--max-new-tokens", "0", cwd=tmp_path)
    text = usage_error(lines)
    assert code == 2 and "Invalid value for '--max-new-tokens'" in text and "greater than or equal to 1" in text, lines
    assert not any("Loading" in x or "Traceback" in x for x in lines)


def test_lora_target_modules_from_the_command_line(monkeypatch, capsys, tmp_path, tiny_model):
    """A --set string is a comma-separated list (PEFT would read "q_proj" as a whole-name regex and match nothing);
    a name the model lacks is one line listing the names it has, before any training."""
    data = str(pairs(tmp_path))
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--model", tiny_model, "--data", data, "--set",
                          "lora.target_modules=qproj", "--max-steps", "1", cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "no linear layer named qproj" in err and "q_proj" in err, lines
    # refused before the run directory is made (it was left a failed run), a head too (TRL's ValueError)
    for targets, needle in (("q_proj,zz", "no linear layer named zz"), ("lm_head", "dpo cannot adapt lm_head")):
        code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--model", tiny_model, "--data", data, "--set",
                              f"lora.target_modules={targets}", "--name", "bad", cwd=tmp_path)
        assert code == 2 and needle in one_error(lines), lines
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--model", tiny_model, "--data", data, "--set",
                          "lora.target_modules=q_proj,v_proj", "--set", "train.check_per_category=0", "--max-steps", "1",
                          "--name", "qv", cwd=tmp_path)
    assert code in (0, None), lines
    adapter = json.loads((tmp_path / "runs" / "qv" / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]


def test_repetition_penalty_below_one_is_refused(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "generate", "hi", "--repetition-penalty", "0", cwd=tmp_path)
    text = usage_error(lines)
    assert code == 2 and "Invalid value for '--repetition-penalty'" in text, lines


@pytest.mark.parametrize("args, option", [
    (("serve", "--port", "70000"), "--port"),
    (("eval", "--per-category", "0"), "--per-category"),
    (("eval", "--limit", "-2"), "--limit"),
    (("compare", "base", "base", "--limit", "-2"), "--limit"),
    (("distil", "runs/x", "--batch-size", "0"), "--batch-size"),
    (("loop", "--rounds", "1", "--need", "-1"), "--need"),
    (("loop", "--rounds", "1", "--per-round", "-2"), "--per-round"),
    (("sample", "-n", "0"), "-n"),
])
def test_out_of_range_counts_are_refused_by_the_option(monkeypatch, capsys, tmp_path, args, option):
    code, lines = run_cli(monkeypatch, capsys, *args, cwd=tmp_path)
    text = usage_error(lines)
    assert code == 2 and f"Invalid value for '{option}'" in text, lines


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_max_steps_is_minus_one_or_positive(monkeypatch, capsys, tmp_path, steps):
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), "--max-steps", steps,
                          cwd=tmp_path)
    assert code == 2 and one_error(lines).startswith("error: --max-steps: ") and "-1" in one_error(lines), lines


@pytest.mark.parametrize("args, needle", [
    (("--lr", "inf"), "finite number"),
    (("--epochs", "inf"), "finite number"),
    (("--set", "train.lr_scheduler=cosin"), "unknown scheduler 'cosin'"),
    (("--full", "--precision", "fp16"), "full fine-tune in fp16 is not loss-scaled"),
    # scheduler names the config accepts that transformers builds only with arguments, or with evaluation
    (("--set", "train.lr_scheduler=cosine_with_min_lr"), "lr_scheduler_kwargs={min_lr_rate: 0.1}"),
    (("--set", "train.lr_scheduler=warmup_stable_decay"), "num_decay_steps"),
    (("--set", "train.lr_scheduler=reduce_lr_on_plateau"), "dpo does not evaluate while it trains"),
])
def test_values_that_fail_after_loading_are_refused_before(monkeypatch, capsys, tmp_path, args, needle):
    """Each of these failed after the model loaded (inf: an overflow, or a checkpoint of inf called intact; an unknown
    scheduler: transformers' ValueError) or trained to nonsense (unscaled fp16); now one line, no run directory."""
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), *args, cwd=tmp_path)
    assert code == 2 and needle in one_error(lines), lines
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_rewards_are_refused_for_a_method_that_reads_none(monkeypatch, capsys, tmp_path):
    """`train dpo --rewards rewards.yaml` trained and recorded online.rewards, which no offline method reads (while
    `train sft --beta 0.5` was refused); an online method still takes the spec (and checks it)."""
    from alignlab import methods

    offline = [m for m in methods.REGISTRY if not methods.is_online(m)]
    assert {"sft", "dpo", "kto"} <= set(offline)
    for method in offline:
        code, lines = run_cli(monkeypatch, capsys, "train", method, "--data", str(pairs(tmp_path)), "--rewards",
                              "rewards.yaml", cwd=tmp_path)
        assert code == 2 and one_error(lines).startswith(f"error: --rewards is the reward spec of the online methods "
                                                         f"({'/'.join(methods.names(online=True))}); {method} "), lines
    assert not (tmp_path / "runs").exists()
    from alignlab.cli.train import _configured  # the step that refuses it, for an online method (loading TRL is slow)

    for method in methods.names(online=True):
        cfg, _, _ = _configured(None, method, {"online.rewards": "rewards.yaml"}, None, None, "prompts.jsonl")
        assert cfg.online.rewards == "rewards.yaml"


def test_polynomials_lr_end_is_checked_against_the_runs_learning_rate(monkeypatch, capsys, tmp_path, tiny_model):
    """The scheduler was built on a stand-in optimizer at lr 1e-3: `--lr 0.01` with lr_end 0.002, which transformers
    builds, was refused ("must be smaller than initial lr (0.001)"). An lr_end above --lr is still refused, by --lr."""
    import os

    from alignlab.train import engine

    poly = {"lr_scheduler_kwargs": {"lr_end": 0.002}}
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), "--lr", "0.0015",
                          "--set", "train.lr_scheduler=polynomial",
                          "--set", f"train.trainer_overrides={json.dumps(poly)}", cwd=tmp_path)
    assert code == 2 and "lr_end (0.002) must be smaller than initial lr (0.0015)" in one_error(lines), lines
    cfg = cfg_for(tiny_model, **{"train.learning_rate": 0.01, "train.lr_scheduler": "polynomial",
                                 "train.trainer_overrides": poly})
    ctx = engine.prepare("dpo", cfg, str(pairs(tmp_path)), tmp_path / "runs", run_dir=Path(os.devnull))
    assert ctx.cfg.train.lr_scheduler == "polynomial"


def test_a_refused_named_run_leaves_no_directory_and_keeps_its_name(monkeypatch, capsys, tmp_path):
    """`--name dpo` made runs/dpo before the data was checked: each refused try left an empty directory, and the run
    that finally trained went to runs/dpo-3."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    for _ in range(2):
        code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(bad), "--name", "dpo", cwd=tmp_path)
        assert code == 2, lines
    assert not (tmp_path / "runs" / "dpo").exists() and not (tmp_path / "runs" / "dpo-2").exists()


def test_continuing_from_a_run_without_weights_is_refused(monkeypatch, capsys, tmp_path, tiny_model):
    run = tmp_path / "runs" / "int"
    (run / "adapter").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"method": "sft", "model": tiny_model, "status": "interrupted"}))
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), "--model", tiny_model,
                          "--from", str(run), cwd=tmp_path)
    assert code == 2 and "holds no trained weights (status: interrupted)" in one_error(lines), lines


@pytest.mark.parametrize("method", ["dpo", "ipo", "simpo", "orpo"])
def test_a_trl_loss_option_the_dpo_family_does_not_read_is_refused(monkeypatch, capsys, tmp_path, method):
    """label_smoothing 0.4, loss_type hinge or ld_alpha 0 left the loss as it was (0.754257 in all four cases)."""
    code, lines = run_cli(monkeypatch, capsys, "train", method, "--data", str(pairs(tmp_path)),
                          "--set", "train.trainer_overrides.label_smoothing=0.4", cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "trainer_overrides.label_smoothing has no effect" in err, lines


def test_numbers_in_exponent_form_are_numbers():
    """PyYAML reads 1e-8 as text: it reached TRL as a string through train.trainer_overrides."""
    from alignlab.config import parse_set

    assert parse_set(["train.trainer_overrides.adam_epsilon=1e-8"]) == {"train.trainer_overrides.adam_epsilon": 1e-8}


def test_messages_that_are_not_a_list_name_the_line(monkeypatch, capsys, tmp_path):
    f = tmp_path / "sft.jsonl"
    f.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n" + json.dumps({"messages": "hello"}) + "\n")
    code, lines = run_cli(monkeypatch, capsys, "train", "sft", "--data", str(f), cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "sft.jsonl:2" in err and "'messages' must be" in err, lines


def test_an_output_that_is_a_directory_is_refused_before_any_work(monkeypatch, capsys, tmp_path):
    run = tmp_path / "runs" / "r1"
    (run / "adapter").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"model": "smollm2-135m", "method": "dpo", "status": "done"}))
    (tmp_path / "outdir").mkdir()
    code, lines = run_cli(monkeypatch, capsys, "distil", str(run), "--out", str(tmp_path / "outdir"), cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "outdir is a directory" in err and "out.jsonl" in err, lines
    assert not any("Loading" in x for x in lines) and not list((tmp_path / "outdir").iterdir())


def test_another_persona_is_not_trained_on_the_snark_examples_by_default(monkeypatch, capsys, tmp_path):
    code, _ = run_cli(monkeypatch, capsys, "init", "pirate", "--persona", "talks like a pirate", cwd=tmp_path)
    assert code == 0 and not (tmp_path / "pirate" / "data" / "pairs.jsonl").exists()
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--project", str(tmp_path / "pirate"))
    err = one_error(lines)
    assert code == 2 and "not 'talks like a pirate'" in err and "alignlab synth" in err, lines
    assert "--data bundled:persona-pairs" in err and not any("Loading" in x for x in lines)


def test_a_run_without_weights_is_not_answered_by_the_base(monkeypatch, capsys, tmp_path, tiny_model):
    run = tmp_path / "runs" / "failed"
    (run / "adapter").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"model": tiny_model, "method": "dpo", "status": "failed"}))
    code, lines = run_cli(monkeypatch, capsys, "generate", "--run", str(run), "hi", cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "holds no trained weights (status: failed)" in err and "alignlab runs" in err, lines


@pytest.mark.parametrize("args, option", [
    (("--batch-size", "0"), "--batch-size"), (("--grad-accum", "0"), "--grad-accum"), (("--lora-r", "0"), "--lora-r"),
    (("--examples", "-5"), "--examples"), (("--steps", "-1"), "--steps"), (("--epochs", "0"), "--epochs"),
])
def test_plan_refuses_sizes_below_one(monkeypatch, capsys, tmp_path, args, option):
    code, lines = run_cli(monkeypatch, capsys, "plan", "dpo", *args, cwd=tmp_path)
    text = usage_error(lines)
    assert code == 2 and f"Invalid value for '{option}'" in text and "$-" not in text, lines


@pytest.mark.parametrize("content, needle", [
    (b"", "has no rows (it is empty or blank)"),
    (b"\n  \n", "has no rows (it is empty or blank)"),
    (b"\xc3\x28{}\n", "d.jsonl:1: not valid UTF-8"),
    (b"\xff\xfe{\x00}\x00\n\x00", "no row could be read: it is saved as UTF-16"),
    (b"[1, 2]\n", "d.jsonl: no row could be read: it is a JSON array, not JSONL"),
    (b"3\n", "d.jsonl:1: a row must be a JSON object, got int"),
    (b'{"question": "q"}\n', "d.jsonl:1: cannot tell what kind of dataset this is: the first row has fields question"),
])
def test_data_check_says_why_it_cannot_tell_the_kind(monkeypatch, capsys, tmp_path, tiny_model, content, needle):
    (tmp_path / "d.jsonl").write_bytes(content)
    code, lines = run_cli(monkeypatch, capsys, "data", "check", str(tmp_path / "d.jsonl"), "--model", tiny_model,
                          cwd=tmp_path)
    assert code == 2 and needle in one_error(lines), lines


def test_init_on_a_file_and_a_database_path_on_a_directory(monkeypatch, capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    for target in ("afile", "afile/sub"):
        code, lines = run_cli(monkeypatch, capsys, "init", target, cwd=tmp_path)
        assert code == 2 and "afile is a file, not a directory" in one_error(lines), lines
    (tmp_path / "dbdir").mkdir()
    code, lines = run_cli(monkeypatch, capsys, "sample", "--base", "--db", str(tmp_path / "dbdir"), "--limit", "1", "-n", "1")
    err = one_error(lines)
    assert code == 2 and "dbdir is a directory, not a feedback database" in err, lines
    assert not any("Loading" in x for x in lines) and not list((tmp_path / "dbdir").iterdir())


def test_a_failed_run_has_no_card_or_merge(monkeypatch, capsys, tmp_path):
    run = tmp_path / "runs" / "failed"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"model": "smollm2-135m", "method": "dpo", "status": "failed"}))
    for args in (("--card",), ("--merged", str(tmp_path / "merged"))):
        code, lines = run_cli(monkeypatch, capsys, "export", str(run), *args, cwd=tmp_path)
        assert code == 2 and "holds no trained weights (status: failed)" in one_error(lines), lines
    assert sorted(p.name for p in run.iterdir()) == ["run.json"] and not (tmp_path / "merged").exists()


@pytest.mark.parametrize("args, said", [
    (("long-run", "--method", "ppo"), "--method applies to kl-ablation only, not long-run"),
    (("label-flip", "--betas", "0,1"), "--betas applies to kl-ablation only"),
    (("kl-ablation", "--lr", "0"), "--lr must be a finite number above 0"),
])
def test_break_refuses_options_that_do_not_apply(monkeypatch, capsys, tmp_path, args, said):
    code, lines = run_cli(monkeypatch, capsys, "break", *args, "--out", str(tmp_path / "w"), cwd=tmp_path)
    assert code == 2 and said in one_error(lines) and not (tmp_path / "w").exists(), lines


@pytest.mark.parametrize("args, said", [
    (("runs/r1", "--json"), "--json prints the scores of --answers FILE row by row"),
    (("runs/r1", "--answers", "a.jsonl"), "--answers scores the answers in a.jsonl and generates none, so the run "
                                          "runs/r1 would not be evaluated"),
    (("--answers", "a.jsonl", "--limit", "3", "--per-category", "6", "-t", "0.5"),
     "--per-category, --limit, --temperature steer how `eval RUN` generates answers"),
])
def test_eval_refuses_what_its_other_form_would_ignore(monkeypatch, capsys, tmp_path, args, said):
    """`eval RUN --json` printed the table (--json is --answers'), `eval RUN --answers a.jsonl` scored the file and
    left RUN alone, and --limit, --per-category (even at its default) and --temperature changed nothing beside
    --answers: each ran with exit 0."""
    code, lines = run_cli(monkeypatch, capsys, "eval", *args, cwd=tmp_path)
    assert code == 2 and said in one_error(lines), lines


@pytest.mark.parametrize("command", [("pipeline",), ("break", "label-flip")])
def test_workflows_check_the_model_before_writing(monkeypatch, capsys, tmp_path, command):
    code, lines = run_cli(monkeypatch, capsys, *command, "--model", "nosuch", "--out", str(tmp_path / "w"), cwd=tmp_path)
    assert code == 2 and "unknown model 'nosuch'" in one_error(lines) and not (tmp_path / "w").exists(), lines


def test_launch_settings_are_checked_before_the_run_directory_is_made(monkeypatch, capsys, tmp_path, tiny_model):
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), "--model", tiny_model,
                          "--accelerate-config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert code == 2 and "accelerate config not found" in one_error(lines), lines
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("method, other", [("grpo", {"category": "facts"}), ("ppo", {"answer": None})])
def test_a_reward_column_missing_from_the_data_fails_before_the_model_loads(monkeypatch, capsys, tmp_path, method, other):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2 plus 2?", "answer": "4"}) + "\n"
                       + json.dumps({"prompt": "Name a colour.", **other}) + "\n")
    spec = tmp_path / "rewards.yaml"
    spec.write_text("components:\n  - {name: sums, fn: arithmetic, weight: 1.0}\n")
    code, lines = run_cli(monkeypatch, capsys, "train", method, "--data", str(prompts), "--rewards", str(spec), cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "rewards.yaml:2" in err and "'answer', which 1 of 2 rows lack or leave empty" in err, lines
    assert not any("Loading" in x for x in lines)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_distil_that_keeps_nothing_writes_nothing(monkeypatch, capsys, tmp_path, tiny_model):
    """The tiny model's random weights open every answer wrongly: none kept, no file, one error line (exit 2)."""
    from peft import LoraConfig, get_peft_model

    from alignlab.models.loading import load_base

    run = tmp_path / "runs" / "r1"
    peft = get_peft_model(load_base(tiny_model), LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    peft.save_pretrained(str(run / "adapter"))
    (run / "run.json").write_text(json.dumps({"model": tiny_model, "method": "dpo", "status": "done"}))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2 plus 2?", "reference": "2 plus 2 is 4."}) + "\n")
    out = tmp_path / "distil.jsonl"
    code, lines = run_cli(monkeypatch, capsys, "distil", str(run), "--prompts", str(prompts), "--out", str(out),
                          "--device", "cpu", cwd=tmp_path)
    assert code == 2 and "no answer was kept, so" in one_error(lines) and not out.exists(), lines


def test_a_port_in_use_is_one_line_before_anything_loads(monkeypatch, capsys, tmp_path):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        code, lines = run_cli(monkeypatch, capsys, "serve", "--port", port, cwd=tmp_path)
        err = one_error(lines)
        assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err, lines
        assert not any("Loading" in x for x in lines)


def test_help_reflows_each_paragraph(monkeypatch, capsys):
    """A docstring's later paragraphs read as prose in --help, not broken where the source lines end."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["alignlab", "recipe", "--help"])
    with pytest.raises(SystemExit):
        main()
    out = " ".join(capsys.readouterr().out.split("\n"))
    assert "distilled from its answers, SFT on those rows: about 12-15 minutes on 2 CPU cores with the default model." in out


@pytest.mark.parametrize("args", [("-h",), ("eval", "-h"), ("feedback", "export", "-h"), ("export", "-h"),
                                  ("train", "-h")])
def test_h_is_help_for_every_command(monkeypatch, capsys, args):
    """Only train and plan took -h: `alignlab eval -h` and `alignlab -h` said "No such option: -h", while train's
    usage error said "Try 'alignlab train -h'"."""
    code, lines = run_cli(monkeypatch, capsys, *args, with_stdout=True)
    usage = " ".join(("alignlab", *args[:-1], "[OPTIONS]"))  # after the program name (python -m ... under pytest)
    assert code == 0 and lines[0].strip().startswith("Usage: ") and usage in lines[0], lines
    assert not any("No such option" in x for x in lines)


@pytest.mark.parametrize("args, error, suggested", [
    (("train", "sft", "--lr", "abc"), "Error: Invalid value for '--lr': ", ""),
    (("trian",), "Error: No such command 'trian'.", "Did you mean 'train'?"),
    (("eval", "--limt", "3"), "Error: No such option: --limt", "--limit"),
    (("feedback", "export"), "Error: Missing option '--format' / '-f'.", ""),
])
def test_usage_errors_in_a_log_are_plain_lines(monkeypatch, capsys, args, error, suggested):
    """With stderr not a terminal (a log, CI), a usage error was typer's panel: five lines of box drawing around
    the error. Now the usage line, the hint and the error, as click writes them; "Did you mean" stays."""
    code, lines = run_cli(monkeypatch, capsys, *args)
    command = " ".join(("alignlab", *(a for a in args if a in ("train", "eval", "feedback", "export"))))
    assert code == 2 and lines[0].startswith("Usage: ") and f"{command} [OPTIONS]" in lines[0], lines
    assert lines[1].startswith("Try '") and lines[1].endswith(f"{command} -h' for help.") and lines[-1].startswith(error)
    assert suggested in lines[-1]
    assert len(lines) == 4 and not any(ch in x for x in lines for ch in "╭│╰─"), lines


def test_a_model_without_a_chat_template_is_refused_before_it_loads(monkeypatch, capsys, tmp_path, tiny_model):
    import shutil

    base = tmp_path / "base-model"
    shutil.copytree(tiny_model, base)
    cfg_file = base / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("chat_template", None)
    cfg_file.write_text(json.dumps(cfg))
    (base / "chat_template.jinja").unlink(missing_ok=True)
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), "--model", str(base),
                          cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "has no chat template" in err and "instruct" in err, lines
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    # answering works, as plain-text continuation, and says so
    code, lines = run_cli(monkeypatch, capsys, "generate", "--model", str(base), "--max-new-tokens", "2", "hi")
    assert code in (0, None) and any("has no chat template (a base model?)" in x for x in lines), lines


def test_train_help_gives_each_methods_beta_default(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr(sys, "argv", ["alignlab", "train", "--help"])
    with pytest.raises(SystemExit):
        main()
    out = capsys.readouterr().out
    assert "dpo/orpo 0.1, ipo/kto 0.5, simpo 2, grpo/rloo/ppo 0.04" in out


def test_a_plan_shape_name_points_to_the_models_hub_id(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--model", "qwen2.5-1.5b", "--data", str(pairs(tmp_path)),
                          cwd=tmp_path)
    err = one_error(lines)
    assert code == 2 and "is a shape for `alignlab plan`" in err and "--model Qwen/Qwen2.5-1.5B-Instruct" in err, lines


def test_a_template_that_refuses_the_system_prompt_is_named_before_loading(tiny_model):
    from transformers import AutoTokenizer

    from alignlab.errors import AlignlabError
    from alignlab.train.engine import _check_system_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                         "{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    _check_system_prompt(tok, None)
    with pytest.raises(AlignlabError, match="refuses the project's system_prompt: System role not supported"):
        _check_system_prompt(tok, "Be snarky.")


def test_init_stores_a_local_model_as_an_absolute_path_and_refuses_a_missing_one(monkeypatch, capsys, tmp_path, tiny_model):
    """`init p --model models/x` stored the path as typed: inside p it was taken for a hub id."""
    import shutil

    from alignlab.config import load_config

    shutil.copytree(tiny_model, tmp_path / "models" / "mine")
    code, lines = run_cli(monkeypatch, capsys, "init", "p", "--model", "models/mine", cwd=tmp_path)
    assert code == 0, lines
    assert load_config(tmp_path / "p" / "alignlab.yaml").model == str((tmp_path / "models" / "mine").resolve())
    code, lines = run_cli(monkeypatch, capsys, "init", "q", "--model", "./typo-dir", cwd=tmp_path)
    assert code == 2 and "no such file or directory" in one_error(lines) and not (tmp_path / "q").exists(), lines


def test_resume_refuses_settings_it_would_ignore(monkeypatch, capsys, tmp_path):
    """`--resume RUN --lr 1` trained on at the run's own rate without a word."""
    code, lines = run_cli(monkeypatch, capsys, "train", "sft", "--resume", str(tmp_path / "r"), "--lr", "1",
                          "--set", "train.seed=3", cwd=tmp_path)
    assert code == 2 and "--lr, --set would be ignored" in one_error(lines), lines


@pytest.mark.parametrize("override, refused", [
    ("learning_rate=0.5", "train.trainer_overrides.learning_rate would replace what alignlab sets itself (two values "
                          "for one setting, and the override would win) — set train.learning_rate (--lr) instead"),
    ("max_steps=3", "set train.max_steps (--max-steps) instead"),
    ("top_p=0.5", "set online.top_p instead"),
    ("remove_unused_columns=true", "would replace what alignlab sets itself"),
    ("bogus_key=3", "train.trainer_overrides.bogus_key is not an argument of TRL's DPOConfig"),
    ("adam_epsilonn=1e-8", "(did you mean adam_epsilon?)"),
    # a value TRL refuses: the run failed after the model had loaded
    ("optim=adamw_torchh", "train.trainer_overrides.optim: TRL's DPOConfig refuses it: adamw_torchh is not a valid"),
])
def test_trainer_overrides_are_checked_before_anything_loads(monkeypatch, capsys, tmp_path, override, refused):
    """An override of an argument alignlab sets trained 3 steps at lr 0.5 while config.yaml and the model card said
    1 step at 5e-5; an unknown one failed with a TypeError after the model had loaded and left a failed run."""
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), "--name", "o",
                          "--set", f"train.trainer_overrides.{override}", cwd=tmp_path)
    assert code == 2 and refused in one_error(lines), lines
    assert not (tmp_path / "runs" / "o").exists()


def test_every_argument_alignlab_sets_is_guarded(tiny_model, tmp_path):
    """The arguments the trainer is built with (training_args) are all owned or fixed: an override of one that the
    guard missed would win silently."""
    from alignlab.train import engine

    ctx = engine.prepare("dpo", cfg_for(tiny_model), str(pairs(tmp_path)), tmp_path / "runs", run_dir=Path("/dev/null"))
    assert set(ctx.training_args()) <= set(engine.OWNED_ARGS) | engine.FIXED_ARGS


def test_ppo_says_what_its_loop_ignores(capsys, tmp_path):
    """A project's settings for other methods (trainer_overrides, GRPO's group size, accumulation) were recorded in
    a PPO run's config.yaml as if used; they are named as ignored, and a project that holds them still runs PPO."""
    from types import SimpleNamespace

    from alignlab import methods
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train.engine import _check_trainer_overrides

    cfg = apply_overrides(ProjectConfig(), {"train.trainer_overrides": {"optim": "adafactor"}, "train.grad_accum": 4,
                                            "online.num_generations": 8})
    spec = methods.get("ppo")
    _check_trainer_overrides(cfg, "ppo", spec, "cpu")
    spec.load_recipe().check(SimpleNamespace(cfg=cfg, rows=[{"prompt": "Hi?"}]))
    err = " ".join(capsys.readouterr().err.split())
    assert "ppo runs its own loop and ignores train.trainer_overrides (optim)" in err
    assert "PPO does not accumulate gradients (train.grad_accum 4 is ignored)" in err
    assert "PPO draws one answer per prompt (online.num_generations 8, for GRPO and RLOO's groups, is ignored)" in err


def test_set_values_as_a_person_means_them():
    """--set read its value as YAML: ' #…' was cut off as a comment, 'a: b' became a mapping, '@x' a parser
    traceback; null (or nothing) was dropped, so nothing could be unset."""
    from alignlab.config import ProjectConfig, apply_overrides, parse_set

    got = parse_set(["persona=talks like a pirate #1", "system_prompt=Answer as: a pirate", "name=@home",
                     "train.batch_size=3", "lora.target_modules=[q_proj, v_proj]", "online.rewards=", "judge.model=null"])
    assert got == {"persona": "talks like a pirate #1", "system_prompt": "Answer as: a pirate", "name": "@home",
                   "train.batch_size": 3, "lora.target_modules": ["q_proj", "v_proj"], "online.rewards": None,
                   "judge.model": None}
    cfg = ProjectConfig(system_prompt="terse", train={"trainer_overrides": {"optim": "adafactor"}})
    unset = apply_overrides(cfg, parse_set(["system_prompt=null", "train.trainer_overrides.optim=null"]), keep_none=True)
    assert unset.system_prompt is None and unset.train.trainer_overrides == {}
    assert apply_overrides(cfg, {"system_prompt": None}).system_prompt == "terse"  # a flag not given changes nothing


def test_a_flag_and_set_for_one_key_and_a_bad_flag_value_are_named(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), "--lr", "1e-4",
                          "--set", "train.learning_rate=5e-4", cwd=tmp_path)
    assert code == 2 and "--lr and --set train.learning_rate both set train.learning_rate" in one_error(lines)
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)), "--lr", "-1",
                          cwd=tmp_path)
    assert code == 2 and one_error(lines).startswith("error: --lr: Input should be greater than 0"), lines
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--data", str(pairs(tmp_path)),
                          "--set", "train.bach_size=2", cwd=tmp_path)
    assert code == 2 and "(did you mean 'train.batch_size'?)" in one_error(lines)


def test_the_config_file_refuses_a_key_twice_and_a_boolean_opening(tmp_path):
    from alignlab.config import load_config

    path = tmp_path / "alignlab.yaml"
    path.write_text("train:\n  batch_size: 2\ndpo:\n  beta: 0.2\ntrain:\n  epochs: 2\n")
    with pytest.raises(AlignlabError, match=r"alignlab.yaml:5: .*duplicate key 'train' \(first on line 1\)"):
        load_config(path)
    path.write_text("base: &b {batch_size: 2, epochs: 2}\ntrain:\n  <<: *b\n  epochs: 3\n".replace("base:", "x_anchor:"))
    with pytest.raises(AlignlabError, match="unknown key 'x_anchor'"):  # merge keys still read; the stray key named
        load_config(path)
    path.write_text("sampling:\n  base_opening: on\n")  # YAML's `on` is True, which became a one-word opening
    with pytest.raises(AlignlabError, match="alignlab.yaml:2: 'sampling.base_opening': .*boolean"):
        load_config(path)
    path.write_text("train:\n  epochs: 1.0e9\n")
    with pytest.raises(AlignlabError, match="less than or equal to 10000"):
        load_config(path)


def test_a_project_named_like_a_number_reads_back(tmp_path, monkeypatch):
    """`alignlab init 1e5` wrote name 1e5 unquoted, which the loader read back as a float."""
    from alignlab.config import ProjectConfig, dump_config, load_config

    path = tmp_path / "alignlab.yaml"
    path.write_text(dump_config(ProjectConfig(persona="2e3", model="1e5")))
    cfg = load_config(path)
    assert (cfg.persona, cfg.model) == ("2e3", "1e5")


def test_relative_paths_in_the_config_mean_the_projects_files(tmp_path, monkeypatch):
    from alignlab.config import CONFIG_NAME, project_config

    root = tmp_path / "p"
    (root / "models" / "mine").mkdir(parents=True)
    (root / "rewards.yaml").write_text("components: []\n")
    (root / CONFIG_NAME).write_text("model: models/mine\nonline:\n  rewards: rewards.yaml\n")
    (root / "data").mkdir()
    monkeypatch.chdir(root / "data")  # a command run from a subdirectory
    cfg, _ = project_config()
    assert cfg.model == str((root / "models" / "mine").resolve())
    assert cfg.online.rewards == str((root / "rewards.yaml").resolve())
    monkeypatch.chdir(tmp_path)
    assert project_config(root)[0].online.rewards == str((root / "rewards.yaml").resolve())  # --project from outside
    (root / CONFIG_NAME).write_text("model: smollm2-135m\n")
    assert project_config(root)[0].model == "smollm2-135m"  # a registry name stays a name


def test_the_loop_names_its_flags_too(monkeypatch, capsys, tmp_path):
    from alignlab.config import CONFIG_NAME

    (tmp_path / CONFIG_NAME).write_text("persona: terse\n")
    code, lines = run_cli(monkeypatch, capsys, "loop", "--rounds", "1", "--max-steps", "5", "--set",
                          "train.max_steps=0", cwd=tmp_path)
    assert code == 2 and "--max-steps and --set train.max_steps both set train.max_steps" in one_error(lines), lines


def test_set_keeps_what_a_person_typed_and_what_yaml_means():
    """A flow mapping stays a mapping (lr_scheduler_kwargs={min_lr: 1e-6} trained before); '#1 rule' is text, not
    a comment that unset the key; base_opening off is off (a YAML boolean false)."""
    from alignlab.config import ProjectConfig, parse_set

    got = parse_set(["train.trainer_overrides.lr_scheduler_kwargs={min_lr: 1e-6}", "system_prompt=#1 rule: never lie",
                     "a=3"])
    assert got == {"train.trainer_overrides.lr_scheduler_kwargs": {"min_lr": 1e-6}, "system_prompt": "#1 rule: never lie",
                   "a": 3}
    assert ProjectConfig.model_validate({"sampling": {"base_opening": False}}).sampling.base_opening is None


def test_set_edges_and_a_mapping_merged_into_its_section():
    from alignlab.config import ProjectConfig, apply_overrides, parse_set

    got = parse_set(["persona={snarky, but correct}", "system_prompt=null # none", "judge.model=~ #x", "x=#",
                     "lora={r: 8}"])
    assert got == {"persona": "{snarky, but correct}", "system_prompt": None, "judge.model": None, "x": "#",
                   "lora": {"r": 8}}
    cfg = ProjectConfig(lora={"r": 32, "alpha": 64, "target_modules": ["q_proj", "v_proj"]},
                        train={"trainer_overrides": {"optim": "adafactor"}})
    moved = apply_overrides(cfg, parse_set(["lora={r: 8}", "train.trainer_overrides={max_grad_norm_x: 1}"]))
    assert (moved.lora.r, moved.lora.alpha, moved.lora.target_modules) == (8, 64, ["q_proj", "v_proj"])
    assert moved.train.trainer_overrides == {"max_grad_norm_x": 1}  # the free-form mapping is replaced, as given


def test_the_loop_refuses_any_of_its_flags_beside_set(monkeypatch, capsys, tmp_path):
    from alignlab.config import CONFIG_NAME

    (tmp_path / CONFIG_NAME).write_text("persona: terse\n")
    code, lines = run_cli(monkeypatch, capsys, "loop", "--rounds", "1", "--rater", "scorecard", "--set",
                          "loop.rater=contrast", cwd=tmp_path)
    assert code == 2 and "--rater and --set loop.rater both set loop.rater" in one_error(lines), lines


@pytest.mark.parametrize("override, ok", [("use_vllm=true", False), ("vllm_mode=server", True),
                                          ("log_completions=true", True)])
def test_vllm_use_is_the_config_key_and_logging_completions_is_allowed(override, ok):
    from alignlab import methods
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train.engine import _check_trainer_overrides

    cfg = apply_overrides(ProjectConfig(), {f"train.trainer_overrides.{override.split('=')[0]}": True})
    if ok:
        _check_trainer_overrides(cfg, "grpo", methods.get("grpo"), "cpu")
    else:
        with pytest.raises(AlignlabError, match="set online.use_vllm instead"):
            _check_trainer_overrides(cfg, "grpo", methods.get("grpo"), "cpu")


def test_a_loop_round_resumed_with_new_overrides_is_checked(tiny_model, tmp_path):
    """The loop resumes a round with its current config: prepare() skipped the check whenever run.json existed, so
    a bogus override reached TRL after the model loaded. Only `train --resume` (the run's own config) skips it."""
    from alignlab.config import apply_overrides
    from alignlab.train import engine

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"method": "dpo", "status": "interrupted"}))
    cfg = apply_overrides(cfg_for(tiny_model), {"train.trainer_overrides": {"bogus_key": 3}})
    with pytest.raises(AlignlabError, match="bogus_key is not an argument"):
        engine.prepare("dpo", cfg, str(pairs(tmp_path)), tmp_path / "runs", run_dir=run)
    engine.prepare("dpo", cfg_for(tiny_model), str(pairs(tmp_path)), tmp_path / "runs", run_dir=run)


def test_a_section_mapping_cannot_slip_past_a_flag_and_empty_overrides_clear():
    from alignlab.config import ProjectConfig, apply_flags

    cfg = ProjectConfig(train={"trainer_overrides": {"optim": "adafactor"}})
    with pytest.raises(AlignlabError, match="--lr and --set train.learning_rate both set"):
        apply_flags(cfg, {"train.learning_rate": 1e-4}, {"train.learning_rate": "--lr"}, ["train={learning_rate: 5e-5}"])
    assert apply_flags(cfg, {}, {}, ["train.trainer_overrides={}"]).train.trainer_overrides == {}


def test_runs_lists_by_start_survives_a_damaged_record_and_shows_how_far_an_unfinished_run_got(tmp_path, monkeypatch):
    """One run.json with "final": null stopped the whole listing with a TypeError; runs came in name order, and an
    interrupted run showed '-' steps whatever its logs said."""
    import json as _json

    from typer.testing import CliRunner

    from alignlab.cli import app

    def run(name, info, started, steps=()):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        (d / "run.json").write_text(_json.dumps(info))
        (d / "env.json").write_text(_json.dumps({"time": started}))
        (d / "metrics.jsonl").write_text("".join(_json.dumps({"step": s, "loss": 1.0}) + "\n" for s in steps))

    run("b-first", {"method": "dpo", "status": "done", "steps": 4, "final": None}, "2026-12-01T10:00:00")
    run("a-second", {"method": "sft", "status": "interrupted", "final": {"loss": "abc"}}, "2026-12-02T10:00:00",
        steps=(1, 2, 3))
    monkeypatch.setenv("COLUMNS", "200")
    out = CliRunner().invoke(app, ["runs", "--runs-dir", str(tmp_path / "runs")])
    assert out.exit_code == 0, out.output
    lines = [x for x in out.output.splitlines() if "first" in x or "second" in x]
    assert [x.split()[1] for x in lines] == ["b-first", "a-second"]
    assert "interrupted" in lines[1] and " 3 " in lines[1]


def test_a_workflow_writes_over_no_project_and_no_file_in_the_way(monkeypatch, capsys, tmp_path, tiny_model):
    """`alignlab pipeline --out .` in a project replaced its data/sft.jsonl and runs/sft without a word;
    `--out afile` was a FileExistsError."""
    from alignlab.fsutil import claim_dir

    proj = tmp_path / "proj"
    code, _ = run_cli(monkeypatch, capsys, "init", str(proj), "--model", tiny_model, cwd=tmp_path)
    before = (proj / "data" / "pairs.jsonl").read_bytes()
    rewards = (proj / "rewards.yaml").read_bytes()  # init's starter reward spec; pipeline writes its own elsewhere
    for cmd in (["pipeline", "--out", str(proj), "--model", tiny_model], ["break", "label-flip", "--out", str(proj),
                                                                            "--model", tiny_model]):
        code, lines = run_cli(monkeypatch, capsys, *cmd, cwd=tmp_path)
        assert code == 2 and f"{proj} holds files `alignlab {cmd[0]}` did not write (alignlab.yaml" in one_error(lines)
        assert "--force" in one_error(lines)
    assert (proj / "data" / "pairs.jsonl").read_bytes() == before and (proj / "rewards.yaml").read_bytes() == rewards
    (tmp_path / "afile").write_text("x")
    code, lines = run_cli(monkeypatch, capsys, "pipeline", "--out", str(tmp_path / "afile"), "--model", tiny_model,
                          cwd=tmp_path)
    assert code == 2 and one_error(lines) == f"error: {tmp_path / 'afile'} is a file, so {tmp_path / 'afile'} cannot " \
                                             "be made — pass a new --out directory"
    mine = claim_dir(tmp_path / "out", "pipeline", "x")  # its own folder, written again: no refusal
    (mine / "runs").mkdir()
    assert claim_dir(mine, "pipeline", "x") == mine and claim_dir(proj, "pipeline", "x", force=True) == proj


def test_init_refuses_an_unknown_model_name_and_a_file_where_data_goes(monkeypatch, capsys, tmp_path):
    code, lines = run_cli(monkeypatch, capsys, "init", "p5", "--model", "smollm2-135x", cwd=tmp_path)
    assert code == 2 and "unknown model 'smollm2-135x'" in one_error(lines) and not (tmp_path / "p5").exists()
    (tmp_path / "q2").mkdir()
    (tmp_path / "q2" / "data").write_text("x")
    code, lines = run_cli(monkeypatch, capsys, "init", "q2", cwd=tmp_path)
    assert code == 2 and "q2/data is a file, so the project's data/ cannot be made there" in one_error(lines)


def test_a_bad_device_in_the_config_names_its_line_and_an_emptied_section_is_its_defaults(monkeypatch, capsys, tmp_path):
    from alignlab.config import load_config

    cfg = tmp_path / "alignlab.yaml"
    cfg.write_text("train:\n  device: tpu\n")
    code, lines = run_cli(monkeypatch, capsys, "config", "show", cwd=tmp_path)
    assert code == 2 and f"{cfg}:2: 'train.device'" in one_error(lines) and "unknown device 'tpu'" in one_error(lines)
    cfg.write_text("judge:\n  # url: http://127.0.0.1:8000/v1\n")
    assert load_config(cfg).judge.url is None


def test_rounds_in_a_project_with_no_feedback_yet_says_no_rounds(monkeypatch, capsys, tmp_path):
    run_cli(monkeypatch, capsys, "init", "p", cwd=tmp_path)
    monkeypatch.chdir(tmp_path / "p")
    monkeypatch.setattr(sys, "argv", ["alignlab", "rounds"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code in (0, None) and "no rounds yet: run `alignlab loop --rounds 1`" in capsys.readouterr().out
    assert not (tmp_path / "p" / "feedback.db").exists()


def test_override_values_are_checked_one_by_one_and_good_ones_pass():
    """The refused override is named among several; values TRL takes pass (they reach the run unchanged)."""
    from alignlab import methods
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train.engine import _check_trainer_overrides

    spec = methods.get("sft")
    good = {"optim": "adafactor", "adam_beta2": 0.99, "lr_scheduler_kwargs": {"num_cycles": 2}}
    _check_trainer_overrides(apply_overrides(ProjectConfig(), {"train.trainer_overrides": good}), "sft", spec, "cpu")
    bad = apply_overrides(ProjectConfig(), {"train.trainer_overrides": {**good, "load_best_model_at_end": True}})
    with pytest.raises(AlignlabError, match="trainer_overrides.load_best_model_at_end: TRL's SFTConfig refuses it: "
                                            "--load_best_model_at_end requires the save and eval strategy to match"
                                            r".* but found"):  # the whole reason, its lines joined
        _check_trainer_overrides(bad, "sft", spec, "cpu")
    # a reward model evaluates as it saves: TRL takes the same override there, and so does the check
    _check_trainer_overrides(bad, "rm", methods.get("rm"), "cpu")
    with pytest.raises(AlignlabError, match=r"train.trainer_overrides.debug: TRL's SFTConfig refuses it"):
        _check_trainer_overrides(apply_overrides(ProjectConfig(), {"train.trainer_overrides": {
            "adam_beta2": 0.99, "debug": "nonsense_option"}}), "sft", spec, "cpu")

"""`alignlab train METHOD --from RUN`: what a run continues from is what it trains (a LoRA adapter with its own
settings, a full fine-tune's whole weights), of the same base and task, and the run records that."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from alignlab.errors import AlignlabError
from alignlab.train import engine
import helpers
from helpers import cfg_for, one_error, write_pairs

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/train/conftest.py


def run_cli(monkeypatch, capsys, cwd, *args):
    return helpers.run_cli(monkeypatch, capsys, *args, cwd=cwd)


@pytest.fixture(scope="module")
def starts(tiny_model, tmp_path_factory):
    """One step each of a LoRA SFT run, a full SFT run, a reward model and an all-linear LoRA SFT run, the runs a
    later run continues from."""
    d = tmp_path_factory.mktemp("from")
    sft = d / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"Name a colour, #{i}.", "completion": "Blue. Obviously."}) + "\n"
                           for i in range(8)))
    pairs = write_pairs(d / "pairs.jsonl", n=8)
    out = {"dir": d, "pairs": pairs}
    for name, method, data, extra in (("lora", "sft", sft, {}), ("full", "sft", sft, {"lora.enabled": False}),
                                      ("rm", "rm", pairs, {}),
                                      ("all", "sft", sft, {"lora.target_modules": "all-linear"})):
        cfg = cfg_for(tiny_model, **{"train.max_steps": 1, **extra})
        out[name] = engine.run(engine.prepare(method, cfg, str(data), d / "runs", name=name), str(data))
    return out


def test_a_full_fine_tune_is_continued_whole_with_itself_as_the_reference(monkeypatch, capsys, tiny_model, starts):
    """`--from` a full fine-tune loaded PEFT's adapter_config.json from it and failed after the model had loaded."""
    code, lines = run_cli(monkeypatch, capsys, starts["dir"], "train", "dpo", "--model", tiny_model, "--from",
                          str(starts["full"]), "--data", str(starts["pairs"]), "--max-steps", "1", "--name", "dfull",
                          "--set", "train.check_per_category=0", "--set", "train.sample_prompts=0")
    assert code in (0, None), lines
    run = starts["dir"] / "runs" / "dfull"
    assert json.loads((run / "run.json").read_text())["lora"] is False
    assert yaml.safe_load((run / "config.yaml").read_text())["lora"]["enabled"] is False
    assert (run / "adapter" / "model.safetensors").is_file() and not (run / "adapter" / "adapter_config.json").exists()
    first = next(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in x)
    # the policy and its reference are both the start at step 1 (a bare-base reference would give nonzero rewards)
    assert first["rewards/chosen"] == 0 and first["rewards/rejected"] == 0, first


def test_lora_flags_beside_from_are_refused_and_the_adapters_own_settings_recorded(monkeypatch, capsys, tiny_model,
                                                                                   starts):
    """`--from RUN --lora-r 4 --set lora.target_modules=[q_proj]` recorded r=4 and q_proj while PEFT went on with the
    adapter's r=16 on every projection; `--full --from` a LoRA run recorded a full fine-tune."""
    base = ("train", "dpo", "--model", tiny_model, "--data", str(starts["pairs"]), "--name", "refused")
    for args, needle in ((("--from", str(starts["lora"]), "--lora-r", "4"), "--lora-r asks for lora.r 4"),
                         (("--from", str(starts["lora"]), "--set", "lora.target_modules=[q_proj]"),
                          "--set lora.target_modules asks for lora.target_modules ['q_proj']"),
                         (("--from", str(starts["lora"]), "--full"), "--full asks for a full fine-tune"),
                         (("--from", str(starts["full"]), "--lora-alpha", "8"), "is a full fine-tune"),
                         # the two halves were swapped: "asks for a full fine-tune, but ... trained a LoRA adapter"
                         (("--from", str(starts["full"]), "--set", "lora.enabled=true"),
                          f"--set lora.enabled asks for a LoRA adapter, but run {starts['full']} trained a full "
                          "fine-tune")):
        code, lines = run_cli(monkeypatch, capsys, starts["dir"], *base, *args)
        assert code == 2 and needle in one_error(lines), (args, lines)
        assert not (starts["dir"] / "runs" / "refused").exists()
    # the project's own settings (not flags) give way to the adapter's, and the run records what it trains
    own = json.loads((starts["lora"] / "adapter" / "adapter_config.json").read_text())
    cfg = cfg_for(tiny_model, **{"lora.r": 4, "lora.alpha": 8, "lora.target_modules": ["q_proj"]})
    ctx = engine.prepare("dpo", cfg, str(starts["pairs"]), starts["dir"] / "runs", run_dir=Path(os.devnull),
                         init_adapter=str(starts["lora"]))
    lora = ctx.cfg.lora
    assert (lora.r, lora.alpha, sorted(lora.target_modules)) == (own["r"], own["lora_alpha"], sorted(own["target_modules"]))


def test_a_run_of_another_task_is_no_start(tiny_model, starts):
    """DPO from a reward model finished 'done' with a score head saved as a chat adapter; RM from an SFT run failed
    after loading."""
    with pytest.raises(AlignlabError, match=r"is a reward model \(rm\); dpo trains a chat model"):
        engine.prepare("dpo", cfg_for(tiny_model), str(starts["pairs"]), starts["dir"] / "runs",
                       init_adapter=str(starts["rm"]))
    with pytest.raises(AlignlabError, match=r"is a chat model \(sft\); rm trains a reward model"):
        engine.prepare("rm", cfg_for(tiny_model), str(starts["pairs"]), starts["dir"] / "runs",
                       init_adapter=str(starts["lora"]))


def test_a_local_model_path_is_recorded_whole(monkeypatch, tiny_model, starts, tmp_path):
    """`--model ../tiny` was recorded as typed (a resume from elsewhere took it for a hub id), and `--model tiny/`
    was another base than the `tiny` a run was trained on."""
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(tiny_model, tmp_path)
    ctx = engine.prepare("dpo", cfg_for(relative), str(starts["pairs"]), starts["dir"] / "runs", run_dir=Path(os.devnull))
    assert ctx.cfg.model == str(Path(tiny_model).resolve())
    engine.prepare("dpo", cfg_for(tiny_model + "/"), str(starts["pairs"]), starts["dir"] / "runs",
                   run_dir=Path(os.devnull), init_adapter=str(starts["lora"]))
    # a run recorded with the slash (before paths were made whole) is the same base too
    old = tmp_path / "old"
    shutil.copytree(starts["lora"], old)
    info = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**info, "model": tiny_model + "/", "project": None}))
    engine.prepare("dpo", cfg_for(tiny_model), str(starts["pairs"]), starts["dir"] / "runs", run_dir=Path(os.devnull),
                   init_adapter=str(old))


LLAMA_LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]  # all but lm_head


def test_an_all_linear_adapter_is_continued_as_all_linear(tiny_model, starts):
    """PEFT saves all-linear's layers by their dotted names: `--from` such a run beside `--set
    lora.target_modules=all-linear` was refused ("run trained ['model.layers.0.mlp.down_proj', ...]"), and without
    the flag config.yaml recorded the 14 dotted names."""
    saved = json.loads((starts["all"] / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert any("." in t for t in saved), saved  # what PEFT writes, which this test is about
    flag = {"lora.target_modules": "--set lora.target_modules"}
    for targets in ("all-linear", LLAMA_LINEAR, None):
        cfg = cfg_for(tiny_model, **({"lora.target_modules": targets} if targets else {}))
        ctx = engine.prepare("dpo", cfg, str(starts["pairs"]), starts["dir"] / "runs", run_dir=Path(os.devnull),
                             init_adapter=str(starts["all"]), lora_flags=flag if targets else {})
        assert ctx.cfg.lora.target_modules == LLAMA_LINEAR, targets
    with pytest.raises(AlignlabError, match=r"asks for lora.target_modules \['q_proj'\], but run .* trained "
                                            r"lora.target_modules \['down_proj', 'gate_proj'"):
        engine.prepare("dpo", cfg_for(tiny_model, **{"lora.target_modules": ["q_proj"]}), str(starts["pairs"]),
                       starts["dir"] / "runs", run_dir=Path(os.devnull), init_adapter=str(starts["all"]),
                       lora_flags=flag)


def test_a_run_an_older_version_recorded_with_a_relative_model_is_a_start(tiny_model, starts, tmp_path, monkeypatch):
    """An older version recorded `--model ../../tiny` as typed: `--from` that run with the same --model was refused
    ("trained on '../../tiny', not '/x/tiny' - use --model ../../tiny"), and so was a resume of a run started from it,
    which has no --model to give."""
    work = tmp_path / "a" / "b"
    old = work / "runs" / "oldsft"
    shutil.copytree(starts["lora"], old)
    relative = os.path.relpath(tiny_model, work)
    info = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**info, "model": relative, "project": None}))
    monkeypatch.chdir(work)
    for resumed in (False, True):
        ctx = engine.prepare("dpo", cfg_for(relative), str(starts["pairs"]), Path("runs"), run_dir=Path(os.devnull),
                             init_adapter="runs/oldsft", resumed=resumed)
        assert ctx.init_adapter.resolve() == (old / "adapter").resolve()
    # recorded relative to the project it was trained in, and continued from elsewhere
    (work / "alignlab.yaml").write_text("name: old\n")
    monkeypatch.chdir(tmp_path)
    engine.prepare("dpo", cfg_for(tiny_model), str(starts["pairs"]), work / "runs", run_dir=Path(os.devnull),
                   init_adapter=str(old))
    with pytest.raises(AlignlabError, match="was trained on"):  # another base is still another base
        engine.prepare("dpo", cfg_for(str(starts["full"] / "adapter")), str(starts["pairs"]), work / "runs",
                       run_dir=Path(os.devnull), init_adapter=str(old))

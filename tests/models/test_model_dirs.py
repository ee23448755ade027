"""A model directory that loaded wrong or failed with transformers' own report: each is one line now. Weights the
checkpoint lacks (transformers made them random, silently), weights of other shapes than config.json says, a weights
file cut short, an architecture transformers does not know (and `train` left a run directory behind), a tokenizer
without a padding or end token; devices torch parses that nothing here runs on; an adapter passed as a model."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from helpers import one_error, run_cli, write_pairs

from alignlab.errors import AlignlabError

MISSING = "model.layers.1.mlp.up_proj.weight"


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def broken(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Copies of the tiny model, each damaged one way."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("broken")
    out = {name: Path(shutil.copytree(tiny_model, root / name)) for name in
           ("missing", "untied", "shapes", "cut", "unknown", "noeos", "nopad")}
    weights = load_file(str(out["missing"] / "model.safetensors"))
    del weights[MISSING]
    save_file(weights, str(out["missing"] / "model.safetensors"), metadata={"format": "pt"})
    _edit_json(out["untied"] / "config.json", tie_word_embeddings=False)  # a head of its own, which the file lacks
    _edit_json(out["shapes"] / "config.json", intermediate_size=256)  # the weights are 128 wide
    whole = (out["cut"] / "model.safetensors").read_bytes()
    (out["cut"] / "model.safetensors").write_bytes(whole[: len(whole) // 2])
    _edit_json(out["unknown"] / "config.json", model_type="foomodel", architectures=["FooForCausalLM"])
    _edit_json(out["noeos"] / "tokenizer_config.json", eos_token=None, pad_token=None)
    _edit_json(out["nopad"] / "tokenizer_config.json", eos_token=None, pad_token=None)  # kept whole: noeos is edited
    return out


def test_weights_the_checkpoint_lacks_are_refused_not_made_random(broken, tiny_model):
    """A model.safetensors without one MLP weight loaded with that weight random, and trained on; an untied config
    whose file has no lm_head likewise. A reward model's new score head is the one weight that may be missing."""
    from alignlab.models.loading import load_base, load_sequence_classifier

    for load in (load_base, load_sequence_classifier):
        with pytest.raises(AlignlabError) as err:
            load(str(broken["missing"]))
        assert f"model '{broken['missing']}' lacks 1 of its weights (e.g. {MISSING})" in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(AlignlabError, match=r"lacks 1 of its weights \(e\.g\. lm_head\.weight\)"):
        load_base(str(broken["untied"]))
    assert load_sequence_classifier(tiny_model).score.weight.shape[0] == 1


@pytest.mark.parametrize("case, needle", [
    ("shapes", "the config.json of '{dir}' does not match its weights: model.layers.0.mlp.down_proj.weight is "
               "[64, 128] in the weights, [64, 256] by config.json"),
    ("cut", "{dir}/model.safetensors is truncated or damaged"),
    ("unknown", "{dir}/config.json: model '{dir}' is of a type transformers"),
])
def test_a_damaged_model_directory_is_one_line(broken, hf_log, case, needle):
    """config.json against its weights: a load report table, then a RuntimeError naming ignore_mismatched_sizes; a cut
    file: a bare SafetensorError naming no file; an unknown model_type: transformers' several-line ValueError."""
    from alignlab.models.loading import load_base, load_sequence_classifier

    for load in (load_base, load_sequence_classifier):
        with pytest.raises(AlignlabError) as err:
            load(str(broken[case]))
        assert needle.format(dir=broken[case]) in str(err.value) and "\n" not in str(err.value)
    assert not [x for x in hf_log if "LOAD REPORT" in x]  # transformers' table above alignlab's line


def test_an_unknown_architecture_leaves_no_run_directory(broken, monkeypatch, capsys, tmp_path):
    """`alignlab train` made runs/<id>/ and then failed loading the base: a weightless run was left behind."""
    data = write_pairs(tmp_path / "pairs.jsonl", 4)
    code, lines = run_cli(monkeypatch, capsys, "train", "dpo", "--model", str(broken["unknown"]), "--data", str(data),
                          "--max-steps", "1", cwd=tmp_path)
    assert code == 2 and "('foomodel')" in one_error(lines) and "upgrade transformers" in one_error(lines), lines
    assert not list(tmp_path.glob("runs/*"))


def test_data_check_reads_the_tokenizer_of_a_model_transformers_cannot_load(broken, monkeypatch, capsys, tmp_path):
    """`data check --model DIR` needs the tokenizer alone, which loads: the architecture check that train runs before
    making its run directory refused such a model here too."""
    data = write_pairs(tmp_path / "pairs.jsonl", 4)
    code, lines = run_cli(monkeypatch, capsys, "data", "check", str(data), "--model", str(broken["unknown"]),
                          cwd=tmp_path)
    assert code == 0 and not [x for x in lines if x.startswith("error:")], lines


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """LoRA adapters over the tiny model, saved by PEFT: a causal LM's (export --merged) and a reward model's, its
    score head in modules_to_save, in a run directory whose run.json each test points at a base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("adapters")
    torch.manual_seed(0)
    for task, auto, where in (("CAUSAL_LM", AutoModelForCausalLM, root / "lora"),
                              ("SEQ_CLS", AutoModelForSequenceClassification, root / "rm" / "adapter")):
        model = auto.from_pretrained(tiny_model, **({"num_labels": 1} if task == "SEQ_CLS" else {}))
        get_peft_model(model, LoraConfig(task_type=task, r=2, target_modules=["q_proj"])).save_pretrained(str(where))
    return {"lora": root / "lora", "rm": root / "rm"}


def test_export_and_the_reward_model_load_the_base_as_train_does(broken, adapters, tmp_path):
    """export --merged and the reward model called from_pretrained themselves: a base without one MLP weight merged
    into a model with that weight random (and a full fine-tune likewise), and scored with it. The reward model set
    pad = eos, None for a tokenizer with neither, and its first batch of two lengths failed."""
    from alignlab.export.merge import merge_to_dir
    from alignlab.rewards.rm import RewardModel

    lacks = f"model '{broken['missing']}' lacks 1 of its weights (e.g. {MISSING})"
    with pytest.raises(AlignlabError, match=re.escape(lacks)):
        merge_to_dir(adapters["lora"], tmp_path / "merged", model=str(broken["missing"]))
    full = tmp_path / "full"
    shutil.copytree(broken["missing"], full / "adapter")
    (full / "run.json").write_text(json.dumps({"model": str(broken["missing"]), "method": "sft"}))
    with pytest.raises(AlignlabError, match=re.escape(f"lacks 1 of its weights (e.g. {MISSING})")):
        merge_to_dir(full, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    run = adapters["rm"]
    (run / "run.json").write_text(json.dumps({"model": str(broken["missing"]), "method": "rm"}))
    with pytest.raises(AlignlabError, match=re.escape(lacks)):
        RewardModel(run, device="cpu")
    (run / "run.json").write_text(json.dumps({"model": str(broken["nopad"]), "method": "rm"}))
    rm = RewardModel(run, device="cpu")
    assert rm.tokenizer.pad_token == "<|im_end|>"
    scores = rm(["Hi.", "What is 2 + 2?"], ["Hello.", "Four, and that is all there is to it."])
    assert len(scores) == 2 and all(math.isfinite(x) for x in scores)


def test_a_tokenizer_without_pad_or_eos_takes_the_models_eos(broken):
    """No pad and no eos token: batches failed with "Asking to pad but the tokenizer does not have a padding token".
    The model's config names its end token; without that either, one line names the directory."""
    from alignlab.models.loading import load_tokenizer

    tok = load_tokenizer(str(broken["noeos"]))
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert tok(["hi", "a longer one"], padding=True)["input_ids"][0][-1] == tok.convert_tokens_to_ids("<|im_end|>")
    for name in ("config.json", "generation_config.json"):
        _edit_json(broken["noeos"] / name, eos_token_id=None)
    with pytest.raises(AlignlabError, match="has neither a padding nor an end-of-sequence token") as err:
        load_tokenizer(str(broken["noeos"]))
    assert str(err.value).startswith(f"{broken['noeos']}: ")


@pytest.mark.parametrize("device", ["meta", "xla", "vulkan", "hpu:0"])
def test_devices_nothing_here_runs_on_are_unknown(device):
    """torch parses these names, and the model failed once it had loaded."""
    from alignlab.models.loading import pick_device

    with pytest.raises(AlignlabError, match=f"unknown device '{device}'"):
        pick_device(device)
    assert pick_device("cpu") == "cpu"


def test_an_adapter_directory_as_a_model_names_its_run(tmp_path):
    """`--model proj/runs/x/adapter` said "not a model directory (no config.json)", then "pass --run runs/x" to train
    and data check too, which have no --run: each command's way to its run is named, and the base the run records."""
    from alignlab.models.registry import resolve_model

    adapter = tmp_path / "runs" / "x" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/peft-base"}))
    (adapter.parent / "run.json").write_text(json.dumps({"model": "smollm2-135m"}))
    with pytest.raises(AlignlabError, match="is an adapter") as err:
        resolve_model(str(adapter))
    run = adapter.parent
    assert str(err.value).endswith(f"name its run: --run {run} (generate, chat), {run} (eval, serve, export), --from "
                                   f"{run} (train); or its base: --model smollm2-135m"), str(err.value)
    (adapter.parent / "run.json").unlink()  # an adapter copied out of its run: its base, or the run
    with pytest.raises(AlignlabError, match="is an adapter") as err:
        resolve_model(str(adapter))
    assert "--from RUN (train); or its base: --model org/peft-base" in str(err.value)


def test_a_tiny_gemma3_of_an_odd_layer_count_builds(tmp_path):
    """make_tiny_model(arch="gemma3", layers=3) gave a layer_types list of 2 for 3 layers and failed."""
    from transformers import AutoConfig

    from alignlab.models.tiny import make_tiny_model

    path = make_tiny_model(tmp_path / "g3", arch="gemma3", layers=3)
    assert AutoConfig.from_pretrained(str(path)).layer_types == ["sliding_attention", "full_attention",
                                                                 "sliding_attention"]

"""FSDP / DeepSpeed: the adapter is written from the gathered state dict (never from local shards), a ZeRO-3
config that cannot gather says so, and configs this machine cannot run are refused in one line.

A real FSDP run needs CUDA GPUs; these tests check the pieces on CPU."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from alignlab.errors import AlignlabError
from alignlab.rundir import save_adapter
from alignlab.train.engine import gathered_state_dict


@pytest.fixture
def peft_model(tiny_model):
    from peft import LoraConfig, get_peft_model

    from alignlab.models.loading import load_base

    return get_peft_model(load_base(tiny_model), LoraConfig(r=2, target_modules=["q_proj"]))


def test_the_gathered_state_dict_is_what_gets_written(peft_model, tmp_path):
    """The module's own LoRA B is zero (a shard would look like this); the gathered dict holds 7s: 7s are saved."""
    gathered = {k: (torch.full_like(v, 7.0) if "lora_B" in k else v) for k, v in peft_model.state_dict().items()}
    save_adapter(peft_model, tmp_path / "adapter", state_dict=gathered)
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and all((v == 7.0).all() for v in lora_b)
    assert all(p.abs().sum() == 0 for n, p in peft_model.named_parameters() if "lora_B" in n)


def test_non_finite_gathered_weights_are_refused(peft_model, tmp_path):
    gathered = {k: (torch.full_like(v, float("nan")) if "lora_B" in k else v) for k, v in peft_model.state_dict().items()}
    with pytest.raises(AlignlabError, match="non-finite"):
        save_adapter(peft_model, tmp_path / "adapter", state_dict=gathered)
    assert not (tmp_path / "adapter").exists()


def _trainer(kind, get_state_dict):
    from accelerate.utils import DistributedType

    acc = SimpleNamespace(distributed_type=getattr(DistributedType, kind), get_state_dict=get_state_dict)
    return SimpleNamespace(accelerator=acc, model_wrapped="wrapped")


def test_gathering_goes_through_accelerate_only_when_sharded():
    calls = []
    assert gathered_state_dict(_trainer("MULTI_CPU", calls.append)) is None and calls == []
    assert gathered_state_dict(_trainer("FSDP", lambda m: calls.append(m) or {"w": 1})) == {"w": 1}
    assert calls == ["wrapped"]  # the wrapped model: accelerate gathers its shards


def test_zero3_without_gathering_says_how_to_fix():
    def refuse(model):
        raise ValueError("Cannot get 16bit model weights because `stage3_gather_16bit_weights_on_model_save` is False")

    with pytest.raises(AlignlabError, match="stage3_gather_16bit_weights_on_model_save: true"):
        gathered_state_dict(_trainer("DEEPSPEED", refuse))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_sharded_configs_without_cuda_are_refused(tmp_path, kind):
    from alignlab.cli.train import check_accelerate_config

    cfg = tmp_path / "accelerate.yaml"
    cfg.write_text(f"distributed_type: {kind}\nnum_processes: 2\n")
    with pytest.raises(AlignlabError, match=f"{kind} .* needs CUDA GPUs; this machine has none"):
        check_accelerate_config(cfg)
    # what `accelerate config` writes for CPU processes: `accelerate launch` ran it as one process, saying nothing
    (tmp_path / "ddp.yaml").write_text("distributed_type: MULTI_CPU\nnum_processes: 2\nuse_cpu: true\n")
    with pytest.raises(AlignlabError, match="runs as one process here — for data-parallel CPU processes use --processes N"):
        check_accelerate_config(tmp_path / "ddp.yaml")
    (tmp_path / "one.yaml").write_text("distributed_type: NO\nnum_processes: 1\n")
    check_accelerate_config(tmp_path / "one.yaml")  # one plain process passes


@pytest.mark.parametrize("config, refused", [
    ("distributed_type: FSDP\nnum_processes: 2\n", "FSDP over 2 processes"),
    ("distributed_type: DEEPSPEED\nnum_processes: 1\ndeepspeed_config:\n  zero_stage: 3\n", "DeepSpeed ZeRO-3"),
])
def test_sharding_the_lm_head_is_refused_in_one_line(tmp_path, monkeypatch, config, refused):
    """The log-prob kernel reads the head's weight whole: sharded heads are refused before anything launches (a
    GPU machine is pretended so the CUDA check passes)."""
    from alignlab.cli.train import check_accelerate_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = tmp_path / "accelerate.yaml"
    cfg.write_text(config)
    with pytest.raises(AlignlabError, match=f"{refused} .* not supported yet"):
        check_accelerate_config(cfg)
    cfg.write_text("distributed_type: FSDP\nnum_processes: 1\n")  # one process: the head is whole (run on an H200)
    check_accelerate_config(cfg)


def test_a_run_launched_through_accelerate_is_resumed_through_it(tmp_path, monkeypatch, capsys):
    """Resumed without its --accelerate-config, a DeepSpeed run was relaunched as plain torchrun DDP; with it, the
    resume was refused for a --processes nobody gave."""
    import json
    import sys

    from alignlab.cli import main
    from alignlab.config import ProjectConfig, dump_config

    run = tmp_path / "runs" / "ds"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(ProjectConfig()))
    (run / "run.json").write_text(json.dumps({"method": "dpo", "status": "interrupted", "processes": 2,
                                              "launch": f"accelerate:{tmp_path / 'ds.yaml'}", "data": "d.jsonl"}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["alignlab", "train", "dpo", "--resume", str(run)])
    with pytest.raises(SystemExit) as done:
        main()
    err = " ".join(capsys.readouterr().err.split())
    assert done.value.code == 2 and f"was launched with --accelerate-config {tmp_path / 'ds.yaml'}" in err


def test_resume_launches_the_way_the_run_was_launched(tmp_path, monkeypatch):
    import json

    from alignlab.cli.train import _resumed_processes

    run = tmp_path / "r"
    run.mkdir()
    for launch, processes, given, expected in (("torchrun", 2, None, 2), (None, 1, None, 1)):
        (run / "run.json").write_text(json.dumps({"processes": processes, **({"launch": launch} if launch else {})}))
        assert _resumed_processes(run, 1, given) == expected
    (run / "run.json").write_text(json.dumps({"processes": 2, "launch": "torchrun"}))
    with pytest.raises(AlignlabError, match="was launched with --processes 2, not through accelerate"):
        _resumed_processes(run, 1, tmp_path / "ds.yaml")
    (run / "run.json").write_text(json.dumps({"processes": 1, "launch": f"accelerate:{tmp_path / 'acc.yaml'}"}))
    assert _resumed_processes(run, 1, tmp_path / "acc.yaml") == 1
    monkeypatch.setenv("ALIGNLAB_LAUNCH", f"accelerate:{tmp_path / 'acc.yaml'}")  # the process accelerate launched
    assert _resumed_processes(run, 1, None) == 1  # (a one-process accelerate resume refused itself)

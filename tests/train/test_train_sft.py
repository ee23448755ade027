"""alignlab's SFT loss (the LM head on the labelled positions only) against TRL's own SFTTrainer loss."""

from __future__ import annotations

import pytest
import torch


def _trainer(tiny_model, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig

    from alignlab.models.loading import load_base, load_tokenizer
    from alignlab.train.sft import AlignlabSFTTrainer

    torch.manual_seed(0)
    rows = [{"prompt": [{"role": "user", "content": f"Name a colour, #{i}."}],
             "completion": [{"role": "assistant", "content": "Blue. " * (1 + i % 4) + "Obviously."}]} for i in range(8)]
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], use_cpu=True,
                     max_length=128, completion_only_loss=True, bf16=False)  # fp32: exact parity
    return AlignlabSFTTrainer(model=load_base(tiny_model), args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=load_tokenizer(tiny_model),
                              peft_config=LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))


def _loss_and_grads(trainer, compute, batch):
    model = trainer.model
    model.zero_grad()
    loss = compute(trainer, model, {k: v.clone() for k, v in batch.items()})
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("chunked", [False, True])
def test_sft_loss_and_gradients_match_trl(tiny_model, tmp_path, monkeypatch, chunked):
    from trl import SFTTrainer

    from alignlab.train import logps, sft

    trainer = _trainer(tiny_model, tmp_path)
    if chunked:  # force the checkpointed-chunks path: a few positions per chunk
        monkeypatch.setattr(logps, "HEAD_BUDGET", 5 * trainer.model.get_base_model().get_output_embeddings().weight.shape[0])
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] == -100).any() and (batch["labels"] != -100).any()  # prompt masked, completion trained
    assert trainer._own_head(trainer.model, batch)
    ours, ours_grads = _loss_and_grads(trainer, sft.AlignlabSFTTrainer.compute_loss, batch)
    trl, trl_grads = _loss_and_grads(trainer, SFTTrainer.compute_loss, batch)
    assert ours.item() > 0 and torch.allclose(ours, trl, rtol=1e-5), (ours, trl)
    assert ours_grads.keys() == trl_grads.keys()
    for name, g in ours_grads.items():
        assert g.abs().sum() > 0, name
        assert torch.allclose(g, trl_grads[name], rtol=1e-4, atol=1e-7), (name, (g - trl_grads[name]).abs().max(), g.abs().max())
    metrics = trainer._metrics["train"]
    assert 0 <= metrics["mean_token_accuracy"][0] <= 1 and metrics["entropy"][0] > 0
    # the same quantities TRL logs, from its own pass over the same batch
    assert metrics["mean_token_accuracy"][0] == pytest.approx(metrics["mean_token_accuracy"][1], abs=1e-6)
    assert metrics["entropy"][0] == pytest.approx(metrics["entropy"][1], rel=1e-4)


def test_sft_on_messages_rows_trains_the_last_answer_only(tiny_model, tmp_path):
    """A chat row trains its last assistant turn: the system and user turns and the earlier answer carry no label
    (`sft.completion_only`, on by default); with it off every token is trained."""
    from datasets import Dataset
    from trl import SFTConfig

    from alignlab.models.loading import load_base, load_tokenizer
    from alignlab.train.sft import AlignlabSFTTrainer, _row

    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"},
                         {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Again, louder"},
                         {"role": "assistant", "content": "HELLO. Thrilling, I know."}]}
    tok = load_tokenizer(tiny_model)
    labelled = {}
    for only in (True, False):
        row = _row(chat, only)
        args = SFTConfig(output_dir=str(tmp_path / str(only)), per_device_train_batch_size=1, report_to=[],
                         use_cpu=True, max_length=128, completion_only_loss=only if "prompt" in row else None)
        trainer = AlignlabSFTTrainer(model=load_base(tiny_model), args=args, train_dataset=Dataset.from_list([row]),
                                     processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        labels = batch["labels"][0]
        labelled[only] = tok.decode(labels[labels != -100])
    assert "HELLO. Thrilling, I know." in labelled[True]
    assert "Say hi" not in labelled[True] and "Be brief" not in labelled[True] and "Hi." not in labelled[True]
    assert "Say hi" in labelled[False] and "HELLO" in labelled[False]


def test_sft_on_messages_rows_trains_through_alignlabs_head(tiny_model, tmp_path, monkeypatch):
    """Conversation rows (`messages`): the run goes through alignlab's head path and learns."""
    import json

    from helpers import cfg_for

    from alignlab.train import engine, sft

    calls = []
    own = sft.AlignlabSFTTrainer._own_head
    monkeypatch.setattr(sft.AlignlabSFTTrainer, "_own_head", lambda self, m, i: calls.append(own(self, m, i)) or calls[-1])
    rows = [{"messages": [{"role": "user", "content": f"Say hi #{i}"},
                          {"role": "assistant", "content": "Hi. Thrilling, I know."}]} for i in range(12)]
    data = tmp_path / "m.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = engine.prepare("sft", cfg_for(tiny_model, **{"train.max_steps": 6}), str(data), tmp_path / "runs")
    run_dir = engine.run(ctx, str(data))
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert calls and all(calls)
    assert steps[-1]["loss"] < steps[0]["loss"] and 0 <= steps[-1]["mean_token_accuracy"] <= 1


def test_default_lora_targets_fit_a_model_that_names_its_projections_otherwise():
    """Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj: the default targets failed on every such model."""
    from pathlib import Path

    from peft import get_peft_model
    from transformers import Phi3Config, Phi3ForCausalLM

    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.errors import AlignlabError
    from alignlab.train.engine import RunContext

    model = Phi3ForCausalLM(Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=4, num_key_value_heads=4, pad_token_id=0))
    ctx = RunContext(method="sft", cfg=ProjectConfig(), run_dir=Path("."), rows=[], tokenizer=None, device="cpu")
    ctx.model = model
    assert ctx.peft_config().target_modules == "all-linear"
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in get_peft_model(model, ctx.peft_config()).named_parameters()
               if "lora_A" in n}
    assert adapted == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    ctx.cfg = apply_overrides(ProjectConfig(), {"lora.target_modules": "q_proj,v_proj"})  # named by the user: refused
    with pytest.raises(AlignlabError, match="no linear layer named q_proj, v_proj"):
        ctx.peft_config()

"""Models whose logits are the LM head's output transformed (Gemma 2's soft-capping, Granite's scaling): the
shared-prompt log-probs (DPO family, held-out pairs, GRPO on CPU) and SFT's loss must equal the model's own forward."""

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, GraniteConfig, GraniteForCausalLM, LlamaConfig, LlamaForCausalLM

from alignlab.train.logps import scaled_head, shared_prompt_logps

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1)


def _models():
    torch.manual_seed(0)
    gemma2 = Gemma2ForCausalLM(Gemma2Config(**SMALL, head_dim=16, final_logit_softcapping=2.0,
                                            attn_logit_softcapping=None)).eval()
    granite = GraniteForCausalLM(GraniteConfig(**SMALL, logits_scaling=8.0)).eval()
    with torch.no_grad():  # large logits, so the cap or the scale changes the log-probs a lot
        gemma2.lm_head.weight.mul_(20)
    return {"gemma2": gemma2, "granite": granite}


def _plain(model, p_ids, p_mask, c_ids, c_mask, inverse):
    ids = torch.cat([p_ids[inverse], c_ids], 1)
    mask = torch.cat([p_mask[inverse], c_mask], 1)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    lp = logits[:, p_ids.shape[1] - 1 : -1].float().log_softmax(-1)
    return lp.gather(-1, c_ids[..., None]).squeeze(-1) * c_mask


@pytest.mark.parametrize("name", ["gemma2", "granite"])
def test_shared_prompt_logps_follow_the_models_own_logits(name):
    model = _models()[name]
    assert scaled_head(model)
    p_ids = torch.randint(1, 64, (2, 5))
    p_mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])  # left-padded prompts
    c_ids = torch.randint(1, 64, (4, 3))
    c_mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
    inverse = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        ours, _ = shared_prompt_logps(model, p_ids, p_mask, c_ids, c_mask, inverse)
        head_only = torch.log_softmax(model.lm_head(model.model(input_ids=p_ids).last_hidden_state).float(), -1)
        ref = _plain(model, p_ids, p_mask, c_ids, c_mask, inverse)
    assert torch.allclose(ours, ref, atol=1e-5), (ours, ref)
    # the transform matters here: the bare head's log-prob of the first completion token differs
    bare = head_only[inverse, -1].gather(-1, c_ids[:, :1]).squeeze(-1)
    assert (bare - ref[:, 0]).abs().max() > 0.1


def test_a_plain_head_is_not_scaled():
    assert not scaled_head(LlamaForCausalLM(LlamaConfig(**SMALL)))


def test_sft_loss_on_a_scaled_head_is_the_models_own_nll(tmp_path):
    """SFT's own head path would skip Granite's logit scaling; the run takes TRL's path and its loss is the NLL of
    the model's own logits on the completion tokens."""
    from alignlab.models.tiny import make_tiny_model
    from test_train_sft import _trainer

    trainer = _trainer(str(make_tiny_model(tmp_path / "granite", arch="granite")), tmp_path / "out")
    batch = next(iter(trainer.get_train_dataloader()))
    assert not trainer._own_head(trainer.model, batch)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        lp = logits[:, :-1].float().log_softmax(-1)
        sel = labels != -100
        nll = -lp[sel].gather(-1, labels[sel][:, None]).mean()
        unscaled = torch.log_softmax(trainer.model.get_base_model().lm_head(
            trainer.model.get_base_model().model(input_ids=batch["input_ids"],
                                                 attention_mask=batch["attention_mask"]).last_hidden_state)[:, :-1].float(), -1)
        nll_unscaled = -unscaled[sel].gather(-1, labels[sel][:, None]).mean()
    assert loss.item() == pytest.approx(nll.item(), rel=1e-4)
    assert abs(nll_unscaled.item() - nll.item()) > 1e-3  # the scaling changes the loss: the check can fail

"""DPO and IPO reference losses: hand-computed cases, and parity with a real TRL DPOTrainer.

TRL 1.16 computes the DPO/IPO loss inline in ``DPOTrainer._compute_loss``, so parity builds a trainer on the
tiny model, feeds it one collated batch, and compares its loss and logged metrics with ``dpo_loss``/``ipo_loss``
fed by log-probs computed here, independently, with a plain forward pass and log_softmax.
"""

import math

import pytest
import torch

from alignlab.losses import dpo_loss, ipo_loss

PAIRS = [
    {"prompt": "The sky is", "chosen": " blue today.", "rejected": " a big green salad with dressing"},
    {"prompt": "Two plus two equals", "chosen": " four", "rejected": " five, obviously."},
    {"prompt": "Say hi", "chosen": " hi there friend", "rejected": " no"},
]


def test_dpo_hand_computed():
    """Policy chosen/rejected -10/-12, reference -15/-11, beta 0.1.

    Implicit rewards: 0.1 * (-10 + 15) = 0.5 and 0.1 * (-12 + 11) = -0.1, margin 0.6.
    loss = -log sigmoid(0.6) = log(1 + e^-0.6) = 0.437488...
    Second pair: policy == reference, margin 0, loss = ln 2 = 0.693147...
    """
    policy_c, policy_r = torch.tensor([-10.0, -7.0]), torch.tensor([-12.0, -9.0])
    losses, m = dpo_loss(policy_c, policy_r, torch.tensor([-15.0, -7.0]), torch.tensor([-11.0, -9.0]))
    assert losses[0].item() == pytest.approx(0.4374879504, abs=1e-6)
    assert losses[1].item() == pytest.approx(math.log(2), abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(0.25, abs=1e-6)  # mean of 0.5 and 0
    assert m["rewards/rejected"].item() == pytest.approx(-0.05, abs=1e-6)
    assert m["rewards/margins"].item() == pytest.approx(0.3, abs=1e-6)
    assert m["rewards/accuracies"].item() == pytest.approx(0.5, abs=1e-6)  # the tie counts as wrong, as in TRL
    assert m["logps/chosen"].item() == pytest.approx(-8.5, abs=1e-6)
    assert not any(v.requires_grad for v in m.values())


def test_dpo_label_smoothing_hand_computed():
    """cDPO with eps 0.1 on margin 2 * beta 0.1 = 0.2.

    -log sigmoid(0.2) = 0.598139..., -log sigmoid(-0.2) = 0.2 + 0.598139 = 0.798139...
    loss = 0.9 * 0.598139 + 0.1 * 0.798139 = 0.618139...
    """
    z = torch.zeros(1)
    losses, _ = dpo_loss(torch.tensor([2.0]), z, z, z, beta=0.1, label_smoothing=0.1)
    assert losses.item() == pytest.approx(0.6181389685, abs=1e-6)
    losses, _ = dpo_loss(torch.tensor([2.0]), z, z, z, beta=0.1)
    assert losses.item() == pytest.approx(0.5981388693, abs=1e-6)


def test_ipo_hand_computed():
    """Chosen log-ratio 3 over 3 tokens -> 1; rejected log-ratio -2 over 4 tokens -> -0.5; h = 1.5.

    beta (tau) 0.5 -> target 1 / (2 * 0.5) = 1; loss = (1.5 - 1)^2 = 0.25.
    """
    losses, m = ipo_loss(
        torch.tensor([-3.0]), torch.tensor([-12.0]), torch.tensor([-6.0]), torch.tensor([-10.0]),
        torch.tensor([3]), torch.tensor([4]), beta=0.5,
    )
    assert losses.item() == pytest.approx(0.25, abs=1e-6)
    assert m["rewards/margins"].item() == pytest.approx(0.5 * (3 - (-2)), abs=1e-6)


def _completion_logps(model, batch):
    """Sum of the completion tokens' log-probs, from a plain forward pass (no TRL code involved)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    return (token_logps * batch["completion_mask"][:, 1:]).sum(1)


def _trainer(tiny_model, tmp_path, loss_type, peft, beta=0.1):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    ref_model, peft_config = None, None
    if peft:  # reference = the same model with adapters disabled; random B so the policy differs from it
        peft_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    else:  # a separate reference model: the tiny model with perturbed weights
        ref_model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        torch.manual_seed(1)
        with torch.no_grad():
            for p in ref_model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    args = DPOConfig(
        output_dir=str(tmp_path / "out"), bf16=False, gradient_checkpointing=False, use_cpu=True, report_to=[],
        per_device_train_batch_size=len(PAIRS), beta=beta, loss_type=[loss_type], disable_dropout=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(PAIRS),
                         processing_class=tokenizer, peft_config=peft_config)
    trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()
        logps = _completion_logps(trainer.model, batch)
        if peft:
            with trainer.model.disable_adapter():
                ref_logps = _completion_logps(trainer.model, batch)
        else:
            ref_logps = _completion_logps(ref_model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    return trl_loss, metrics, logps.chunk(2), ref_logps.chunk(2), batch["completion_mask"].sum(1).chunk(2)


def test_dpo_parity_with_trl_peft(tiny_model, tmp_path):
    """DPOTrainer (LoRA policy, reference = adapters disabled) vs dpo_loss: loss and metrics within 1e-5."""
    trl_loss, trl_metrics, (pc, pr), (rc, rr), _ = _trainer(tiny_model, tmp_path, "sigmoid", peft=True)
    losses, metrics = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert abs(losses.mean().item() - math.log(2)) > 1e-3  # the policy really differs from the reference
    assert losses.mean().item() == pytest.approx(trl_loss, abs=1e-5)
    for key, value in metrics.items():
        # rel=1e-6: logps are ~ -40, where float32 spacing is ~4e-6
        assert value.item() == pytest.approx(trl_metrics[key], abs=1e-5, rel=1e-6), key


def test_ipo_parity_with_trl_ref_model(tiny_model, tmp_path):
    """DPOTrainer(loss_type=["ipo"]) with a separate reference model vs ipo_loss (length-normalised): within 1e-5.

    beta 1 (target margin 0.5) keeps the loss O(1): with beta 0.1 the loss is ~25 and float32 rounding of the
    two log-prob paths (TRL's fused LM head vs log_softmax here) is amplified ten-fold by the square.
    """
    trl_loss, trl_metrics, (pc, pr), (rc, rr), (lc, lr) = _trainer(tiny_model, tmp_path, "ipo", peft=False, beta=1.0)
    losses, metrics = ipo_loss(pc, pr, rc, rr, lc, lr, beta=1.0)
    assert losses.mean().item() == pytest.approx(trl_loss, abs=1e-5)
    for key, value in metrics.items():
        # rel=1e-6: logps are ~ -40, where float32 spacing is ~4e-6
        assert value.item() == pytest.approx(trl_metrics[key], abs=1e-5, rel=1e-6), key

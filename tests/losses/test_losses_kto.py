"""KTO reference loss: hand-computed cases, and parity with a real TRL KTOTrainer.

TRL 1.16 computes the KTO loss inline in ``KTOTrainer._compute_loss`` (there is no standalone ``kto_loss``), so
parity builds a trainer on the tiny model with a LoRA adapter (reference = adapters disabled), feeds it one
collated batch, and compares its loss and metrics with ``kto_loss`` fed by log-probs computed here with a plain
forward pass: completion log-probs, and z0 from the batch's mismatched KL completions.
"""

import math

import pytest
import torch

from alignlab.losses import kto_loss

EXAMPLES = [
    {"prompt": "The sky is", "completion": " blue today.", "label": True},
    {"prompt": "Two plus two equals", "completion": " five, obviously.", "label": False},
    {"prompt": "Say hi", "completion": " hi there friend", "label": True},
    {"prompt": "Name a fruit", "completion": " a rock", "label": False},
]


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_kto_hand_computed():
    """beta 0.1, z0 0.5, weights 1.0 (desirable) and 1.33 (undesirable).

    Desirable, log-ratio 2.5: 1 - sigmoid(0.1 * (2.5 - 0.5)) = 1 - sigmoid(0.2) = 0.450166...
    Undesirable, log-ratio 4.5: 1.33 * (1 - sigmoid(0.1 * (0.5 - 4.5))) = 1.33 * sigmoid(0.4) = 0.796255...
    """
    losses, m = kto_loss(
        torch.tensor([-1.5, -2.0]), torch.tensor([-4.0, -6.5]), torch.tensor([True, False]), torch.tensor(0.5),
        beta=0.1, desirable_weight=1.0, undesirable_weight=1.33,
    )
    assert losses[0].item() == pytest.approx(0.4501660027, abs=1e-6)
    assert losses[1].item() == pytest.approx(1.33 * _sigmoid(0.4), abs=1e-6)
    assert losses[1].item() == pytest.approx(0.7962551, abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(0.25, abs=1e-6)
    assert m["rewards/rejected"].item() == pytest.approx(0.45, abs=1e-6)
    assert m["kl"].item() == pytest.approx(0.5, abs=1e-6)


def test_kto_reference_point_is_clamped_and_detached():
    """A negative KL estimate is clamped to 0 (paper: z0 = max(0, KL)); no gradient flows into z0.

    Desirable, log-ratio 0 with z0 -> 0: 1 - sigmoid(0) = 0.5.
    """
    z0 = torch.tensor(-3.0, requires_grad=True)
    losses, m = kto_loss(torch.tensor([-1.0], requires_grad=True), torch.tensor([-1.0]), torch.tensor([True]), z0)
    assert losses.item() == pytest.approx(0.5, abs=1e-6)
    assert m["kl"].item() == 0.0
    losses.sum().backward()
    assert z0.grad is None


def _completion_logps(model, input_ids, attention_mask, completion_mask):
    """Sum of the completion tokens' log-probs, from a plain forward pass (no TRL code involved)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    token_logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (token_logps * completion_mask[:, 1:]).sum(1)


def test_kto_parity_with_trl(tiny_model, tmp_path):
    """KTOTrainer (LoRA, reference = adapters disabled) vs kto_loss: loss and metrics within 1e-5."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    args = KTOConfig(
        output_dir=str(tmp_path / "out"), bf16=False, gradient_checkpointing=False, use_cpu=True, report_to=[],
        per_device_train_batch_size=len(EXAMPLES), beta=0.1, desirable_weight=1.0, undesirable_weight=1.5,
        disable_dropout=True,
    )
    for seed in range(8):  # a random adapter whose shift on the mismatched pairs is positive (else z0 is clamped to 0)
        args.seed = seed  # the Trainer seeds the adapter's initialisation with it
        trainer = KTOTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), args=args,
            train_dataset=Dataset.from_list(EXAMPLES), processing_class=AutoTokenizer.from_pretrained(tiny_model),
            peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        )
        model = trainer.model.eval()
        b = trainer.data_collator([trainer.train_dataset[i] for i in range(len(EXAMPLES))])
        with torch.no_grad():
            trl_loss = trainer.compute_loss(model, b).item()
            logps = _completion_logps(model, b["input_ids"], b["attention_mask"], b["completion_mask"])
            kl_logps = _completion_logps(model, b["KL_input_ids"], b["KL_attention_mask"], b["KL_completion_mask"])
            with model.disable_adapter():
                ref_logps = _completion_logps(model, b["input_ids"], b["attention_mask"], b["completion_mask"])
                ref_kl_logps = _completion_logps(model, b["KL_input_ids"], b["KL_attention_mask"],
                                                 b["KL_completion_mask"])
        z0 = (kl_logps - ref_kl_logps).mean()
        if z0 > 0:
            break
    assert z0 > 0, "no seed gave an unclamped z0: the test would not reach the case it checks"
    losses, metrics = kto_loss(logps, ref_logps, b["label"], z0, beta=0.1, desirable_weight=1.0,
                               undesirable_weight=1.5)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    assert metrics["kl"].item() > 0  # the adapter moved the policy, so z0 is not clamped away
    assert losses.mean().item() == pytest.approx(trl_loss, abs=1e-5)
    for key, value in metrics.items():
        # rel=1e-6: logps are ~ -40, where float32 spacing is ~4e-6
        assert value.item() == pytest.approx(trl_metrics[key], abs=1e-5, rel=1e-6), key

"""PreferenceTrainer.compute_loss against TRL's own trainers on one batch: the same LoRA weights, the same pairs.

The loss functions are checked against TRL's on random numbers in tests/losses/; this checks the trainer path around
them (which sums, lengths and reference reach the loss, which metrics are logged), where a swapped argument had passed
every test that only asked that the loss falls and the margins grow. DPO and IPO run beside TRL's DPOTrainer
(``loss_type`` "sigmoid" / "ipo") with the prompt shared and not; SimPO and ORPO beside ``trl.experimental``'s
CPOTrainer (``loss_type="simpo"``, ``cpo_alpha=0``) and ORPOTrainer, fed the same token ids (their own tokenisation
adds a second EOS after the chat template's). The NLL terms are off (0) or taken out: TRL averages them over the
batch's tokens (ORPO's over the prompt's as well), alignlab per pair (README: Losses, written from the math).
"""

from __future__ import annotations

import warnings

import pytest
import torch

PAIRS = [  # chosen shorter than rejected, longer, and about even; prompts of different lengths
    {"prompt": [{"role": "user", "content": "The sky is blue or green? Tell me at length, with a long question here"}],
     "chosen": [{"role": "assistant", "content": "Blue today."}],
     "rejected": [{"role": "assistant", "content": "a big green salad with dressing, on a plate of gold"}]},
    {"prompt": [{"role": "user", "content": "Two plus two?"}],
     "chosen": [{"role": "assistant", "content": "Four, obviously. Not five, whatever the internet told you."}],
     "rejected": [{"role": "assistant", "content": "five"}]},
    {"prompt": [{"role": "user", "content": "Say hi"}],
     "chosen": [{"role": "assistant", "content": "hi there friend"}],
     "rejected": [{"role": "assistant", "content": "no thanks"}]},
]
TOL = dict(rel=1e-5, abs=1e-5)


def _common(tmp_path) -> dict:
    return dict(output_dir=str(tmp_path / "out"), bf16=False, use_cpu=True, report_to=[], seed=0,
                per_device_train_batch_size=len(PAIRS), disable_dropout=True, remove_unused_columns=False)


def _trainer(cls, model_path, args, **kw):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model=AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), args=args,
                   train_dataset=Dataset.from_list(PAIRS), processing_class=AutoTokenizer.from_pretrained(model_path),
                   peft_config=LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False), **kw)


def _alignlab(model_path, tmp_path, method, method_cfg, beta, shared, like):
    """alignlab's trainer with ``like``'s LoRA weights (random, so policy and reference differ), in eval mode."""
    from trl import DPOConfig

    from alignlab.train.preference import PreferenceTrainer

    ours = _trainer(PreferenceTrainer, model_path, DPOConfig(beta=beta, **_common(tmp_path)), method=method,
                    method_cfg=method_cfg, shared_prompt=shared)
    loaded = ours.model.load_state_dict(like.model.state_dict(), strict=False)
    assert not loaded.unexpected_keys and not [k for k in loaded.missing_keys if "lora_" in k]
    like.model.eval()
    ours.model.eval()
    return ours


def _our_loss(trainer) -> tuple[float, dict, dict]:
    """(loss, logged metrics, the collated batch) for the whole of PAIRS, as one step computes them."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    return loss, {k: v[-1] for k, v in trainer._metrics["eval"].items()}, batch


def _trl_pair_batch(batch: dict, pad: int) -> dict:
    """The prefix batch (left-padded prompts, chosen then rejected completions) in the layout of TRL's experimental
    trainers: prompt + completion per row, right-padded, labels -100 on the prompt."""
    n = batch["prompt_ids"].shape[0]
    rows = []
    for i in range(2 * n):
        prompt = batch["prompt_ids"][i % n][batch["prompt_mask"][i % n] == 1].tolist()
        comp = batch["completion_ids"][i][batch["completion_mask"][i] == 1].tolist()
        rows.append((prompt + comp, [-100] * len(prompt) + comp))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for _, r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    out = {}
    for side, part in (("chosen", slice(0, n)), ("rejected", slice(n, 2 * n))):
        out |= {f"{side}_input_ids": ids[part], f"{side}_attention_mask": mask[part], f"{side}_labels": labels[part]}
    return out


def _assert_metrics_match(ours: dict, theirs: dict, keys) -> None:
    for key in keys:
        assert ours[key] == pytest.approx(theirs[key], **TOL), (key, ours[key], theirs[key])


@pytest.mark.parametrize("shared", ["on", "off"])
@pytest.mark.parametrize("method,loss_type,beta", [("dpo", "sigmoid", 0.3), ("ipo", "ipo", 0.5)])
def test_dpo_and_ipo_match_trls_dpo_trainer(tiny_model, tmp_path, one_thread, method, loss_type, beta, shared):
    """Loss and every metric TRL logs for the step (logps summed over each answer, rewards, margins, accuracy) agree
    within 1e-5 (relative for the log-prob sums); the NLL term is off (rpo_alpha 0)."""
    from trl import DPOConfig, DPOTrainer

    from alignlab.config import DPOConfig as OurDPO, IPOConfig as OurIPO

    trl = _trainer(DPOTrainer, tiny_model, DPOConfig(beta=beta, loss_type=[loss_type], **_common(tmp_path)))
    section = (OurDPO if method == "dpo" else OurIPO)(beta=beta, rpo_alpha=0.0)
    ours = _alignlab(tiny_model, tmp_path, method, section, beta, shared, like=trl)
    batch = trl.data_collator([trl.train_dataset[i] for i in range(len(PAIRS))])
    with torch.no_grad():
        want = trl.compute_loss(trl.model, batch).item()
    theirs = {k: v[-1] for k, v in trl._metrics["eval"].items()}
    got, metrics, our_batch = _our_loss(ours)
    lengths = our_batch["completion_mask"].sum(1)
    assert (lengths[:3] != lengths[3:]).all()  # unequal answer lengths: a swapped length normalisation would show
    assert got == pytest.approx(want, **TOL), (got, want)
    keys = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
            "logps/rejected")
    _assert_metrics_match(metrics, theirs, keys)
    assert metrics["rewards/margins"] != 0  # the random adapter moved the policy off its reference


def test_simpo_matches_trls_cpo_trainer(tiny_model, tmp_path, one_thread):
    """SimPO (sft_weight 0) beside CPOTrainer(loss_type="simpo", cpo_alpha=0): loss, rewards and the per-token mean
    log-probs TRL logs as logps/chosen and logps/rejected (alignlab logged the sums there)."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    from alignlab.config import SimPOConfig

    beta, gamma = 2.0, 0.8
    cpo = _trainer(CPOTrainer, tiny_model, CPOConfig(loss_type="simpo", cpo_alpha=0.0, beta=beta, simpo_gamma=gamma,
                                                     **_common(tmp_path)))
    ours = _alignlab(tiny_model, tmp_path, "simpo", SimPOConfig(beta=beta, gamma=gamma, sft_weight=0.0), beta, "on",
                     like=cpo)
    got, metrics, batch = _our_loss(ours)
    with torch.no_grad():
        want, theirs = cpo.get_batch_loss_metrics(cpo.model, _trl_pair_batch(batch, ours.processing_class.pad_token_id))
    assert got == pytest.approx(want.item(), **TOL), (got, want.item())
    _assert_metrics_match(metrics, theirs, ("rewards/chosen", "rewards/rejected", "rewards/margins",
                                            "rewards/accuracies", "logps/chosen", "logps/rejected"))


def test_orpo_matches_trls_orpo_trainer(tiny_model, tmp_path, one_thread):
    """ORPO beside ORPOTrainer: the odds-ratio part of the loss (the loss less its NLL term, which TRL takes over the
    batch's prompt and answer tokens), the odds metrics, rewards and per-token mean log-probs."""
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from alignlab.config import ORPOConfig as OurORPO

    beta = 0.4
    orpo = _trainer(ORPOTrainer, tiny_model, ORPOConfig(beta=beta, **_common(tmp_path)))
    ours = _alignlab(tiny_model, tmp_path, "orpo", OurORPO(beta=beta), beta, "off", like=orpo)
    got, metrics, batch = _our_loss(ours)
    with torch.no_grad():
        pairs = _trl_pair_batch(batch, ours.processing_class.pad_token_id)
        want, theirs = orpo.get_batch_loss_metrics(orpo.model, pairs)
    assert got - metrics["nll"] == pytest.approx(want.item() - theirs["nll_loss"], **TOL)
    _assert_metrics_match(metrics, theirs, ("log_odds_ratio", "log_odds_chosen", "rewards/chosen", "rewards/rejected",
                                            "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"))

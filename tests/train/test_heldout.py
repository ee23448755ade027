"""The held-out implicit reward (train/heldout.py) reads answers tokenised as DPO training reads them."""

from __future__ import annotations

import json

from helpers import cfg_for, write_pairs


def test_heldout_pairs_are_tokenised_as_the_dpo_trainer_tokenises_them(tiny_model, tmp_path, one_thread):
    """encode_pairs and the trainer alignlab builds for a DPO run give the same prompt, chosen and rejected ids for
    the same pairs, down to the chat template's newline after the end of turn (encode_pairs tokenised the bare answer
    and added EOS, one token short of what training scores)."""
    from alignlab.train import engine
    from alignlab.train.heldout import encode_pairs
    from alignlab.train.preference import build_trainer

    data = write_pairs(tmp_path / "pairs.jsonl", n=6)
    ctx = engine.prepare("dpo", cfg_for(tiny_model, **{"train.max_steps": 1}), str(data), tmp_path / "runs")
    ctx.model = engine._load_model(ctx)
    trained = build_trainer(ctx).train_dataset
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    encoded = encode_pairs(ctx.tokenizer, rows, max_length=ctx.cfg.train.max_length)
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    assert [{k: e[k] for k in keys} for e in encoded] == [{k: trained[i][k] for k in keys} for i in range(len(rows))]
    assert ctx.tokenizer.decode(encoded[0]["chosen_ids"][-2:]) == "<|im_end|>\n"
    # a max_length the answers outgrow cuts them where the collator does, keeping the prompt whole
    short = encode_pairs(ctx.tokenizer, rows[:1], max_length=len(encoded[0]["prompt_ids"]) + 3)[0]
    assert short["prompt_ids"] == encoded[0]["prompt_ids"] and short["chosen_ids"] == encoded[0]["chosen_ids"][:3]

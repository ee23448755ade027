"""A composed reward plugged into TRL's GRPOTrainer for one step on the tiny model: the contract holds."""

from __future__ import annotations


def test_composed_reward_in_grpo_trainer(tiny_model, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from alignlab.rewards import load_spec

    (tmp_path / "mine.py").write_text(
        "from alignlab.rewards import completion_text\n"
        "seen = []\n"
        "def has_answer(prompts, completions, **columns):\n"
        "    seen.append(sorted(columns))\n"
        "    return [1.0 if a in completion_text(c) else 0.0 for c, a in zip(completions, columns['answer'])]\n"
    )
    (tmp_path / "rewards.yaml").write_text(
        "components:\n"
        "  - {name: heuristic, fn: persona_heuristic, weight: 0.4}\n"
        "  - {name: math, fn: arithmetic, weight: 0.5}\n"
        "  - {name: mine, fn: mine.py:has_answer, weight: 0.2}\n"
        "  - {name: length, fn: length_penalty, weight: -0.1, args: {target: 4}}\n"
        "cap: 1.0\n"
        "diversity: {weight: 0.1}\n"
    )
    reward = load_spec(tmp_path / "rewards.yaml")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 6 x 7?"}], "answer": "42"}] * 4)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    trainer = GRPOTrainer(model=tiny_model, reward_funcs=reward, args=args, train_dataset=data)
    trainer.train()
    logs = next(h for h in trainer.state.log_history if "reward" in h)
    for name in ("heuristic", "math", "mine", "length", "diversity"):
        assert f"reward_parts/{name}/mean" in logs
    assert "rewards/composed_reward/mean" in logs
    # the 4 completions of one prompt form one group: each is compared with the other three
    assert 0.0 <= logs["reward_parts/diversity/mean"] <= 1.0
    assert logs["reward"] <= 1.0
    seen = reward.parts[2].fn.__globals__["seen"]  # the columns TRL passed to the user's function
    assert "answer" in seen[0] and "trainer_state" in seen[0]

"""A composed reward plugged into TRL's GRPOTrainer for one step on the tiny model: the contract holds; and
`alignlab train grpo` end to end with columns of mixed types and a judge that cannot score every answer."""

from __future__ import annotations

import json
import socket

from test_rewards_judge import server  # noqa: F401 - the real HTTP stand-in judge


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


# -- `alignlab train grpo` end to end: the columns the rewards see, a judge that cannot score one answer ----------


def _grpo(tmp_path, model, rows, spec, **overrides):
    from alignlab.config import ProjectConfig, apply_overrides
    from alignlab.train import engine

    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "rewards.yaml").write_text(spec)
    cfg = apply_overrides(ProjectConfig(model=model), {
        "train.sample_prompts": 0, "train.batch_size": 2, "train.save_steps": 1000, "train.max_steps": 1,
        "online.num_generations": 2, "online.max_completion_length": 6,
        "online.rewards": str(tmp_path / "rewards.yaml"), **overrides})
    ctx = engine.prepare("grpo", cfg, str(data), tmp_path / "runs")
    return engine.run(ctx, str(data))


def _steps(run_dir) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


ROWS = [{"prompt": "Capital of Australia?", "answer": ["Canberra", "Canberra, ACT"], "number": [42, "forty-two"]},
        {"prompt": "Capital of France?", "answer": "Paris", "number": [7, "seven"]}]
SEEN = """
import json, os
from alignlab.rewards import prompt_text

def seen(prompts, completions, **columns):
    with open(os.environ["SEEN_LOG"], "a") as fh:
        for p, a, n in zip(prompts, columns["answer"], columns["number"]):
            fh.write(json.dumps([prompt_text(p), a, n]) + "\\n")
    return [0.0] * len(completions)
"""


def test_training_gives_the_rewards_the_columns_as_the_file_holds_them(tiny_model, tmp_path, monkeypatch):
    """A column of text and alias lists reached the reward as JSON text ('["Canberra", ...]'), so exact_match
    scored "Canberra, obviously." 0 in training and 1 in `reward score`; lists mixing numbers and text stopped
    the run with ArrowInvalid once the model had loaded."""
    from alignlab.rewards import load_spec

    monkeypatch.setenv("SEEN_LOG", str(tmp_path / "seen.jsonl"))
    (tmp_path / "rec.py").write_text(SEEN)
    spec = ("components:\n  - {name: alias, fn: exact_match, args: {mode: contains}}\n"
            "  - {name: seen, fn: rec.py:seen, weight: 0.0}\n")
    run_dir = _grpo(tmp_path, tiny_model, ROWS, spec)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
    seen = [json.loads(x) for x in (tmp_path / "seen.jsonl").read_text().splitlines()]
    want = {r["prompt"]: [r["answer"], r["number"]] for r in ROWS}
    assert len(seen) == 4 and all(want[p] == [a, n] for p, a, n in seen)
    canberra = next(a for p, a, _ in seen if p == "Capital of Australia?")
    assert load_spec(tmp_path / "rewards.yaml").parts[0].fn(["q"], ["Canberra, obviously."], answer=[canberra]) == [1.0]


def test_a_column_the_reward_cannot_use_is_refused_before_the_model_loads(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from alignlab.cli import app
    from alignlab.errors import AlignlabError

    rows = [{"prompt": "What is 6 x 7?", "answer": 42}, {"prompt": "What is 2 + 2?", "answer": "four"}]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "rewards.yaml").write_text("components:\n  - {name: sums, fn: arithmetic}\n")
    result = CliRunner().invoke(app, ["train", "grpo", "--data", str(tmp_path / "prompts.jsonl"), "--rewards",
                                      str(tmp_path / "rewards.yaml"), "--model", tiny_model], catch_exceptions=True)
    assert isinstance(result.exception, AlignlabError), result.output
    assert str(result.exception).startswith(f"{tmp_path / 'rewards.yaml'}:2: reward component 'sums': arithmetic "
                                            "cannot use row 2: its 'answer' holds no number")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_judge_reply_without_a_score_does_not_stop_the_run(tiny_model, tmp_path, server):  # noqa: F811
    """The first completion's reply stays unusable after the second ask: its reward is None (TRL leaves it out), the
    count is logged, and the run goes on; so does it when the watch-only gold judge cannot be reached at all."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    server.script = ["I can't rate that.", "Still can't."]
    spec = (f"components:\n  - {{name: judge, fn: llm_judge, args: {{base_url: '{server.base_url}', model: m, "
            f"cache: false, max_workers: 1}}}}\n"
            f"gold: {{fn: llm_judge, args: {{base_url: 'http://127.0.0.1:{dead}/v1', model: g, retries: 0}}}}\n")
    run_dir = _grpo(tmp_path, tiny_model, [{"prompt": "Is water wet?"}, {"prompt": "Is fire hot?"}], spec,
                    **{"online.gold_steps": 1})
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
    (step,) = _steps(run_dir)
    assert step["reward_parts/judge/unscored"] >= 1 and "gold" not in step
    assert any(m["content"].startswith("Your reply had no score") for m in server.bodies[1]["messages"][2:])

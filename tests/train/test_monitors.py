"""Reward-hacking instruments: each warning fires exactly when its signal crosses the line, once; the recorder's stats."""

from __future__ import annotations

import json
import math

import pytest

from alignlab.errors import AlignlabError
from alignlab.rewards import build_spec
from alignlab.train.monitors import HackingMonitor, MonitorCallback, RewardRecorder, batch_stats, load_rewards


def feed(monitor: HackingMonitor, records: list[dict]) -> list[tuple[int, str]]:
    """Run records (step = position + 1) through the monitor; (step, warning name) of each alert."""
    out = []
    for step, logs in enumerate(records, 1):
        out += [(a.step, a.name) for a in monitor.update(step, logs)]
    return out


# -- proxy up, gold down ------------------------------------------------------------------------------------


def test_proxy_up_gold_down_fires_at_the_third_gold_check():
    # gold every 2 steps; proxy climbs steadily while gold falls at each check
    records = []
    for i in range(8):
        r = {"reward": 0.1 * i}
        if i % 2 == 1:
            r["gold"] = 1.0 - 0.1 * i
        records.append(r)
    # gold checks at steps 2, 4, 6, 8: three readings exist at step 6
    assert feed(HackingMonitor(), records) == [(6, "proxy_up_gold_down")]


def test_proxy_up_gold_up_is_fine():
    records = [{"reward": 0.1 * i, "gold": 0.1 * i} for i in range(10)]
    assert feed(HackingMonitor(), records) == []


def test_gold_falls_but_proxy_falls_too_is_not_hacking():
    records = [{"reward": 1.0 - 0.1 * i, "gold": 1.0 - 0.1 * i} for i in range(10)]
    assert feed(HackingMonitor(), records) == []


def test_one_dip_in_gold_is_not_enough():
    golds = [0.5, 0.4, 0.45, 0.35, 0.42]  # never two falls in a row
    records = [{"reward": 0.1 * i, "gold": g} for i, g in enumerate(golds)]
    assert feed(HackingMonitor(), records) == []


def test_a_gold_collapse_that_plateaus_is_caught():
    """Gold over 8 samples moves in eighths and repeats itself, and at 0 it cannot fall again: 0.5, 0.25, 0.25, 0, 0
    while the proxy climbs is a collapse the two-falls-in-a-row rule never sees."""
    golds = [0.5, 0.25, 0.25, 0.0, 0.0]
    records = [{"reward": 0.4 + 0.1 * i, "gold": g} for i, g in enumerate(golds)]
    assert feed(HackingMonitor(), records) == [(3, "proxy_up_gold_down")]  # two checks 0.25 under the best


def test_no_gold_rater_no_hacking_warning():
    assert feed(HackingMonitor(), [{"reward": 0.1 * i} for i in range(20)]) == []


# -- length drift -------------------------------------------------------------------------------------------


def test_length_drift_fires_when_the_recent_mean_passes_the_fraction():
    # window 3: start = 20; means of the last three at steps 6, 7, 8: 25, 28, 33; the limit is 20 +- 10
    lengths = [20, 20, 20, 22, 25, 28, 31, 40]
    records = [{"completions/mean_length": x} for x in lengths]
    assert feed(HackingMonitor(length_drift=0.5, window=3), records) == [(8, "length_drift")]


def test_length_drift_also_catches_shrinking():
    records = [{"completions/mean_length": x} for x in [40, 40, 40, 20, 15, 10]]  # 40 -> 15
    assert feed(HackingMonitor(length_drift=0.5, window=3), records) == [(6, "length_drift")]


def test_length_drift_boundary_is_strict():
    records = [{"completions/mean_length": x} for x in [40, 40, 40, 20, 20, 20]]
    assert feed(HackingMonitor(length_drift=0.5, window=3), records) == []
    records.append({"completions/mean_length": 19})
    assert feed(HackingMonitor(length_drift=0.5, window=3), records) == [(7, "length_drift")]


def test_length_drift_waits_for_two_windows():
    records = [{"completions/mean_length": x} for x in [10, 10, 10, 100, 100]]  # only 5 logs with window 3
    assert feed(HackingMonitor(length_drift=0.5, window=3), records) == []


# -- KL budget ----------------------------------------------------------------------------------------------


def test_kl_budget_fires_on_the_first_step_past_it_and_only_once():
    records = [{"kl": k} for k in [0.0, 0.1, 0.3, 0.5, 0.51, 0.9, 2.0]]
    assert feed(HackingMonitor(kl_budget=0.5), records) == [(5, "kl_budget")]


def test_kl_within_budget_and_missing_kl_are_quiet():
    assert feed(HackingMonitor(kl_budget=0.5), [{"kl": 0.49}] * 10 + [{}] * 3 + [{"kl": float("nan")}]) == []


# -- no signal ----------------------------------------------------------------------------------------------


def test_no_signal_fires_when_most_groups_are_flat_over_the_window():
    fracs = [1.0, 0.0, 1.0, 0.25, 0.75, 0.75, 0.75]  # window-3 means: .67 at step 3 already
    assert feed(HackingMonitor(window=3), [{"no_signal_frac": f} for f in fracs]) == [(3, "no_signal")]


def test_no_signal_exactly_half_is_not_most():
    assert feed(HackingMonitor(window=3), [{"no_signal_frac": 0.5}] * 10) == []


def test_no_signal_reads_trl_key_when_ours_is_missing():
    assert feed(HackingMonitor(window=2), [{"frac_reward_zero_std": 1.0}] * 2) == [(2, "no_signal")]


def test_healthy_run_has_no_warnings():
    records = [
        {"reward": 0.1 * i, "gold": 0.05 * i, "kl": 0.01 * i, "completions/mean_length": 30 + (i % 3), "no_signal_frac": 0.25}
        for i in range(30)
    ]
    assert feed(HackingMonitor(), records) == []


def test_callback_prints_and_records_warning_in_metrics(tmp_path):
    from types import SimpleNamespace

    cb = MonitorCallback(tmp_path, HackingMonitor(kl_budget=0.1))
    state = SimpleNamespace(is_world_process_zero=True, global_step=7)
    cb.on_log(None, state, None, logs={"kl": 0.3, "loss": 0.0})
    cb.on_log(None, state, None, logs={"kl": 0.4, "loss": 0.0})
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["step"] == 7 and lines[0]["warning"] == "kl_budget" and "0.300" in lines[0]["message"]


# -- recorder -----------------------------------------------------------------------------------------------


def test_batch_stats_by_hand():
    parts = {"a": [1.0, 3.0, 2.0, 2.0], "b": [0.0, 0.0, 0.0, 0.0]}
    totals = [1.0, 3.0, 2.0, 2.0]  # group 1 varies, group 2 is flat
    stats = batch_stats(parts, totals, ["x y z", "x y z", "p q", "r s"], group_size=2)
    assert stats["reward_parts/a/mean"] == 2.0
    assert math.isclose(stats["reward_parts/a/std"], math.sqrt(0.5))
    assert stats["reward_parts/b/std"] == 0.0
    assert stats["no_signal_frac"] == 0.5
    assert math.isclose(stats["distinct_2"], 4 / 6)  # bigrams: xy yz xy yz pq rs -> 4 distinct of 6


def _spec(*components):
    return build_spec({"components": list(components)})


def test_recorder_returns_total_logs_stats_and_gold_on_schedule():
    calls = {"n": 0}

    def counted(prompts, completions, **kw):
        calls["n"] += 1
        return [float(len(c)) for c in completions]

    from alignlab.rewards import register_reward

    register_reward("test_len_chars", lambda: counted)
    reward = _spec({"name": "len", "fn": "test_len_chars", "weight": 0.5})
    gold = _spec({"name": "g", "fn": "format_check", "args": {"pattern": "^a"}})
    rec = RewardRecorder(reward, group_size=2, gold=gold, gold_steps=2)
    logged: dict[str, float] = {}

    class State:
        global_step = 0

    totals = []
    for step in range(4):
        State.global_step = step
        logged.clear()
        totals = rec(["p", "p", "q", "q"], ["aa", "b", "aaa", "cc"], trainer_state=State, log_metric=logged.__setitem__)
        assert ("gold" in logged) == (step % 2 == 0)
    assert totals == [1.0, 0.5, 1.5, 1.0]
    assert calls["n"] == 4  # each component once per batch
    assert logged["reward_parts/len/mean"] == 2.0 and "no_signal_frac" in logged and "distinct_2" in logged
    State.global_step = 2
    rec(["p"], ["a"], trainer_state=State, log_metric=logged.__setitem__)  # same step again: no second gold
    assert rec.gold_done == {0, 2}


def test_recorder_nan_reward_raises_naming_it():
    from alignlab.rewards import register_reward

    register_reward("test_nan", lambda: (lambda prompts, completions, **kw: [float("nan")] * len(completions)))
    rec = RewardRecorder(_spec({"name": "broken", "fn": "test_nan"}), group_size=2)
    with pytest.raises(AlignlabError, match="broken"):
        rec(["p", "p"], ["a", "b"])


# -- gold in the reward YAML --------------------------------------------------------------------------------


def test_load_rewards_with_gold_entry(tmp_path):
    spec = tmp_path / "rewards.yaml"
    spec.write_text(
        "components:\n  - {name: h, fn: persona_heuristic, weight: 1.0}\n"
        "gold: {fn: format_check, args: {pattern: 'x'}}\n"
    )
    reward, gold = load_rewards(spec)
    assert reward.names == ["h"] and gold.names == ["gold"]


def test_load_rewards_without_gold_and_errors(tmp_path):
    spec = tmp_path / "rewards.yaml"
    spec.write_text("components:\n  - {fn: persona_heuristic}\n")
    assert load_rewards(spec)[1] is None
    with pytest.raises(AlignlabError, match="not found"):
        load_rewards(tmp_path / "missing.yaml")
    spec.write_text("components:\n  - {fn: persona_heuristic}\ngold: {fn: persona_heuristic}\n")
    with pytest.raises(AlignlabError, match="also a training component"):
        load_rewards(spec)


# -- the DPO family's falling chosen log-prob ---------------------------------------------------------------


def _chosen_warnings(tmp_path, records, **kw) -> list[dict]:
    from types import SimpleNamespace

    from alignlab.train.callbacks import MetricsCallback

    cb = MetricsCallback(tmp_path, watch_chosen=True, **kw)
    for step, logs in enumerate(records, 1):
        cb.on_log(None, SimpleNamespace(is_world_process_zero=True, global_step=step, epoch=0.0), None, logs=logs)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x.get("warning") == "chosen_logps_falling"]


def test_chosen_warning_ignores_batches_getting_shorter(tmp_path):
    """Length-grouped batches run from long to short, then jump back to long: the summed log-prob falls 400 nats
    with nothing unlearnt. A healthy run (chosen above the reference, margin growing) raises no warning."""
    records = [{"loss": 0.6, "logps/chosen": -300 if i < 5 else -700, "rewards/chosen": 0.01 * i,
                "rewards/margins": 0.05 * i} for i in range(12)]
    assert _chosen_warnings(tmp_path, records, beta=0.1) == []


def test_chosen_warning_fires_when_chosen_falls_below_the_reference(tmp_path):
    # rewards/chosen = beta * (policy - reference): -0.05 per step at beta 0.1 is half a nat a step
    records = [{"loss": 0.6, "logps/chosen": -300, "rewards/chosen": -0.05 * i, "rewards/margins": 0.1 * i} for i in range(10)]
    (warning,) = _chosen_warnings(tmp_path, records, beta=0.1)
    assert warning["step"] == 10 and "-3.50 nats against the reference" in warning["message"]


def test_chosen_warning_fires_on_orpo_logs(tmp_path):
    """ORPO logged no rewards/margins, so the watch it is set up with (per token) never looked: chosen falling from
    -0.1 to -3 nats a token, rejected faster, raised nothing."""
    import torch

    from alignlab.losses import orpo_loss

    records = []
    for i in range(20):
        chosen = torch.tensor([-0.1 - 0.15 * i])
        _, m = orpo_loss(chosen, chosen - 0.5 - 0.1 * i, torch.tensor(1.0), beta=0.1)
        records.append({"loss": 1.0, **{k: v.item() for k, v in m.items()}})
    (warning,) = _chosen_warnings(tmp_path, records, beta=0.1, per_token=True)
    assert "nats per token" in warning["message"]


def test_a_gold_entry_error_names_its_line(tmp_path):
    """Errors in the gold entry read "rewards.yaml (gold): unknown reward fn" with no line; training components'
    errors name theirs."""
    spec = tmp_path / "rewards.yaml"
    spec.write_text("components:\n  - {fn: persona_heuristic}\ngold:\n  fn: nope\n")
    with pytest.raises(AlignlabError, match="nope") as err:
        load_rewards(spec)
    assert "rewards.yaml:4" in str(err.value)
    spec.write_text("components:\n  - {fn: persona_heuristic}\ngold:\n  components:\n    - {fn: format_check, args: {pattern: x}}\n"
                    "    - {fn: nope}\n")
    with pytest.raises(AlignlabError, match="nope") as err:
        load_rewards(spec)
    assert "rewards.yaml:6" in str(err.value)


def test_a_flat_proxy_is_not_a_rise():
    """Gold 0.5, 0.25, 0.25 (two answers of eight) while the proxy moved by a thousandth: noise, not hacking."""
    records = [{"reward": 0.5 + 0.0005 * i, "gold": g} for i, g in enumerate([0.5, 0.25, 0.25])]
    assert feed(HackingMonitor(), records) == []


def test_groups_of_one_answer_carry_no_no_signal_share():
    """PPO at batch size 1: every group is one answer, max == min, and no_signal fired on a run that was learning."""
    stats = batch_stats({"a": [0.1, 0.7]}, [0.1, 0.7], ["x y", "p q"], group_size=1)
    assert "no_signal_frac" not in stats
    assert batch_stats({"a": [0.1, 0.7, 0.3]}, [0.1, 0.7, 0.3], ["x", "y", "z"], group_size=2)["no_signal_frac"] == 0.0


def test_a_group_with_fewer_than_two_scored_answers_carries_no_signal():
    """TRL gives an answer with no score, and one scored alone in its group, no advantage: such a group teaches nothing,
    as an all-equal one. A batch where nothing was scored wrote no no_signal_frac, so no_signal never fired."""
    totals = [None, 0.5, None, None, 0.1, 0.7]  # group 1: one scored answer; group 2: two that differ
    assert batch_stats({"a": totals}, totals, ["x"] * 6, group_size=3)["no_signal_frac"] == 0.5
    assert batch_stats({"a": [None] * 4}, [None] * 4, ["x"] * 4, group_size=2)["no_signal_frac"] == 1.0


def test_a_component_that_scored_nothing_logs_no_mean():
    """reward_parts/<name>/mean read 0.0 for a component that scored none of the batch, as if it had."""
    stats = batch_stats({"judge": [None, None], "h": [0.2, 0.4]}, [0.2, 0.4], ["x", "y"], group_size=2)
    assert "reward_parts/judge/mean" not in stats and "reward_parts/judge/std" not in stats
    assert stats["reward_parts/judge/unscored"] == 2.0 and math.isclose(stats["reward_parts/h/mean"], 0.3)


NONE_PY = """
def none_all(prompts, completions, **kw):
    return [None] * len(completions)

def first_only(prompts, completions, **kw):
    return [1.0 if p == "math" else None for p in prompts]
"""


def test_a_reward_that_scores_none_of_the_first_batch_stops_naming_it(tmp_path):
    """Every step logged reward null and grad_norm 0, and the run ended 'done'. Later a whole batch of None is allowed:
    a component may leave out the prompts it does not apply to (TRL's reading of None), and so is the first batch of a
    resumed run, which is a later batch of the run (a resume of a run that had trained to 'done' failed here)."""
    from types import SimpleNamespace

    from alignlab.rewards import load_spec

    fresh, resumed = SimpleNamespace(global_step=0), SimpleNamespace(global_step=2)

    (tmp_path / "rew.py").write_text(NONE_PY)
    spec = tmp_path / "rewards.yaml"
    spec.write_text("cap: 1.0\ncomponents:\n  - {name: never, fn: rew.py:none_all}\n")
    rec = RewardRecorder(load_spec(spec), group_size=2)
    with pytest.raises(AlignlabError) as err:
        rec(["p"] * 4, ["a", "b", "c", "d"], trainer_state=fresh)
    message = str(err.value)
    assert message.startswith(f"{spec}:3: reward component 'never' (rew.py:none_all) returned None for all 4 ")
    assert "\n" not in message
    spec.write_text("components:\n  - {name: maths, fn: rew.py:first_only}\n")
    rec = RewardRecorder(load_spec(spec), group_size=2)
    assert rec(["math", "math", "poem", "poem"], ["a", "b", "c", "d"], trainer_state=fresh) == [1.0, 1.0, None, None]
    assert rec(["poem", "poem"], ["c", "d"], trainer_state=fresh) == [None, None]  # a batch it does not apply to
    rec = RewardRecorder(load_spec(spec), group_size=2)
    assert rec(["poem", "poem"], ["c", "d"], trainer_state=resumed) == [None, None]


def test_a_resumed_monitor_goes_on_from_the_records_and_warns_once():
    """After --resume the monitor started from nothing: a KL warning fired again, the length baseline restarted. The
    records up to the checkpoint (as metrics.jsonl keeps them) are replayed; its warnings count as raised."""
    lengths, kls = [20, 20, 20, 30, 40, 40, 40], [0.1, 0.9, 0.1, 0.2, 0.3, 0.9, 1.0]
    records = [{"completions/mean_length": x, "kl": k} for x, k in zip(lengths, kls)]
    whole = HackingMonitor(kl_budget=0.5, window=3)
    assert feed(whole, records) == [(2, "kl_budget"), (6, "length_drift")]
    logged = [{"step": i, "epoch": 0.1, **r} for i, r in enumerate(records[:4], 1)]
    logged.insert(2, {"step": 2, "warning": "kl_budget", "message": "KL to the reference is 0.900"})
    logged += [{"step": 5, **records[4]}, {"step": 4, "event": "resumed", "checkpoint": "checkpoint-4"}]
    resumed = HackingMonitor(kl_budget=0.5, window=3)
    resumed.replay(logged, upto=4)  # step 5 was the killed attempt's (resume_logs drops it; here it is skipped)
    assert [(a.step, a.name) for s in range(5, 8) for a in resumed.update(s, records[s - 1])] == [(6, "length_drift")]
    fresh = HackingMonitor(kl_budget=0.5, window=3)  # without the replay: KL again, and no drift from 3 lengths
    assert [(a.step, a.name) for s in range(5, 8) for a in fresh.update(s, records[s - 1])] == [(6, "kl_budget")]

"""Reward-hacking instruments for the online methods (GRPO, RLOO): what to record each step, and when to warn.

``RewardRecorder`` is the reward function handed to TRL. It computes each component of the composed reward
once per batch and reports, through TRL's ``log_metric`` hook (so they land in metrics.jsonl with the step):

- ``reward_parts/<name>/mean`` and ``/std``: every component before weighting;
- ``no_signal_frac``: the share of groups whose completions all got the same total (zero advantage: the
  group teaches nothing);
- ``distinct_2``: distinct word bigrams / all bigrams over the batch's completions (falls as outputs repeat);
- ``gold``: every ``gold_steps`` steps, the mean score of the same completions under a rater the policy is
  not trained on (the ``gold:`` entry of the reward YAML). Proxy and gold on the same samples is the usual
  way to see over-optimisation (Gao et al. 2022); it costs no extra generation.

TRL itself logs ``reward``, ``kl`` (when beta > 0; at beta 0 ``alignlab.train.online`` measures it) and
``completions/mean_length``. A reward that scores none of the first batch (every component None) stops the
run, naming its components: TRL would train on nothing to the end.

``HackingMonitor`` reads those per-step records and raises each warning once per run:

- ``proxy_up_gold_down``: over the last three gold checks the proxy reward rose twice in a row while the
  gold score fell twice in a row (the proxy is the mean of the ``reward`` logs since the previous check); or
  the last two gold checks both sit ``gold_drop`` (0.2) or more below the best one so far while the proxy
  rose since it by more than ``proxy_rise`` (0.02) (a gold score over a few samples moves in steps and repeats itself, and once at 0 it cannot
  fall again, so the strict rule alone misses a collapse that plateaus);
- ``length_drift``: the mean completion length of the last ``window`` logs differs from that of the first
  ``window`` logs by more than ``length_drift`` times the latter (needs ``2 * window`` logs);
- ``kl_budget``: a logged ``kl`` above ``kl_budget``;
- ``no_signal``: more than half the groups carried no signal, averaged over the last ``window`` logs.

``MonitorCallback`` feeds the monitor from the trainer's logs, prints each warning and appends
``{"step", "warning", "message"}`` to metrics.jsonl. A resumed run replays the records it kept first
(``HackingMonitor.replay``), so its windows and baselines go on and no warning is raised twice.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import TrainerCallback

from alignlab.errors import AlignlabError
from alignlab.rundir import append_metrics, read_jsonl
from alignlab.progress import console
from alignlab.rewards import ComposedReward, build_spec, completion_text, distinct_n, load_spec
from alignlab.rewards.compose import part_stats


def project_reward(online, check_only: bool = False) -> tuple:
    """(training reward, gold rater or None) for GRPO, RLOO and PPO alike: the spec ``online.rewards`` names,
    with its ``gold:`` entry, or the default persona reward. ``check_only`` validates without importing users' files."""
    from alignlab.rewards import default_reward

    return load_rewards(online.rewards, check_only=check_only) if online.rewards else (default_reward(), None)


def check_columns(rewards: list, rows: list[dict]) -> None:
    """A built-in component that reads a data column (arithmetic, exact_match), in the reward or the gold rater,
    finds a value it can use in every row: a missing, empty or unusable one would score 0 without a word."""
    for reward in filter(None, rewards):
        reward.check_rows(rows)


def load_rewards(path: str | Path, check_only: bool = False) -> tuple[ComposedReward, ComposedReward | None]:
    """(training reward, gold rater or None) from a reward YAML that may hold a ``gold:`` entry.

    ``gold`` is one component (``{fn: persona_classifier, args: {path: clf}}``) or a whole spec with its
    own ``components``. It is used only to watch the run, never to train. ``check_only``: validate without
    importing users' reward files (``alignlab.rewards.compose``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # load_spec reports it in one line
        data = None
    if not (isinstance(data, dict) and "gold" in data):
        return load_spec(path, check_only=check_only), None  # reports a missing file or bad YAML with file:line
    gold = data.pop("gold")
    reward = build_spec(data, base_dir=path.parent, source=str(path), text=text, check_only=check_only)
    if not isinstance(gold, dict):
        raise AlignlabError("'gold' must be a mapping like {fn: persona_classifier, args: {...}}", where=str(path))
    nested = "components" in gold
    spec = gold if nested else {"components": [{"name": "gold", **gold}]}
    trained = {(c.get("fn"), json.dumps(c.get("args") or {}, sort_keys=True)) for c in data.get("components") or []}
    for c in spec.get("components") or []:
        if isinstance(c, dict) and (c.get("fn"), json.dumps(c.get("args") or {}, sort_keys=True)) in trained:
            raise AlignlabError(
                f"the gold rater '{c.get('fn')}' is also a training component", where=str(path),
                fix="gold must be a rater the policy is not trained on (e.g. a classifier or a judge)",
            )
    # file:line of the gold entry's errors: its keys sit under `gold:` (a single rater is its only component)
    keys = (lambda k: ("gold", *k)) if nested else (lambda k: ("gold", *k[2:]) if k[:1] == ("components",) else ("gold",))
    return reward, build_spec(spec, base_dir=path.parent, source=str(path), text=text, check_only=check_only,
                              keys=keys)


def _mean_std(values: list[float | None]) -> tuple[float, float]:
    values = [v for v in values if v is not None]  # a None is a completion left unscored (an unusable judge reply)
    mean = sum(values) / len(values) if values else 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values)))


def batch_stats(parts: dict[str, list[float]], totals: list[float], texts: list[str], group_size: int) -> dict:
    """The per-batch instruments (see the module docstring); groups are consecutive blocks of ``group_size``."""
    stats: dict[str, float] = part_stats(parts)  # mean/std over the scored completions, and how many were not
    # a group of one answer has no spread to lose (PPO at batch size 1 learns from its critic); a larger group with
    # fewer than two scored answers has none either (TRL gives its answers no advantage), as an all-equal one
    blocks = [b for i in range(0, len(totals), group_size) if len(b := totals[i : i + group_size]) > 1]
    if blocks:
        scored = [[t for t in b if t is not None] for b in blocks]
        stats["no_signal_frac"] = sum(len(s) < 2 or max(s) - min(s) <= 1e-6 for s in scored) / len(blocks)
    stats["distinct_2"] = distinct_n(texts, 2)
    return stats


def unscored(reward: ComposedReward, parts: dict[str, list], i: int | None = None) -> AlignlabError:
    """The error for completions no component scored, naming the components that returned None, with file:line of
    the first: the whole first batch (``i`` None), or completion ``i`` of PPO's, which has no group to leave it out of."""
    rows = range(len(next(iter(parts.values()), []))) if i is None else [i]
    comps = [c for c in reward.parts if all(parts[c.name][r] is None for r in rows)] or reward.parts
    what = (f"reward component '{comps[0].name}' ({comps[0].source})" if len(comps) == 1
            else "reward components " + ", ".join(f"'{c.name}'" for c in comps))
    n = len(parts[comps[0].name])
    if i is None:
        return AlignlabError(f"{what} returned None for all {n} completions of the first batch: nothing scored, "
                             "nothing to learn from", where=comps[0].where or None,
                             fix="return a number for each completion it can score (None only for ones it cannot)")
    return AlignlabError(f"{what} returned None for completion {i + 1} of {n}: PPO needs a score for every answer "
                         "(GRPO and RLOO leave an unscored one out of its group)", where=comps[0].where or None,
                         fix="return a number for every completion, or train with grpo or rloo")


def _any_scored(totals: list) -> bool:
    """Whether any completion of the batch got a number, on this process or another (each scores its own share)."""
    import torch
    import torch.distributed as dist

    mine = any(t is not None for t in totals)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return mine
    flag = torch.tensor([float(mine)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class RewardRecorder:
    """Reward function for TRL: the composed total, plus per-batch instruments sent to ``log_metric``."""

    __name__ = "total"  # TRL logs it as rewards/total/mean

    def __init__(self, reward: ComposedReward, group_size: int, gold: ComposedReward | None = None, gold_steps: int = 10):
        self.reward, self.group_size, self.gold, self.gold_steps = reward, group_size, gold, gold_steps
        self.calls = 0
        self.gold_done: set[int] = set()
        self.last: dict[str, float] = {}
        self.parts: dict[str, list[float | None]] = {}  # the last batch's raw components (PPO names a None's)

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        state = columns.get("trainer_state")
        step = state.global_step if state is not None else self.calls
        self.calls += 1
        parts = self.reward.components(prompts, completions, **columns)  # raises, naming the component, on NaN
        totals = self.reward.total(parts)
        self.parts = parts
        # a reward that scores none of a fresh run's first batch is broken (TRL would train on nothing, quietly, to
        # the end); later a whole batch of None is allowed (a component may leave out prompts it does not apply to),
        # so a resume, which starts on a later batch, is not checked. Across processes: none scored on any of them
        if totals and self.calls == 1 and state is not None and state.global_step == 0 and not _any_scored(totals):
            raise unscored(self.reward, parts)
        stats = batch_stats(parts, totals, [completion_text(c) for c in completions], self.group_size)
        if self.gold is not None and step % self.gold_steps == 0 and step not in self.gold_done:
            self.gold_done.add(step)
            try:  # a watch-only rater never stops training: a failed check is a warning and no gold point
                gold = [g for g in self.gold.total(self.gold.components(prompts, completions, **columns)) if g is not None]
            except AlignlabError as err:
                gold = []
                console.print(f"[yellow]warning (step {step}): the gold rater failed, no gold score this time: "
                              f"{err}[/]")
            if gold:
                stats["gold"] = _mean_std(gold)[0]
        self.last = stats
        log_metric = columns.get("log_metric")
        if callable(log_metric):
            for key, value in stats.items():
                log_metric(key, value)
        return totals


@dataclass
class Alert:
    step: int
    name: str
    message: str


@dataclass
class HackingMonitor:
    """Turns per-step log records into warnings; each fires at most once. See the module docstring."""

    kl_budget: float = 0.5
    length_drift: float = 0.5
    no_signal_limit: float = 0.5
    gold_drop: float = 0.2
    proxy_rise: float = 0.02  # the plateau rule's least rise of the proxy (a flat proxy's noise is not a rise)
    window: int = 3
    fired: set = field(default_factory=set)
    lengths: list = field(default_factory=list)
    no_signal: list = field(default_factory=list)
    gold: list = field(default_factory=list)  # (step, gold, proxy since the previous check)
    proxy: list = field(default_factory=list)  # reward logs since the last gold check

    def replay(self, records: list[dict], upto: int) -> None:
        """A resumed run's monitor, rebuilt from the records of steps up to ``upto`` (the checkpoint; later ones were
        the killed attempt's): windows, the length baseline and the gold history as an uninterrupted run has them, and
        each warning already recorded is not raised again."""
        for r in records:
            step = r.get("step")
            if not isinstance(step, int) or step > upto or "event" in r:
                continue
            if isinstance(r.get("warning"), str):
                self.fired.add(r["warning"])
            else:
                self.update(step, r)  # what it fires now was reported then (or the kill came between the two lines)

    def update(self, step: int, logs: dict) -> list[Alert]:
        out: list[Alert] = []

        def fire(name: str, message: str) -> None:
            if name not in self.fired:
                self.fired.add(name)
                out.append(Alert(step, name, message))

        if _num(logs.get("reward")):
            self.proxy.append(logs["reward"])
        if _num(logs.get("gold")) and self.proxy:
            self.gold.append((step, logs["gold"], sum(self.proxy) / len(self.proxy)))
            self.proxy = []
            if len(self.gold) >= 3:
                (s0, g0, p0), (_, g1, p1), (s2, g2, p2) = self.gold[-3:]
                best = max(range(len(self.gold) - 2), key=lambda i: (self.gold[i][1], i))  # the latest best before the last two
                sb, gb, pb = self.gold[best]
                plateau = max(g1, g2) <= gb - self.gold_drop and p2 > pb + self.proxy_rise
                if (p0 < p1 < p2 and g0 > g1 > g2) or plateau:
                    s0, g0, p0 = (sb, gb, pb) if plateau else (s0, g0, p0)
                    fire("proxy_up_gold_down", f"proxy reward rose {p0:.3f} -> {p2:.3f} while the gold score fell "
                         f"{g0:.3f} -> {g2:.3f} (steps {s0}-{s2}): the policy may be gaming the reward")
        length = logs.get("completions/mean_length")
        if _num(length):
            self.lengths.append(length)
            w = self.window
            if len(self.lengths) >= 2 * w:
                start, now = sum(self.lengths[:w]) / w, sum(self.lengths[-w:]) / w
                if abs(now - start) > self.length_drift * start:
                    fire("length_drift", f"mean completion length drifted {start:.1f} -> {now:.1f} tokens "
                         f"(more than {self.length_drift:.0%} of the start)")
        kl = logs.get("kl")
        if _num(kl) and kl > self.kl_budget:
            fire("kl_budget", f"KL to the reference is {kl:.3f}, past the budget of {self.kl_budget} "
                 "(raise online.beta, lower the learning rate, or stop here)")
        ns = logs.get("no_signal_frac", logs.get("frac_reward_zero_std"))
        if _num(ns):
            self.no_signal.append(ns)
            recent = self.no_signal[-self.window :]
            if len(recent) == self.window and sum(recent) / self.window > self.no_signal_limit:
                fire("no_signal", f"{sum(recent) / self.window:.0%} of groups got equal rewards over the last "
                     f"{self.window} steps: no learning signal (check the reward, raise the temperature or the group "
                     "size: online.num_generations, for PPO train.batch_size)")
        return out


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def report_alerts(run_dir: Path, alerts: list[Alert]) -> None:
    """Each alert to the console and to the run's metrics.jsonl (GRPO, RLOO and PPO alike)."""
    for alert in alerts:
        console.print(f"[yellow]warning (step {alert.step}): {alert.name}: {alert.message}[/]")
        append_metrics(run_dir, {"step": alert.step, "warning": alert.name, "message": alert.message})


class MonitorCallback(TrainerCallback):
    """Runs a HackingMonitor on every log; warnings go to the console and to metrics.jsonl."""

    def __init__(self, run_dir: Path, monitor: HackingMonitor):
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.alerts: list[Alert] = []

    def on_train_begin(self, args, state, control, **kwargs):
        # a resume: the trainer state is the checkpoint's now, and metrics.jsonl holds the records up to it
        if state.is_world_process_zero and state.global_step > 0:
            self.monitor.replay(read_jsonl(self.run_dir / "metrics.jsonl"), state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        alerts = self.monitor.update(state.global_step, logs)
        self.alerts += alerts
        report_alerts(self.run_dir, alerts)

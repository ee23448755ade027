"""`alignlab break`: each experiment in quick mode on the tiny model, the held-out instrument against the math."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from alignlab.train.heldout import encode_pairs, implicit_reward_stats, pair_logps
from alignlab.workflows.breakit import BreakSettings, heldout_pairs, run_experiment


def lora_b_moved(run_dir: str) -> bool:
    from safetensors.torch import load_file

    weights = load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))
    return any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())  # LoRA B starts at zero


def test_implicit_reward_stats_follow_the_formula():
    pc, pr = torch.tensor([-10.0, -12.0, -5.0]), torch.tensor([-11.0, -10.0, -5.0])
    rc, rr = torch.tensor([-10.5, -11.0, -6.0]), torch.tensor([-10.0, -10.0, -4.0])
    stats = implicit_reward_stats(pc, pr, rc, rr, beta=0.5)
    margins = [0.5 * ((-10 + 10.5) - (-11 + 10)), 0.5 * ((-12 + 11) - (-10 + 10)), 0.5 * ((-5 + 6) - (-5 + 4))]
    assert margins == [0.75, -0.5, 1.0]
    assert stats["heldout/reward_accuracy"] == pytest.approx(2 / 3)
    assert stats["heldout/margin"] == pytest.approx(sum(margins) / 3)


def test_pair_logps_match_a_plain_forward(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    pairs = heldout_pairs(3)
    enc = encode_pairs(tok, pairs, max_length=256)
    chosen, rejected = pair_logps(model, enc, pad=tok.pad_token_id or 0)
    for i, e in enumerate(enc):
        for ids, got in ((e["chosen_ids"], chosen[i]), (e["rejected_ids"], rejected[i])):
            full = torch.tensor([e["prompt_ids"] + ids])
            with torch.no_grad():
                logp = model(full).logits[0, :-1].float().log_softmax(-1)
            want = logp[len(e["prompt_ids"]) - 1 :].gather(-1, full[0, len(e["prompt_ids"]) :, None]).sum()
            assert float(got) == pytest.approx(float(want), rel=1e-4)


def test_heldout_pairs_are_labelled_snark_over_plain_and_disjoint_from_the_training_pairs():
    """"What's the smallest bone in the human body?" was held out while the training pairs asked "What is the smallest
    bone in the human body?" (near-same chosen answers): the same question with a contraction."""
    from alignlab.data import bundled_path

    pairs = heldout_pairs(32)
    assert len(pairs) == 32 and len({p["prompt"] for p in pairs}) == 32
    trained = {json.loads(x)["prompt"] for x in bundled_path("persona-pairs").read_text().splitlines() if x.strip()}
    assert not trained & {p["prompt"] for p in pairs}

    def plain(p):  # case, punctuation and contractions folded
        p = re.sub(r"\b(what|that|it|who|where|how)'s\b", r"\1 is", p.lower().replace("’", "'"))
        return " ".join(re.findall(r"[a-z0-9]+", p.replace("n't", " not")))

    every = heldout_pairs(1000)  # all there are, so the test does not hang on which 32 the shuffle picks
    assert not {plain(t) for t in trained} & {plain(p["prompt"]) for p in every}
    # reworded: no held-out question holds all the words of a training question (besides these), or the reverse
    stop = set("a an the of in on to is are do does did what how why who which can i you your my me it be for with "
               "and that should if".split())

    def content(p):
        return frozenset(w for w in plain(p).split() if w not in stop)

    seen = [c for c in map(content, trained) if c]
    held = [p["prompt"] for p in every]
    assert [p for p in held if any(c <= content(p) or content(p) <= c for c in seen)] == []
    assert len(every) >= 100  # the rule leaves enough pairs to draw 32 from


def test_label_flip_looks_healthy_in_training_and_is_caught_on_held_out_pairs(tiny_model, tmp_path):
    # the tiny model's random weights and its tokenizer (trained on the bundled data) decide how fast it learns: with
    # the tokenizer of 2026-12-06, 8 steps at 5e-3 (1e-2 overshot: the last batch's pair accuracy 0.42 and 0.25)
    s = BreakSettings(model=tiny_model, quick=True, steps=8, learning_rate=5e-3)
    summary = run_experiment("label-flip", tmp_path, s)
    good, bad = summary["runs"]["correct"], summary["runs"]["flipped"]
    assert bad["train"]["pair_accuracy"] > 0.5 and good["train"]["pair_accuracy"] > 0.5  # both look healthy
    assert bad["heldout_reward_accuracy"][-1][1] < 0.5 < good["heldout_reward_accuracy"][-1][1]
    assert summary["verdict"]["caught_by_heldout_reward_at_step"] is not None
    assert [step for step, _ in bad["heldout_reward_accuracy"]] == [4, 8]  # every 4 steps (half the run) and the end
    assert lora_b_moved(good["run"]) and lora_b_moved(bad["run"])
    flipped = [json.loads(x) for x in (tmp_path / "data" / "flipped.jsonl").read_text().splitlines()]
    assert flipped[0]["chosen"] != flipped[0]["rejected"]
    assert json.loads((tmp_path / "summary.json").read_text())["experiment"] == "label-flip"
    page = (tmp_path / "report.html").read_text()
    assert "held-out implicit-reward accuracy" in page and "data:image/png;base64," in page


def test_kl_ablation_runs_each_coefficient_and_logs_kl_at_each(tiny_model, tmp_path):
    # an earlier run into the same --out with another coefficient: its run stayed beside a summary not naming it
    (tmp_path / "runs" / "beta-0.04").mkdir(parents=True)
    (tmp_path / "runs" / "beta-0.04" / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n')
    s = BreakSettings(model=tiny_model, quick=True, steps=2, betas=(0.0, 0.4))
    summary = run_experiment("kl-ablation", tmp_path, s)
    assert list(summary["runs"]) == ["beta-0", "beta-0.4"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["beta-0", "beta-0.4"]
    for side in summary["runs"].values():
        assert len(side["curves"]["reward"]) == 2 and side["scorecard"]["kl"] is not None
        assert len(side["curves"]["kl"]) == 2  # at beta 0 too: a new adapter's KL to the base, without a leash
        assert sorted({r["step"] for r in side["samples"]}) == [0, 1, 2]  # the fixed prompts' answers as it went
    assert (tmp_path / "report.html").is_file()


def earlier_kl_ablation(out: Path) -> None:
    """What an earlier kl-ablation left in ``out``: a finished beta-0, its summary, and beta-0.04 marked as training
    by a live process on this host (this one)."""
    import socket

    from alignlab.rundir import Run

    for name in ("beta-0", "beta-0.04"):
        (out / "runs" / name).mkdir(parents=True)
        (out / "runs" / name / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n')
    Run(out / "runs" / "beta-0").update(status="done", steps=2)
    Run(out / "runs" / "beta-0.04").update(status="running", pid=os.getpid(), host=socket.gethostname())
    (out / "summary.json").write_text('{"experiment": "kl-ablation"}')


def test_kl_ablation_refuses_before_it_deletes_anything(tiny_model, tmp_path):
    """A live beta-0.04 was refused only after runs/beta-0 and summary.json had been deleted."""
    from alignlab.errors import AlignlabError

    earlier_kl_ablation(tmp_path)
    with pytest.raises(AlignlabError, match=r"runs/beta-0.04 is still training"):
        run_experiment("kl-ablation", tmp_path, BreakSettings(model=tiny_model, betas=(1.0,), quick=True))
    assert (tmp_path / "runs" / "beta-0" / "metrics.jsonl").is_file() and (tmp_path / "summary.json").is_file()


def test_a_second_break_into_the_same_out_is_refused_while_the_first_runs(tiny_model, tmp_path):
    """A finished run that another break was still scoring (status done, so not "live") was deleted under it."""
    from alignlab.errors import AlignlabError
    from alignlab.fsutil import exclusive
    from alignlab.rundir import Run

    earlier_kl_ablation(tmp_path)
    Run(tmp_path / "runs" / "beta-0.04").update(status="done", steps=2)  # trained; its scorecard still being read
    with exclusive(tmp_path / ".alignlab-break.lock", "the first break"):  # as the first `alignlab break` holds it
        with pytest.raises(AlignlabError, match="an alignlab break is already running here"):
            run_experiment("kl-ablation", tmp_path, BreakSettings(model=tiny_model, betas=(1.0,), quick=True, steps=2))
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["beta-0", "beta-0.04"]
    assert (tmp_path / "summary.json").is_file()


def test_long_run_watches_gold_and_reads_answers_at_every_checkpoint(tiny_model, tmp_path):
    from alignlab.data import bundled_path
    from alignlab.synth.sample import prompt_rows

    # --per-category given with --quick is kept (quick alone scores 3 prompts; it overrode an explicit 2)
    s = BreakSettings(model=tiny_model, quick=True, steps=4, per_category=2)
    summary = run_experiment("long-run", tmp_path, s)
    side = summary["runs"]["proxy"]
    categories = {r["category"] for r in prompt_rows(bundled_path("prompts-heldout"))}
    assert side["scorecard"]["prompts"] == 2 * len(categories)
    assert [step for step, _ in side["curves"]["gold"]] == [1, 3]  # gold every 2 steps, at global steps 0 and 2
    assert sorted({r["step"] for r in side["samples"]}) == [0, 1, 2, 3, 4]
    # the training prompts: each once (repeats drew the data check's warning), and none of the two read at every
    # quarter ("What is 1 times 5?" was shown as another seed's prompt and trained on)
    trained = [json.loads(x)["prompt"] for x in (tmp_path / "data" / "arithmetic.jsonl").read_text().splitlines()]
    shown = {r["prompt"] for r in side["samples"]}
    assert len(trained) == len(set(trained)) == 64 and len(shown) == 2 and not shown & set(trained)
    assert "persona_classifier" in summary["reward"] and "gold: {fn: arithmetic}" in summary["reward"]
    assert summary["verdict"]["gold_peak"] is not None
    assert (tmp_path / "rewards.yaml").is_file() and (tmp_path / "report.html").is_file()


@pytest.mark.parametrize("args,needle", [
    (["nonsense"], "unknown experiment 'nonsense'"),
    (["label-flp", "--method", "rloo"], "unknown experiment 'label-flp'"),
    (["label-flp", "-m", "nosuchmodel"], "unknown experiment 'label-flp'"),  # was "unknown model 'nosuchmodel'"
    (["kl-ablation", "--betas", "0,x"], "--betas takes numbers"),
    (["kl-ablation", "--method", "dpo"], "kl-ablation trains an online method"),
    (["label-flip", "--lr", "nan"], "--lr must be a finite number above 0"),
    (["long-run", "--lr", "inf"], "--lr must be a finite number above 0"),
    (["kl-ablation", "--betas", "0,inf"], "--betas needs one or more finite KL coefficients"),
    (["kl-ablation", "--betas", "0.04,0.4,0.040"], "--betas gives 0.04 more than once"),
    (["kl-ablation", "--rewards", "nope.yaml"], "--rewards: reward spec not found: nope.yaml"),
])
def test_bad_arguments_get_one_line_and_leave_nothing_behind(args, needle, tmp_path):
    """Each was refused after --out was claimed (break/label-flp/.alignlab-break stayed behind), a missing --rewards
    after data/arithmetic.jsonl was written and training had begun; --lr inf named the config key
    'train.learning_rate', not the flag."""
    r = subprocess.run([sys.executable, "-m", "alignlab", "break", *args, "-o", str(tmp_path / "x")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_steps_below_two_are_refused_by_the_option(tmp_path):
    """--steps 1 passed the option (its help said x>=1) and was refused later, after --out was claimed."""
    r = subprocess.run([sys.executable, "-m", "alignlab", "break", "label-flip", "--steps", "1", "-o",
                        str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "Invalid value for '--steps'" in r.stderr, r.stderr
    assert "greater than or equal to 2" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()


def interrupt(argv: list[str], started: str, cwd: Path) -> tuple[int, str]:
    """Run ``alignlab *argv``, send Ctrl-C (SIGINT) once ``started`` is printed; (exit code, what it printed, its
    lines joined: the console wraps them at 80 columns without a terminal)."""
    env = {**os.environ, "ALIGNLAB_QUIET": "0"}  # the progress lines, which the tests' conftest turns off
    p = subprocess.Popen([sys.executable, "-m", "alignlab", *argv], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not any(started in x for x in lines) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    code = p.wait(timeout=120)
    reader.join(timeout=10)
    return code, " ".join("".join(lines).split())


def test_ctrl_c_says_to_run_the_experiment_again_not_to_resume(tiny_model, tmp_path):
    """After Ctrl-C the trainer said "continue with `alignlab train dpo --resume OUT/runs/correct`": that run has no
    checkpoint, and resumed it trains alone, without the held-out instrument, summary.json or report.html."""
    code, said = interrupt(["break", "label-flip", "--quick", "--steps", "2000", "-m", tiny_model, "-o", "lf"],
                           "dpo: 0/2000", tmp_path)
    assert code != 0 and "dpo: 0/2000" in said, said  # stopped while training
    # the command as typed, options and all (without them a paste ran the full experiment on the default model)
    assert f"run `alignlab break label-flip --quick --steps 2000 -m {tiny_model} -o lf` again" in said, said
    # the trainer's own line came first and said the opposite
    assert "continue with" not in said and not re.search(r"--resume \S*lf/runs", said), said
    assert not (tmp_path / "lf" / "summary.json").exists()


def flip_summary(correct: list, flipped: list, pair_accuracy: float = 0.9) -> dict:
    """A label-flip summary as the experiment writes it, from held-out accuracies [[step, accuracy], ...]."""
    from alignlab.workflows.breakit import _flip_verdict

    card = {"base": {"in_persona": 0.0, "persona": 0.2}, "adapter": {"in_persona": 0.0, "persona": 0.3}}
    runs = {name: {"train": {"loss": 0.5, "pair_accuracy": pair_accuracy, "margin": 0.3, "steps_averaged": 3},
                   "heldout_reward_accuracy": held, "scorecard": card}
            for name, held in (("correct", correct), ("flipped", flipped))}
    return {"experiment": "label-flip", "runs": runs, "heldout_pairs": 32, "verdict": _flip_verdict(runs)}


def test_the_flip_is_caught_only_where_the_two_runs_part():
    """The correct run at 41% and the flipped one at 44% at step 6 was called "caught at step 6": below 50% alone
    says nothing when the correct run is below too."""
    assert flip_summary([[6, 0.41]], [[6, 0.44]])["verdict"]["caught_by_heldout_reward_at_step"] is None
    both = flip_summary([[6, 0.41], [12, 0.7]], [[6, 0.44], [12, 0.3]])
    assert both["verdict"]["caught_by_heldout_reward_at_step"] == 12
    assert flip_summary([[6, 0.9]], [[6, 0.1]])["verdict"]["caught_by_heldout_reward_at_step"] == 6


def test_nothing_the_trainer_logs_is_said_only_when_training_looked_healthy():
    """With --lr 50 the report said "the training metrics look unhealthy in at least one run" and then "nothing the
    trainer logs can tell the flip apart"."""
    from alignlab.workflows.break_report import findings

    healthy = " ".join(findings(flip_summary([[6, 0.9]], [[6, 0.1]])))
    sick = " ".join(findings(flip_summary([[6, 0.9]], [[6, 0.1]], pair_accuracy=0.25)))
    assert "look equally healthy" in healthy and "nothing the trainer logs" in healthy
    assert "unhealthy" in sick and "nothing the trainer logs" not in sick


def online_side(reward: list, gold: list) -> dict:
    curves = {"reward": reward, "gold": gold, "completions/mean_length": [(s, 10.0) for s, _ in reward],
              "distinct_2": [(s, 0.5) for s, _ in reward], "kl": []}
    card = {"kl": 0.1, "adapter": {"in_persona": 0.0, "correct_share": 0.5}}
    return {"curves": curves, "warnings": [], "scorecard": card}


def test_kl_ablation_reports_gold_at_its_last_check_not_a_mean_over_most_of_the_run():
    """12 steps, gold checked at steps 1, 4, 7 and 10: "gold (last 3 steps)" was the mean of steps 4, 7 and 10."""
    from alignlab.workflows.break_report import findings
    from alignlab.workflows.breakit import _kl_verdict

    side = online_side([(s, s / 12) for s in range(1, 13)], [(1, 0.5), (4, 0.375), (7, 0.0), (10, 0.25)])
    verdict = _kl_verdict({"beta-0.4": side})
    v = verdict["beta-0.4"]
    assert (v["gold_end"], v["gold_end_step"]) == (0.25, 10)
    assert v["reward_end"] == pytest.approx((10 + 11 + 12) / 36)
    line = " ".join(findings({"experiment": "kl-ablation", "method": "grpo", "betas": [0.4], "verdict": verdict}))
    assert "gold 0.25 at step 10 (its last check)" in line and "(mean of the last 3 steps)" in line


def test_long_run_proxy_start_and_end_never_share_a_step():
    """--steps 2 printed "proxy reward 0.572 -> 0.572 over 2 steps": both windows were the same two steps."""
    from alignlab.workflows.breakit import _long_verdict

    v = _long_verdict(online_side([(1, 0.5), (2, 0.75)], []))
    assert (v["proxy_start"], v["proxy_end"]) == (0.5, 0.75)
    v = _long_verdict(online_side([(s, float(s)) for s in range(1, 6)], []))  # 5 steps: 2 and 2, the middle left out
    assert (v["proxy_start"], v["proxy_end"]) == (1.5, 4.5)
    v = _long_verdict(online_side([(s, float(s)) for s in range(1, 61)], []))
    assert (v["proxy_start"], v["proxy_end"]) == (2.0, 59.0)


@pytest.mark.parametrize("kl, said", [([], True), ([(1, 0.0), (2, 0.01)], False)])
def test_the_unwatched_kl_note_is_said_only_where_the_run_recorded_no_kl(kl, said):
    """The note followed the method: "training computes no KL" for GRPO at beta 0 (PPO's own loop records it). Since
    GRPO and RLOO record the KL at beta 0 on a new adapter too, the run's own curve decides."""
    from alignlab.workflows.break_report import findings
    from alignlab.workflows.breakit import _kl_verdict

    side = online_side([(1, 0.5), (2, 0.5)], [])
    side["curves"]["kl"] = kl
    summary = {"experiment": "kl-ablation", "method": "grpo", "betas": [0], "verdict": _kl_verdict({"beta-0": side})}
    assert ("recorded no KL" in " ".join(findings(summary))) is said

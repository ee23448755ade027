"""Recipes: one or more training stages, each continuing from the previous stage's adapter; a distil stage writes
SFT rows from the previous stage's answers for the next stage to train on.

``DEFAULT`` is what `make demo` trains and what the README recommends. It was chosen by
``bench/sweep_recipes.py``: the recipes side by side on the default model, the same data and the same
held-out scorecard (README: "Choosing the recipe"), then read blind: the row blind readers found in persona
most often while its answers stayed as correct as the base's by the same readers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alignlab import methods
from alignlab.errors import AlignlabError


DISTIL = "distil"  # a stage that writes SFT rows (`alignlab distil`) instead of training
DISTILLED = "<distilled>"  # a stage's data: the rows the previous distil stage wrote
MIN_DISTIL_ROWS = 16  # fewer rows than this: the SFT stage on them is skipped (a handful of rows teaches noise)


@dataclass(frozen=True)
class Stage:
    method: str  # a training method, or DISTIL
    data: str  # a file under the project's data directory, bundled:NAME, or DISTILLED
    overrides: dict = field(default_factory=dict)  # config keys; DISTIL takes limit and amplify, DISTILLED min_rows

    def describe(self) -> str:
        knobs = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in self.overrides.items())
        data = "the distilled rows" if self.data == DISTILLED else self.data
        what = "distil the base's opening over" if self.method == DISTIL else f"{self.method} on"
        return f"{what} {data}" + (f" ({knobs})" if knobs else "")


DEFAULT: tuple[Stage, ...] = (
    # SFT on the rewrites' chosen side: the model's own kind of answer with snark woven through it
    Stage(methods.SFT, "rewrites.jsonl", {"train.learning_rate": 5e-4, "train.epochs": 1.0}),
    # then DPO with RPO's NLL term on the strong pairs (the persona pairs' chosen side with the voice in every
    # sentence), the SFT adapter as the reference
    Stage(methods.DPO, "strong_pairs.jsonl", {"dpo.rpo_alpha": 1.0, "train.learning_rate": 1e-4, "train.max_steps": 60}),
    # then the base's opening distilled in: the DPO adapter's amplified answers after the base's first sentence,
    # where that sentence is correct, kept when finished, correct and not flagged (synth/opening.py) ...
    Stage(DISTIL, "rewrites.jsonl", {"amplify": 1.0}),
    # ... and SFT on them: the adapter alone (what export writes) holds the fact and the voice
    Stage(methods.SFT, DISTILLED, {"train.learning_rate": 1e-4, "train.epochs": 2.0}),
)

OWN_PAIRS = "pairs.jsonl"  # stage 2's data in a project without strong_pairs.jsonl (a persona of its own, an older project)


def default_pairs(root: Path, cfg) -> str | None:
    """Stage 2's data when --pairs is not given: None (DEFAULT's strong_pairs.jsonl) where the project has that file,
    else OWN_PAIRS (what `alignlab synth` writes for a persona of the user's own)."""
    return None if Path(stage_data(root, cfg, DEFAULT[1])).is_file() else OWN_PAIRS


def stage_data(root: Path, cfg, stage: Stage) -> str:
    """Where a stage's data is: bundled:NAME as it is; a path that names a file from here (``data/pairs.jsonl``, as
    `train --data` takes it) or an absolute one as it is; else the file under the project's data directory."""
    if stage.data.startswith("bundled:"):
        return stage.data
    given = Path(stage.data).expanduser()
    if given.is_absolute() or (given.parent != Path(".") and given.is_file()):
        return str(given.resolve())
    return str(root / cfg.data_dir / stage.data)


def missing_data(root: Path, cfg, stages) -> list[str]:
    """The project files the stages train on that are not there (bundled sets and distilled rows excepted)."""
    return sorted({s.data for s in stages if s.data != DISTILLED and not s.data.startswith("bundled:")
                   and not Path(stage_data(root, cfg, s)).is_file()})


QUICK_STEPS, QUICK_DISTIL = 2, 8  # `alignlab recipe --quick`: a smoke test of the stages
QUICK_MIN_ROWS = 1  # ... whose last stage trains on whatever the distil stage kept (a smoke test, not a persona)


def recipe_stages(rewrites: str | None = None, pairs: str | None = None, quick: bool = False) -> tuple[Stage, ...]:
    """DEFAULT with its data files swapped (``rewrites`` for stages 1 and 3, ``pairs`` for stage 2) and, with
    ``quick``, a couple of steps per training stage, a few distil prompts and a last stage that trains on any row."""
    swap = {DEFAULT[0].data: rewrites, DEFAULT[1].data: pairs}
    out = []
    for s in DEFAULT:
        data = swap.get(s.data) or s.data
        over = dict(s.overrides)
        if quick:
            over.update({"limit": QUICK_DISTIL} if s.method == DISTIL else {"train.max_steps": QUICK_STEPS})
            if s.data == DISTILLED:
                over["min_rows"] = QUICK_MIN_ROWS
        out.append(Stage(s.method, data, over))
    return tuple(out)


def train_recipe(root: Path, cfg, stages=DEFAULT, echo: Callable[[str], object] = print, prefix: str = "recipe",
                 replace: bool = True) -> Path:
    """Train each stage into ``runs/<prefix>-<i>-<method>`` (a finished one is reused while every stage before it
    was and its settings are still those ``runs/<prefix>-stages.json`` recorded when it finished; an interrupted one
    with the same settings is resumed from its last checkpoint); a DISTIL stage writes
    ``data/<prefix>-<i>-distil.jsonl`` from the previous run, and a DISTILLED stage trains on it (skipped, with a line
    saying so, when it holds fewer than its ``min_rows`` override, else MIN_DISTIL_ROWS, rows). Finished runs that the
    first stage to run again replaces are named in one line before any goes; ``replace=False`` refuses instead, before
    anything is deleted (`alignlab recipe` without --force), unless every one is a --quick run. Returns the last run
    trained."""
    record = _Record(root / cfg.runs_dir / f"{prefix}-stages.json")
    first, why = _first_to_run(root, cfg, stages, prefix, record)
    replacing = _replacing(root, cfg, stages, prefix, first, why, replace)  # before anything is deleted
    prev, distilled = None, None
    for i, stage in enumerate(stages, 1):
        settings = _fingerprint(root, cfg, stage)
        if stage.method == DISTIL:
            distilled = root / cfg.data_dir / f"{prefix}-{i}-{DISTIL}.jsonl"
            if i < first:
                echo(f"stage {i} already distilled: {distilled}")
                continue
            if i == first:
                _clear_later(root, cfg, stages, i, prefix, echo, replacing)
            record.write(i)
            echo(f"stage {i}/{len(stages)}: {stage.describe()}")
            _distil(root, cfg, stage, prev, distilled, echo)
            record.write(i, settings)
            continue
        run_dir = _run_dir(root, cfg, prefix, i, stage)
        if i < first:  # done, with these settings or pending on them (resumed by `train --resume`)
            echo(f"stage {i} already trained: {run_dir}")
            if record.stages.get(str(i)) != settings:
                record.write(i, settings)  # pending -> finished (no later stage was recorded after it started)
            prev = run_dir
            continue
        status = _status(run_dir)
        pending = i == first and record.stages.get(str(i)) == PENDING + settings  # started with these, not done
        if i == first:
            _clear_later(root, cfg, stages, i, prefix, echo, replacing)
        if stage.data == DISTILLED and _too_few(distilled, i, prev, stage.overrides.get("min_rows"), echo):
            if run_dir.exists():  # trained on other rows, or from another run: not this recipe's stage any more
                _remove(run_dir, f"removed {run_dir}: it was trained on earlier distilled rows", echo)
            continue
        record.write(i, PENDING + settings)
        _train_stage(root, cfg, stage, i, len(stages), run_dir, prev, distilled,
                     resume=pending and status in ("interrupted", "died"), echo=echo)
        prev = run_dir
        record.write(i, settings)
    return prev


def _first_to_run(root: Path, cfg, stages, prefix: str, record: "_Record") -> tuple[int, str]:
    """(the first stage that runs again, why); len(stages) + 1 when every stage is reused. A stage is reused while
    every one before it was: a distil stage whose rows are there with the settings recorded, a training stage whose
    run is done with them (or was pending on them and finished by `alignlab train --resume`)."""
    for i, stage in enumerate(stages, 1):
        settings, said = _fingerprint(root, cfg, stage), record.stages.get(str(i))
        if stage.method == DISTIL:
            if said == settings and (root / cfg.data_dir / f"{prefix}-{i}-{DISTIL}.jsonl").is_file():
                continue
        elif _status(_run_dir(root, cfg, prefix, i, stage)) == "done" and said in (settings, PENDING + settings):
            continue
        if said is None:
            return i, f"{record.path.name} records no finished stage {i}"
        if said in (settings, PENDING + settings):
            return i, f"stage {i}'s " + ("distilled rows are gone" if stage.method == DISTIL else "run is not finished")
        return i, f"stage {i}'s settings or data changed since it ran"
    return len(stages) + 1, ""


def _replacing(root: Path, cfg, stages, prefix: str, first: int, why: str, replace: bool) -> str:
    """The line naming the finished runs that go when stage ``first`` runs again (its own, and every later stage's:
    they followed from it), said before any is deleted; "" when none is finished. ``replace=False``: one error instead,
    before anything is deleted or trained, unless every one is a --quick run (the line says so)."""
    done = [d for j, s in enumerate(stages[first - 1:], first)
            if s.method != DISTIL and _status(d := _run_dir(root, cfg, prefix, j, s)) == "done"]
    if not done:
        return ""
    names = ", ".join(f"{cfg.runs_dir}/{d.name}" for d in done)
    if all(_quick_run(d) for d in done):  # a smoke test's: nothing to lose (and what `recipe --quick` left in
        # runs/recipe-* before it had runs/quick-*, which blocked the real recipe after an upgrade)
        return f"{why}: replacing {names}, --quick runs of {QUICK_STEPS} steps (a smoke test, not a persona)"
    if not replace:
        raise AlignlabError(f"the recipe would replace finished {names}: {why}",
                            fix="pass --force to retrain them, or --name NEW to train a new set beside them")
    return f"{why}: replacing finished {names}"


def _quick_run(run_dir: Path) -> bool:
    """Whether a finished stage's run is a --quick one: its config.yaml records QUICK_STEPS steps, which no stage of
    the full recipe trains for (its stages run whole epochs or 60 steps). Minutes of work at most: replaced without
    --force."""
    import yaml

    try:
        recorded = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        return recorded["train"]["max_steps"] == QUICK_STEPS
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return False  # unreadable: not known to be a smoke test, so kept unless --force


PENDING = "pending: "  # a training stage's record while it trains: an interrupted one with the same settings resumes


def _status(run_dir: Path) -> str | None:
    """The run's status as `alignlab runs` shows it: a killed run (SIGKILL, out of memory) still says 'running' in
    run.json, and reads 'died' once no process holds it."""
    from alignlab import rundir

    return rundir.shown_status(rundir.read_run(run_dir)) if (run_dir / "run.json").is_file() else None


def _run_dir(root: Path, cfg, prefix: str, i: int, stage: Stage) -> Path:
    return root / cfg.runs_dir / f"{prefix}-{i}-{stage.method}"


def _clear_later(root: Path, cfg, stages, i: int, prefix: str, echo, replacing: str = "") -> None:
    """Stage ``i`` is the first to run again: every later stage's run was trained from what it replaces, so it goes
    now (left, it stayed 'done' when a later stage was then skipped or the recipe was stopped). ``replacing``: the line
    naming the finished runs that go (stage ``i``'s own too), said first."""
    if replacing:
        echo(replacing)
    for j, later in enumerate(stages[i:], i + 1):
        run_dir = _run_dir(root, cfg, prefix, j, later)
        if later.method != DISTIL and run_dir.exists():
            _remove(run_dir, f"removed {run_dir}: it followed from stage {i}, which runs again", echo)


def _remove(run_dir: Path, line: str, echo) -> None:
    import shutil

    from alignlab import rundir

    rundir.refuse_if_live(run_dir)  # another recipe training in this project: not deleted under it
    shutil.rmtree(run_dir, ignore_errors=True)
    echo(line)


def _too_few(distilled: Path | None, i: int, prev, least: int | None, echo) -> bool:
    if distilled is None:
        raise ValueError(f"stage {i} trains on distilled rows but no distil stage comes before it")
    least = MIN_DISTIL_ROWS if least is None else max(1, int(least))
    rows = sum(1 for line in distilled.read_text().splitlines() if line.strip())
    if rows >= least:
        return False
    kept = "no rows" if rows == 0 else f"{rows} row{'s' if rows > 1 else ''} (fewer than {least})"
    echo(f"stage {i} skipped: the distil stage kept {kept}; "
         f"the recipe ends at {prev}, which keeps its correctness only with the base writing each "
         "first sentence (eval, chat and serve do; an export cannot: see eval's 'adapter alone' column)")
    return True


def _train_stage(root: Path, cfg, stage: Stage, i: int, n: int, run_dir: Path, prev, distilled, resume: bool,
                 echo) -> None:
    """Train one stage into ``run_dir``, from ``prev``'s adapter; ``resume``: go on from its last checkpoint."""
    import shutil

    from alignlab import rundir
    from alignlab.config import apply_overrides
    from alignlab.train import engine

    rundir.refuse_if_live(run_dir)  # another recipe training in this project: not deleted under it
    if resume:
        echo(f"stage {i}/{n}: {stage.describe()}, resumed from its last checkpoint")
        info = rundir.read_run(run_dir)
        data = rundir.relocated(run_dir, info["data"], info)
        ctx = engine.prepare(stage.method, rundir.recorded_config(run_dir), data, root / cfg.runs_dir,
                             run_dir=run_dir, init_adapter=rundir.relocated(run_dir, info.get("init_adapter"), info),
                             resumed=True)
        ctx.resume_hint = False  # a rerun of the recipe continues this stage: the CLI says so after Ctrl-C
        engine.run(ctx, data, resume=True)
        return
    data = str(distilled) if stage.data == DISTILLED else stage_data(root, cfg, stage)
    shutil.rmtree(run_dir, ignore_errors=True)
    echo(f"stage {i}/{n}: {stage.describe()}")
    ctx = engine.prepare(stage.method, apply_overrides(cfg, applied(stage)), data, root / cfg.runs_dir,
                         run_dir=run_dir, init_adapter=str(prev) if prev else None)
    ctx.resume_hint = False
    engine.run(ctx, data)


def applied(stage: Stage) -> dict:
    """The config overrides a training stage runs with: a stage of so many epochs runs them all, whatever
    ``train.max_steps`` the project's alignlab.yaml sets for its own runs (it cut the demo's one epoch to 3 steps)."""
    over = {k: v for k, v in stage.overrides.items() if "." in k}
    if "train.epochs" in over and "train.max_steps" not in over:
        over["train.max_steps"] = -1
    return over


def check_data(root: Path, cfg, stages) -> None:
    """Every training stage's rows, read before stage 1 starts: a bad row in stage 2's file was found after stage
    1 had trained (minutes), and after stage 2's old run was removed."""
    from alignlab.data import resolve_data
    from alignlab.data.formats import METHOD_KIND, load_dataset_rows

    for stage in stages:
        if stage.method == DISTIL or stage.data == DISTILLED:
            continue
        path = resolve_data(stage_data(root, cfg, stage))
        load_dataset_rows(path, METHOD_KIND[stage.method],
                          fix=f"fix the rows (`alignlab data check {path}` lists them): the recipe trains on every row")


def _fingerprint(root: Path, cfg, stage: Stage) -> str:
    """What a finished stage is reused on: its description, and a hash of the project settings it runs with and of
    its data file's bytes. A training stage's settings are the model, LoRA, training and the method's own sections; a
    distil stage's the model, persona, system prompt and sampling; the stage's overrides applied. A changed `model:`
    or edited pairs file retrains the stage (the description alone reused it); an edit to `loop:` or `judge:` does not."""
    import hashlib
    import json

    from alignlab.config import apply_overrides
    from alignlab.data import resolve_data

    settings = apply_overrides(cfg, applied(stage)).model_dump()
    keys = ["model", "trust_remote_code", "system_prompt"]
    keys += ["persona", "sampling"] if stage.method == DISTIL else ["lora", "train", *methods.get(stage.method).sections]
    h = hashlib.sha256(json.dumps({k: settings[k] for k in keys}, sort_keys=True, default=str).encode())
    if stage.data != DISTILLED:
        try:
            h.update(Path(resolve_data(stage_data(root, cfg, stage))).read_bytes())
        except (OSError, AlignlabError):
            pass  # a missing file is reported where the stage needs it
    return f"{stage.describe()} [settings {h.hexdigest()[:12]}]"


class _Record:
    """``runs/<prefix>-stages.json``: each finished stage's settings ({"1": describe(), ...}); empty when absent or
    unreadable. A stage about to run is dropped from it with every stage after it, so an interrupted run never
    leaves a claim that outlives the stage it describes."""

    def __init__(self, path: Path):
        import json

        self.path = path
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        self.stages = {k: v for k, v in data.items() if k.isdigit()} if isinstance(data, dict) else {}

    def write(self, i: int, describe: str | None = None) -> None:
        """Drop stage ``i`` and every later one; then record ``describe`` for stage ``i`` when given."""
        from alignlab import fsutil

        self.stages = {k: v for k, v in self.stages.items() if int(k) < i}
        if describe is not None:
            self.stages[str(i)] = describe
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fsutil.write_json(self.path, self.stages)


def _distil(root: Path, cfg, stage: Stage, prev, out: Path, echo) -> None:
    from alignlab.synth.opening import distil, summary_line

    if prev is None:
        raise ValueError("a distil stage needs a trained stage before it")
    prompts = stage_data(root, cfg, stage)
    counts = distil(prev, prompts, out, cfg, root, limit=stage.overrides.get("limit"),
                    amplify=stage.overrides.get("amplify"), reference_opening=stage.overrides.get("reference_opening", False))
    echo(summary_line(counts, out))
    if not counts["kept"]:  # the stage is done all the same: the next one says it is skipped, and why
        from alignlab import fsutil

        fsutil.write_text(out, "")

"""`alignlab compare A B`: the same held-out prompts answered by two models, judged blind."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlab.config import SamplingConfig, field_help as fh

_S = SamplingConfig.model_fields


def answers_for(spec: str, prompts: list[str], cfg, device: str, other: str = "base") -> tuple[list[str], str | None]:
    """Greedy answers of ``spec`` ('base' or a run directory) with the project's decoding (a LoRA run's with its
    base opening and amplify, as eval and chat answer) under the system prompt it was trained under (the base: the
    ``other`` run's, as eval's base answers); (answers, run name)."""
    from alignlab.rundir import trained_under

    from alignlab.generate import generate
    from alignlab.models.loading import load_for_inference

    run = None if spec == "base" else spec
    model, tok, _ = load_for_inference(cfg.model if run is None else None, run, device=device)
    from alignlab.rundir import sampling_for

    s = sampling_for(cfg.sampling, run)
    system = trained_under([run if run is not None else (None if other == "base" else other)], cfg.system_prompt)
    out = generate(model, tok, prompts, max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                   repetition_penalty=s.repetition_penalty, system_prompt=system, seed=0, opening_counts=True,
                   **({"base_opening": s.base_opening, "amplify": s.amplify} if hasattr(model, "disable_adapter") else {}))
    return out, None if run is None else Path(run).name


def _save(root: Path, a: str, b: str, judge: str, result: dict) -> Path:
    """comparisons/A-vs-B.json; a comparison stopped part-way goes to A-vs-B.partial.json, so it does not replace a
    finished one of the same two models (a finished one replaces both)."""
    from alignlab import fsutil

    out = root / "comparisons"
    out.mkdir(exist_ok=True)
    name = f"{Path(a).name}-vs-{Path(b).name}"
    path = out / f"{name}{'.partial' if result.get('stopped') else ''}.json"
    if not result.get("stopped"):
        (out / f"{name}.partial.json").unlink(missing_ok=True)
    fsutil.write_json(path, {"a": a, "b": b, "judge": judge, **result}, indent=1)
    return path


def _make_judge(judge: str, cfg, root, rater, judge_url, judge_model, judge_key_env):
    """The pair judge --judge names: a person at the terminal, the scorecard, or an LLM judge endpoint."""
    from alignlab.errors import AlignlabError
    from alignlab.eval import compare as cmp
    from alignlab.eval.raters import default_person

    if judge == "person":
        return cmp.PersonJudge(rater or default_person(), cfg.persona)
    if judge == "scorecard":
        from alignlab.eval.scores import scorer_for

        return cmp.ScorecardJudge(scorer_for(root, cfg.persona))
    if judge == "judge":
        from alignlab.eval.raters import judge_endpoint
        from alignlab.rewards.judge import LLMJudge, voice_rubric

        j = cfg.judge.settings(judge_url, judge_model, judge_key_env)
        url, model = judge_endpoint(j["judge_url"], j["judge_model"])
        common = dict(api_key_env=j["judge_key_env"], timeout=j["judge_timeout"], max_workers=j["judge_workers"])
        # persona: the project's persona as a voice (correctness is the helpfulness question's)
        return cmp.LLMPairJudge(LLMJudge(url, model, rubric=voice_rubric(cfg.persona), **common),
                                LLMJudge(url, model, rubric=cmp.HELPFUL_RUBRIC, **common))
    raise AlignlabError(f"unknown judge '{judge}'", fix="use --judge person, judge or scorecard")


def _check_base(run: Path, spec: str, model: str) -> None:
    """'base' answers with the project's model: refused when ``run`` was trained on another (its win would be the other
    model's, and its picks stored under the project's model)."""
    from alignlab.errors import AlignlabError
    from alignlab.rundir import run_base
    from alignlab.train.engine import _same_model

    trained_on = run_base(run)
    if not _same_model(trained_on, model, run):
        raise AlignlabError(f"run {spec} was trained on '{trained_on}', but 'base' here is the project's model "
                            f"'{model}'", fix="compare from the run's own project (--project DIR), or compare it "
                                              "with another run of the same model")


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        a: str = typer.Argument(..., help="a run directory, or 'base'"),
        b: str = typer.Argument(..., help="a run directory, or 'base'"),
        judge: str = typer.Option("person", "--judge", help="person (you, in the terminal), judge (an LLM endpoint) or scorecard"),
        rater: Optional[str] = typer.Option(None, "--rater", help="your name, stored with each pick (default: $ALIGNLAB_RATER or your login)"),
        prompts: Optional[str] = typer.Option(None, "--prompts", help="JSONL of {prompt, ...} rows or bundled:NAME (default: the project's data/heldout.jsonl)"),
        per_category: int = typer.Option(3, "--per-category", min=1, help="held-out prompts taken from each category"),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, help="at most N prompts"),
        seed: int = typer.Option(0, "--seed", help="seed of the blind order"),
        judge_url: Optional[str] = typer.Option(None, "--judge-url", help=fh("judge", "url")),
        judge_model: Optional[str] = typer.Option(None, "--judge-model", help=fh("judge", "model")),
        judge_key_env: Optional[str] = typer.Option(None, "--judge-key-env", help=fh("judge", "key_env")),
        no_store: bool = typer.Option(False, "--no-store", help="don't record the picks in feedback.db"),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda"),
        project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory (default: the enclosing one)"),
    ) -> None:
        """Blind A/B: win / tie / loss for persona and for helpfulness with 95% intervals; picks go to feedback.db."""
        from alignlab.config import find_project, project_config
        from alignlab.errors import AlignlabError
        from alignlab.eval import compare as cmp
        from alignlab.eval.scorecard import fmt, stratified
        from alignlab.synth.sample import default_prompts, prompt_rows
        from alignlab.rundir import check_run_dir

        runs = [check_run_dir(spec) for spec in (a, b) if spec != "base"]
        if a == b:
            raise AlignlabError("compare needs two different models", fix="alignlab compare base runs/<id>")
        # the project of the first run, as `eval RUN` finds it: from its parent directory 'base' was the default
        # model, and the picks went to ./feedback.db
        cfg, root = project_config(project or find_project(runs[0]))
        if "base" in (a, b):
            _check_base(runs[0], a if a != "base" else b, cfg.model)
        heldout_file = str(default_prompts(root, cfg.data_dir, "heldout"))
        heldout = {r["prompt"] for r in prompt_rows(heldout_file)}  # read before any answering: a bad file fails now
        rows = stratified(prompt_rows(prompts or heldout_file), per_category, limit)
        judge_obj = _make_judge(judge, cfg, root, rater, judge_url, judge_model, judge_key_env)
        texts = [r["prompt"] for r in rows]
        typer.echo(f"answering {len(texts)} prompts from {prompts or heldout_file} with {a} and {b} ...")
        ans_a, run_a = answers_for(a, texts, cfg, device, other=b)
        ans_b, run_b = answers_for(b, texts, cfg, device, other=a)
        try:
            result = cmp.compare(rows, ans_a, ans_b, judge_obj, seed=seed, names=(a, b))
        finally:
            if hasattr(judge_obj, "close"):
                judge_obj.close()
        if result["interrupted"] and not result["items"]:
            typer.echo("interrupted before the first pick; nothing was stored", err=True)
            raise typer.Exit(130)
        if getattr(judge_obj, "input_ended", False) and not result["items"]:
            raise AlignlabError("the input ended before the first pick, so nothing was compared or stored",
                                fix="run `alignlab compare --judge person` in a terminal, or pick automatically "
                                    "with --judge scorecard (or --judge judge with an endpoint)")
        for key, label in (("persona", "persona"), ("helpful", "helpfulness")):
            w = result[key]
            typer.echo(f"{label}: {a} wins {w['a']}, ties {w['tie']}, {b} wins {w['b']}; "
                       f"{a} win rate {fmt(w['win_rate_a'])}")
        if not no_store and result["items"]:
            from alignlab.feedback.store import DB_NAME, open_store

            db = (root or Path.cwd()) / DB_NAME
            with open_store(db) as store:
                n = cmp.store_picks(store, result, judge_obj.name, cfg.model, (run_a, run_b), heldout=heldout)
            differ = [it for it in result["items"] if it["a"] != it["b"]]
            same, kept_out = len(result["items"]) - len(differ), sum(it["prompt"] in heldout for it in differ)
            typer.echo(f"stored {n} picks in {db} (rater {judge_obj.name})"
                       + (f"; {kept_out} of them on held-out prompts, which `feedback export` leaves out" if kept_out
                          else "") + (f"; {same} pair(s) of identical answers had nothing to prefer" if same else ""))
        if root is not None:
            typer.echo(f"wrote {_save(root, a, b, judge_obj.name, result)}")
        if result.get("interrupted"):
            typer.echo(f"interrupted after {len(result['items'])} picks; those are kept", err=True)
            raise typer.Exit(130)

"""`alignlab feedback export|import|stats`: the feedback database in and out."""

from __future__ import annotations

from pathlib import Path

import typer

DB_HELP = "feedback database (default: <project>/feedback.db, or ./feedback.db outside a project)"


def _db_path(db: Path | None) -> Path:
    from alignlab.feedback.store import default_path

    return db if db is not None else default_path()


def _train_file(fmt: str) -> str:
    """The file `alignlab train` reads for this export format's method when no data is given."""
    from alignlab import methods
    from alignlab.cli.train import DEFAULT_DATA

    return DEFAULT_DATA[methods.get(fmt).kind][0]


def _data_dir(root: Path) -> Path | None:
    """The project's data directory, the one key the feedback commands read from alignlab.yaml: a bad value elsewhere
    in it (train: {learning_rate: fast}) is for `train` to report, not a reason to refuse the feedback database.
    None when the file cannot be read or gives no usable data_dir."""
    from alignlab.config import CONFIG_NAME, load_yaml

    import yaml

    try:
        raw = load_yaml((root / CONFIG_NAME).read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError):  # unreadable, not UTF-8, malformed: the caller says what it does
        return None
    value = raw.get("data_dir", "data") if isinstance(raw, dict) else None
    return root / value if isinstance(value, str) else None


def _default_out(fmt: str, round: int | None) -> Path:
    """In a project without its own file for this format yet, the one `train` (and for pairs `recipe` and the
    scorecard) reads; else feedback_<format>[_round<N>].jsonl beside it."""
    from alignlab.config import find_project, project_config

    root = find_project()
    data_dir = _data_dir(root) if root is not None else Path(".")
    if data_dir is None:
        project_config()  # no data_dir to write into: the config's own one-line error says why
        data_dir = root / "data"
    if root is not None and round is None and not (data_dir / _train_file(fmt)).exists():
        return data_dir / _train_file(fmt)
    return data_dir / (f"feedback_{fmt}" + (f"_round{round}" if round is not None else "") + ".jsonl")


def _prompt_text(row: object) -> str | None:
    """A held-out row's prompt text: a plain-text prompt, or a conversation's last user turn (the question)."""
    prompt = row.get("prompt") if isinstance(row, dict) else None
    if isinstance(prompt, list):
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users else None
    return prompt if isinstance(prompt, str) and prompt.strip() else None


def _project_prompts() -> tuple[set[str], list[Path]]:
    """Inside a project: the texts of its held-out prompts (the scorecard's: never training data, whatever the store
    recorded when they came in) and its prompt files (never an export's --out). Outside one: nothing.

    Read tolerantly: the feedback database is not theirs to guard, so a held-out file that cannot be read (or read
    whole) is one warning, and export goes by the split the store recorded."""
    from alignlab.config import CONFIG_NAME, find_project
    from alignlab.data.formats import read_jsonl
    from alignlab.errors import AlignlabError
    from alignlab.synth.sample import default_prompts

    root = find_project()
    if root is None:
        return set(), []
    data_dir = _data_dir(root)
    if data_dir is None:
        typer.echo(f"warning: no data_dir could be read from {root / CONFIG_NAME}; held-out prompts are known by the "
                   "split the database recorded", err=True)
        return set(), []
    files = [default_prompts(root, str(data_dir), which) for which in ("train", "heldout")]
    try:
        rows, errors = read_jsonl(files[1])
    except (AlignlabError, OSError) as err:
        rows, errors = [], [str(err)]
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        typer.echo(f"warning: {errors[0]}{more}; a held-out prompt not read from it is known by the split the "
                   "database recorded", err=True)
    return {text for _, row in rows if (text := _prompt_text(row)) is not None}, files


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _made_from(fmt: str) -> str:
    """What makes this format's rows, for the line an export with none ends on."""
    from alignlab import methods

    return {methods.DPO: "A/B picks, rewrites, or thumbs up and down on one prompt", methods.KTO: "thumbs or scores",
            methods.SFT: "rewrites"}.get(fmt, "judgements")


def _report(summary: dict, fmt: str, out: Path, train_file: bool) -> None:
    """What an export wrote, what it skipped, and its conflicts; with no rows (nothing written: an empty file would
    stop `train` later, or pass for a finished export) one error line after them, as synth and distil end."""
    from alignlab.errors import AlignlabError

    sources = ", ".join(f"{k} {v}" for k, v in summary["by_source"].items())
    if summary["rows"]:
        typer.echo(f"wrote {summary['rows']} {fmt} rows to {out} (from {sources})")
    if train_file and summary["rows"]:
        typer.echo(f"next: alignlab train {fmt}   (reads {out.name})")
    skipped = ", ".join(f"{k} {v}" for k, v in summary["skipped"].items() if v)
    if skipped:
        typer.echo(f"skipped: {skipped}")
    for c in summary["conflicts"]:
        ids = ", ".join(str(i) for i in c["judgement_ids"])
        typer.echo(f"conflict ({c['kind']}) on prompt {c['prompt_id']} '{_short(c['prompt'])}': judgements {ids}")
    if summary["conflicts"]:
        typer.echo(f"{len(summary['conflicts'])} conflict(s) left out; undo or re-rate them to include them")
    if not summary["rows"]:
        said = " (see what was left out above)" if skipped or summary["conflicts"] else ""
        kept = " and still holds its earlier rows" if out.exists() else ""
        raise AlignlabError(f"no {fmt} rows to export yet{said}, so {out} was not written{kept}",
                            fix=f"rate first: {_made_from(fmt)} make {fmt} rows (alignlab rate, or alignlab ui); "
                                "--round and --include-heldout choose which judgements count")


def register(app: typer.Typer) -> None:
    fb = typer.Typer(help="Export, import and summarise rated feedback (feedback.db).", no_args_is_help=True)

    @fb.command("export")
    def export_cmd(
        format: str = typer.Option(..., "--format", "-f", help="dpo (prompt/chosen/rejected), kto (prompt/completion/label) or sft (prompt/completion)"),
        round: int | None = typer.Option(None, "--round", help="only judgements from this round"),
        out: Path | None = typer.Option(None, "--out", "-o", help="output JSONL (default: the project's pairs.jsonl / kto.jsonl / sft.jsonl when it has none yet, so train finds it; else <data_dir>/feedback_<format>.jsonl)"),
        db: Path | None = typer.Option(None, "--db", help=DB_HELP),
        include_heldout: bool = typer.Option(False, "--include-heldout", help="also export judgements on held-out prompts (compare's on the scorecard's prompts; training on them makes the scorecard score prompts the model learnt)"),
        force: bool = typer.Option(False, "--force", help="replace an existing output file"),
    ) -> None:
        """Write judgements as a TRL dataset (JSONL); conflicting judgements are listed and left out."""
        from alignlab import fsutil
        from alignlab.cli.synth import _refuse_overwrite
        from alignlab.feedback.export import FORMATS, export, refuse_out
        from alignlab.feedback.store import open_store
        from alignlab.errors import AlignlabError

        if format not in FORMATS:
            raise AlignlabError(f"unknown format '{format}'", fix=f"use --format {'|'.join(FORMATS)}")
        train_file = out is None and _default_out(format, round).name == _train_file(format)
        # the feedback_<format>.jsonl alignlab picks itself is a snapshot of feedback.db, replaced by each export (rate,
        # export, train, again); a file the user names, or the project's own training file, needs --force
        force = force or (out is None and not train_file)
        out = fsutil.check_out(_default_out(format, round) if out is None else out)
        heldout, prompt_files = _project_prompts()
        with open_store(_db_path(db), create=False) as store:
            refuse_out(out, store.path, prompt_files)  # the database and prompt files first: --force cannot pass them
            # `--out data/pairs.jsonl` replaced the project's pairs, `--out alignlab.yaml` its config; export reads
            # no prompts file of its own, hence ""
            _refuse_overwrite(out, "", force, command="feedback export")
            summary = export(store, format, out, round=round, include_heldout=include_heldout, heldout=heldout,
                             protect=prompt_files)
        _report(summary, format, out, train_file)

    @fb.command("import")
    def import_cmd(
        file: Path = typer.Argument(..., help="JSONL of {prompt, chosen, rejected} or {prompt, completion, label} rows"),
        rater: str = typer.Option(..., "--rater", help="who made these judgements: a person's name, or with --automatic an automatic rater's (judge:<model>, reward:<name>, ...)"),
        automatic: bool = typer.Option(False, "--automatic", help="the rows are an automatic rater's verdicts (e.g. a judge run offline), stored under --rater judge:<model>; without it, automatic raters' names are refused"),
        round: int = typer.Option(0, "--round", help="round to record the judgements in"),
        db: Path | None = typer.Option(None, "--db", help=DB_HELP),
    ) -> None:
        """Import pairs (as A/B picks) and labels (as thumbs); a malformed row stores nothing."""
        from alignlab.feedback.export import import_jsonl
        from alignlab.feedback.store import open_store

        path = _db_path(db)
        heldout, _ = _project_prompts()
        with open_store(path) as store:
            counts = import_jsonl(store, file, rater, round=round, heldout=heldout, automatic=automatic)
        typer.echo(f"imported {counts['rows']} rows ({counts['pairs']} pairs, {counts['labels']} labels) into {path}")

    @fb.command("stats")
    def stats_cmd(
        round: int | None = typer.Option(None, "--round", help="only this round"),
        db: Path | None = typer.Option(None, "--db", help=DB_HELP),
    ) -> None:
        """Counts per round: responses, judgements by kind and rater, thumbs, mean score."""
        from alignlab.feedback.store import open_store

        path = _db_path(db)
        with open_store(path, create=False) as store:
            stats = store.stats(round=round)
        if not stats:
            typer.echo(f"{path}: no feedback yet")
        for s in stats:
            kinds = ", ".join(f"{k} {n}" for k, n in s["by_kind"].items()) or "none"
            raters = ", ".join(f"{k} {n}" for k, n in s["by_rater"].items()) or "none"
            mean = f"{s['mean_score']:.2f}" if s["mean_score"] is not None else "-"
            typer.echo(
                f"round {s['round']}: {s['prompts']} prompts, {s['responses']} responses, {s['judgements']} judgements"
                f" ({kinds}); thumbs +{s['thumbs_up']}/-{s['thumbs_down']}; mean score {mean}; undone {s['undone']}"
            )
            typer.echo(f"  by rater: {raters}")

    app.add_typer(fb, name="feedback")

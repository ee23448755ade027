"""`alignlab init` and `alignlab config`: create a project, show its resolved settings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from alignlab.config import DEFAULT_MODEL, DEFAULT_PERSONA


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        directory: Path = typer.Argument(..., help="project directory to create"),
        persona: str = typer.Option(DEFAULT_PERSONA, "--persona", help="the behaviour to shape"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help=f"base model: registry name, local dir or hub id (default: {DEFAULT_MODEL})"),
        force: bool = typer.Option(False, "--force", help="overwrite an existing alignlab.yaml"),
    ) -> None:
        """Create a project: alignlab.yaml, data/ (starter prompts and persona pairs), runs/, rewards.yaml (online RL)."""
        from alignlab.config import CONFIG_NAME, find_project
        from alignlab.project import create_project

        if model:
            _check_hub_name(model, directory)  # before anything is written
        outer = find_project(directory.resolve().parent) if directory.resolve().parent.exists() else None
        if outer is not None and outer != directory.resolve():
            typer.echo(f"note: {directory} is inside the project at {outer}; commands run in it use the inner one")
        cfg, written = create_project(directory, persona, model, force)  # rewards.yaml too, as for make demo's
        typer.echo(f"created {directory}/ ({CONFIG_NAME}, " + ", ".join(written) + ")")
        if persona == DEFAULT_PERSONA:
            typer.echo(f"next: cd {directory} && alignlab recipe   (the demo's four stages: about 12-15 minutes on 2 CPU "
                       "cores), then alignlab eval runs/recipe-4-sft")
        else:
            typer.echo(
                f"this persona has prompts but no labelled answers yet; next, from {directory}/, one of:\n"
                "  alignlab synth --teacher-url URL --teacher-model NAME   pairs from a teacher endpoint\n"
                "  alignlab sample --base && alignlab ui                   rate answers in the web page\n"
                "  alignlab loop --rounds 3                                start from prompts alone, rating each round\n"
                "  alignlab synth                                          the model as its own teacher (a 135M model "
                "cannot take on a voice it is only told about: read what it keeps)"
            )

    config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def config_show(project: Optional[Path] = typer.Option(None, "--project", "-p", help="project directory")) -> None:
        """Print the resolved config (the project's, or the defaults outside a project)."""
        from alignlab.config import dump_config, project_config

        cfg, _ = project_config(project)
        typer.echo(dump_config(cfg), nl=False)


def _check_hub_name(model: str, directory: Path) -> None:
    """A name with a slash that is no path on disk reads as a hub id; resolve it now as training would (the hub cache,
    then whether the hub can be reached: no weights are loaded), so a mistyped ``mymodels/tiny`` is refused in one line
    here, not at the first command after init. Paths (from here, or inside the project: the project reads
    ``models/tiny`` from itself), GGUF files, ollama: names and the registry's own hub ids (which resolve by
    converting the packaged model) are left to create_project and the first load."""
    from alignlab.models.registry import registry_entry_for_hub_id, resolve_model
    from alignlab.project import model_in_project

    if ("/" not in model or model.startswith((".", "/", "~", "ollama:")) or model.lower().endswith(".gguf")
            or Path(model).expanduser().exists() or model_in_project(model, directory)
            or registry_entry_for_hub_id(model) is not None):
        return
    resolve_model(model)

"""`alignlab export`: a run as a merged safetensors model, a GGUF with an Ollama Modelfile, or a fresh model card."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _check_quant(ctx: typer.Context, quant: str, gguf: Optional[Path]) -> None:
    """--quant is the GGUF's weight type: a value the GGUF writer refuses is refused whatever else is asked, and
    --quant without --gguf would be ignored."""
    from alignlab.errors import AlignlabError
    from alignlab.export.gguf_file import QUANTS

    if quant not in QUANTS:
        raise AlignlabError(f"unknown GGUF quantization '{quant}'", fix="use one of: " + ", ".join(QUANTS))
    # by the source's name: typer ships its own copy of click, whose ParameterSource is not click's
    if gguf is None and getattr(ctx.get_parameter_source("quant"), "name", "DEFAULT") == "COMMANDLINE":
        raise AlignlabError(f"--quant {quant} sets the weight type of a GGUF, and no --gguf FILE was given",
                            fix="add --gguf FILE, or drop --quant")


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        ctx: typer.Context,
        run: Path = typer.Argument(..., help="run directory (runs/<id>) or a PEFT adapter directory"),
        merged: Optional[Path] = typer.Option(None, "--merged", help="write base + adapter merged to this directory (safetensors, tokenizer, chat template)"),
        gguf: Optional[Path] = typer.Option(None, "--gguf", help="write a GGUF file for llama.cpp / Ollama, with a Modelfile beside it"),
        quant: str = typer.Option("f16", "--quant", help="GGUF weight type: f16 or q8_0"),
        card: bool = typer.Option(False, "--card", help="rewrite the adapter's README.md model card from the run directory"),
        force: bool = typer.Option(False, "--force", help="replace an existing output"),
        model: Optional[str] = typer.Option(None, "--model", help="merge a LoRA adapter into this base instead of the one its run or adapter_config.json names (a local directory, registry name or hub id)"),
    ) -> None:
        """Merge an adapter into a standalone model, export it to GGUF + Ollama, or rewrite its model card."""
        from alignlab.errors import AlignlabError
        from alignlab.export import export_run
        from alignlab.export.card import write_model_card

        if not (merged or gguf or card):
            raise AlignlabError("nothing to export", fix="pass --merged DIR, --gguf FILE and/or --card")
        _check_quant(ctx, quant, gguf)  # before the card is written: `--card --quant q4` wrote it and exited 0
        if card:
            path = write_model_card(run)
            if path is None:
                raise AlignlabError(f"'{run}' is not an alignlab run (no run.json)", fix="pass runs/<id>")
            typer.echo(f"model card: {path}")
        if not (merged or gguf):
            return
        out = export_run(run, merged=merged, gguf=gguf, quant=quant, force=force, model=model)
        if "merged" in out:
            m = out["merged"]
            typer.echo(f"merged model: {m['dir']} ({m['parameters'] / 1e6:.1f}M parameters, base {m['base']})")
        if "gguf" in out:
            g = out["gguf"]
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(g["tensors"].items()))
            typer.echo(f"GGUF: {g['file']} ({g['bytes'] / 1e6:.1f} MB; tensors: {kinds}; tokenizer {g['tokenizer']})")
            if g.get("note"):
                typer.echo(f"note: {g['note']}")
            if g.get("modelfile"):
                folder = Path(g["modelfile"]).parent
                typer.echo(f"Ollama: cd {folder} && ollama create NAME -f Modelfile && ollama run NAME")
        from alignlab.rundir import decodes_alone, full_fine_tune

        if full_fine_tune(run):
            typer.echo("note: this run is a full fine-tune, which decodes alone (no base opening, no amplify): the "
                       "exported model answers as alignlab's chat, generate and eval answer with it")
        elif decodes_alone(run):
            typer.echo("note: this run was trained on distilled rows and decodes alone: the exported model answers as "
                       "alignlab's eval, chat and serve answer with it")
        else:
            typer.echo("note: the exported model is the adapter alone: alignlab's chat, generate, serve and eval let the "
                       "base write each answer's first sentence (sampling.base_opening) and can amplify the adapter's "
                       "shift (sampling.amplify), which one merged model cannot do; the scorecard's 'adapter alone' "
                       "column is what this model answers like; `alignlab distil` trains that opening into the adapter")

"""``vocabshift adapt``: run a whole recipe (tokenizer -> vocabulary -> vectors -> init -> train -> export -> eval)."""

from __future__ import annotations

from pathlib import Path

import typer


def adapt(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (see recipes/ and docs/recipe.md)."),
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/<recipe name>)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a recipe value: --set training.lora.r=8 "
                                   "(repeatable; values read as YAML)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (stages, cached or not, sizes, "
                                 "parameter counts) and run nothing."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted training stage from its last "
                                "checkpoint (finished stages are always reused)."),
    force: bool = typer.Option(False, "--force", help="Write the run into a non-empty directory that is not a "
                               "vocabshift run (its files named like the run's are replaced)."),
) -> None:
    """Adapt a model to new languages from one recipe; finished stages are cached and reused."""
    from rich.console import Console
    from rich.table import Table

    from vocabshift.pipeline import adapt as run_adapt
    from vocabshift.pipeline import estimate, load_recipe

    console = Console()
    config, _ = load_recipe(recipe, list(set_ or []))
    if dry_run:
        rows: list[tuple[str, str, str]] = []
        result = run_adapt(config, out or Path("runs") / (config.name or recipe.stem), dry_run=True,
                           on_stage=lambda s, status: rows.append((s.name, status, str(s.directory))))
        table = Table(title=f"vocabshift adapt {recipe} (dry run) -> {result.run_dir}")
        for col in ("stage", "status", "directory"):
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        for key, value in estimate(config).items():
            console.print(f"  {key}: {value:,}" if isinstance(value, int) and not isinstance(value, bool)
                          else f"  {key}: {value}")
        return
    result = run_adapt(config, out or Path("runs") / (config.name or recipe.stem), resume=resume, force=force,
                       on_stage=lambda s, status: console.print(f"[bold]{s.name}[/bold]: {status}")
                       if status != "done" else None)
    console.print(f"ran {', '.join(result.ran) or 'nothing'}; reused {', '.join(result.cached) or 'nothing'}")
    if result.model:
        console.print(f"model: {result.run_dir / 'model'} -> {result.model}")
    if result.report:
        console.print(f"report: {result.run_dir / 'report' / 'report.md'}")

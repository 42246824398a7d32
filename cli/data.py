"""``vocabshift data list``, ``verify`` and ``path``: the data manifests and the local files they describe.

Nothing is downloaded: ``list`` says what is present, ``verify`` compares local files with their sizes
and sha256 checksums, and a missing entry is shown with the command that installs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Data manifests: corpora, vectors, dictionaries and models with checksums "
                       "(nothing is downloaded).", no_args_is_help=True)

_MANIFESTS_HELP = ("Directory of manifest files (default: $VOCABSHIFT_MANIFESTS, else the shipped ones: data_manifests/ "
                   "in a source checkout, vocabshift/data/manifests/ when installed).")
_PRESENT = {"ok": "[green]yes[/green]", "missing": "no"}


def _load(directory: Path | None):
    from vocabshift.manifests import load_manifests

    return load_manifests(directory)


@app.command("list")
def list_entries(
    kind: str = typer.Option(None, "--kind", help="Only entries of this kind: corpus, vectors, dictionary or model."),
    language: str = typer.Option(None, "--language", help="Only entries with this language (ISO 639-3, e.g. spa)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every field, the local path) instead of a table."),
    manifests: Path = typer.Option(None, "--manifests", help=_MANIFESTS_HELP),
) -> None:
    """List the manifest entries and whether each is present on this machine (by size; no checksums)."""
    from vocabshift.errors import ConfigError
    from vocabshift.manifests import KINDS, human_size, verify

    if kind is not None and kind not in KINDS:
        raise ConfigError(f"--kind: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    entries = [e for e in _load(manifests)
               if (kind is None or e.kind == kind) and (language is None or language in e.languages)]
    present = {e.name: verify(e, checksum=False).status for e in entries}
    if as_json:
        typer.echo(json.dumps([{**e.summary(), "present": present[e.name]} for e in entries], indent=2,
                              ensure_ascii=False))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped: no wrapping at 80 columns
        console = Console(width=200)
    if not entries:
        console.print("no entries match" if (kind or language) else "no data manifest entries")
        return
    table = Table(title=f"{len(entries)} data manifest entries", box=box.SIMPLE_HEAD, pad_edge=False,
                  title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("languages", no_wrap=True)
    table.add_column("scripts", no_wrap=True)
    table.add_column("license", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("present", no_wrap=True)
    for e in entries:
        status = present[e.name]
        table.add_row(e.name, e.kind, ",".join(e.languages), ",".join(e.scripts), e.license,
                      human_size(e.total_size), _PRESENT.get(status, f"[red]{status}[/red]"))
    console.print(table)


@app.command("verify")
def verify_entries(
    names: list[str] = typer.Argument(None, help="Entries to check (default: every entry; not installed ones are "
                                      "reported as missing, which fails only for entries named here)."),
    checksum: bool = typer.Option(True, "--checksum/--no-checksum",
                                  help="Compare sha256 checksums (--no-checksum: presence and size only)."),
    manifests: Path = typer.Option(None, "--manifests", help=_MANIFESTS_HELP),
) -> None:
    """Check local files against the manifests; exit 1 if an installed (or named) entry is missing or differs."""
    from vocabshift.errors import VocabshiftError
    from vocabshift.manifests import MISSING, find_entry, verify

    entries = _load(manifests)
    named = bool(names)
    selected = [find_entry(n, entries) for n in dict.fromkeys(names)] if named else entries
    failed: list[str] = []
    counts = {"ok": 0, "missing": 0, "failed": 0}
    for entry in selected:
        result = verify(entry, checksum=checksum)
        if result.ok:
            counts["ok"] += 1
            typer.echo(f"ok       {entry.name}")
            continue
        if result.status == MISSING:
            counts["missing"] += 1
            if named:
                failed.append(entry.name)
            typer.echo(f"missing  {entry.name} (install with: {entry.install})")
            continue
        counts["failed"] += 1
        failed.append(entry.name)
        typer.echo(f"FAILED   {entry.name}: {result.status}")
        for problem in result.problems():
            typer.echo(f"           {problem}")
    what = "sizes and sha256" if checksum else "sizes only"
    typer.echo(f"{counts['ok']} ok, {counts['missing']} not installed, {counts['failed']} differ ({what})")
    if failed:
        raise VocabshiftError(f"{len(failed)} data manifest entr{'y' if len(failed) == 1 else 'ies'} missing or "
                              f"different from the manifest: {', '.join(failed)}")


@app.command("path")
def path(
    name: str = typer.Argument(..., help="A manifest entry, e.g. freedict-eng-spa."),
    manifests: Path = typer.Option(None, "--manifests", help=_MANIFESTS_HELP),
) -> None:
    """Print the local path of an entry (checked to be present, of the listed sizes), for other commands' flags."""
    from vocabshift.manifests import resolve

    typer.echo(str(resolve(name, entries=_load(manifests))))

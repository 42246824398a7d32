"""The one way a benchmark script rewrites its own section of docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path


def write_section(doc: Path, start: str, end: str, section: str, header: str = "# Benchmarks\n") -> None:
    """Replace the text between the markers ``start``/``end`` in ``doc`` with ``section`` (appended, with
    its markers, when they are not there yet). The file is re-read now: other scripts write other sections."""
    block = f"{start}\n{section.rstrip()}\n{end}"
    text = doc.read_text(encoding="utf-8") if doc.exists() else header
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")

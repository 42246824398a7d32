"""Atomic output directories.

A stage writes into a temporary sibling of its output directory and renames it into place only when
everything succeeded, so a failure (or Ctrl-C) never leaves a half-written output behind and an
existing output is only replaced when the user asked for it with ``force``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vocabshift.errors import OutputExistsError


def check_output_path(out: str | Path, force: bool) -> Path:
    """Refuse an existing output unless ``force``; returns the path. Call before any expensive work."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError("output already exists", path=out, hint="pass --force to replace it")
    return out


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``out``; on success it replaces ``out``.

    On any exception the temporary directory is removed and ``out`` is left exactly as it was.
    """
    out = check_output_path(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        # Move the old output aside first so that a failed rename cannot lose both copies.
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / "old")
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def empty_output_dir(out: str | Path, force: bool = False) -> Path:
    """A missing or empty directory to write files into (often a stage's temporary output directory);
    a directory with files in it is refused unless ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError("output exists and is not a directory", path=out)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError("output directory is not empty", path=out, hint="pass --force to write into it")
    out.mkdir(parents=True, exist_ok=True)
    return out

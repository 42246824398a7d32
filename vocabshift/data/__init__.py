"""Real text samples shipped with vocabshift, for tests, examples and quick experiments.

``udhr.<code>.txt`` holds the Universal Declaration of Human Rights in 22 languages (one paragraph
per line); ``bible.spa.txt.gz`` and ``bible.eng.txt.gz`` hold two public-domain Bibles (one verse
per line). Provenance, licenses and checksums are in ``SOURCES.md`` next to this file;
``build_samples.py`` regenerates them.
"""

from __future__ import annotations

from pathlib import Path

from vocabshift.errors import VocabshiftError

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def list_samples() -> list[str]:
    """Names of the shipped samples, sorted (e.g. ``"bible.eng.txt.gz"``, ``"udhr.amh.txt"``)."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if p.is_file() and not p.name.startswith("."))


def sample_path(name: str) -> Path:
    """Path of the shipped sample ``name``, e.g. ``sample_path("udhr.amh.txt")``.

    Raises :class:`~vocabshift.errors.VocabshiftError` listing the available names if there is none.
    """
    available = list_samples()
    if name not in available:
        raise VocabshiftError(
            f"no shipped sample named {name!r}",
            hint=f"available samples: {', '.join(available) or '(none installed)'}",
        )
    return SAMPLES_DIR / name

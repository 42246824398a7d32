"""vocabshift: adapt pretrained transformer language models to new languages."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from vocabshift.errors import VocabshiftError

try:
    __version__ = version("vocabshift")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["VocabshiftError", "__version__"]

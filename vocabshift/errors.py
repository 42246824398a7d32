"""The one error family users see.

Every error vocabshift raises on bad input is a :class:`VocabshiftError` whose message names the
file or value at fault, the problem, and what to do. The CLI prints ``str(err)`` on one line and
exits non-zero; the traceback is shown only under ``--debug``.
"""

from __future__ import annotations

from pathlib import Path


class VocabshiftError(Exception):
    """Base class: a user-facing error with a one-line message."""

    def __init__(self, problem: str, *, path: str | Path | None = None, hint: str | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        self.hint = hint
        parts = [f"{self.path}: {problem}" if self.path else problem]
        if hint:
            parts.append(hint)
        super().__init__(" — ".join(parts))


class CorpusError(VocabshiftError):
    """A corpus file or directory cannot be read as text."""


class TokenizerError(VocabshiftError):
    """A tokenizer cannot be loaded, is of an unsupported type, or cannot be trained as asked."""


class ConfigError(VocabshiftError):
    """A configuration value is missing or invalid."""


class OutputExistsError(VocabshiftError):
    """The output path exists and ``force`` was not given."""


class UnsafeOutputError(VocabshiftError):
    """The output is, contains or lies inside an input: writing it would destroy that input."""


class OutputLockedError(VocabshiftError):
    """Another process holds the lock on this output or run directory."""


class DiskFullError(VocabshiftError):
    """The disk filled up while writing an output (nothing was replaced)."""


class ModelError(VocabshiftError):
    """A model cannot take vocabulary surgery: no input embeddings, a head that does not fit, or inconsistent tying."""


class IdMapError(VocabshiftError):
    """An ``id_map``, or the rows and ids given with it, do not fit the model."""


class VectorsError(VocabshiftError):
    """A static vector file or bilingual dictionary cannot be read, or vectors do not fit together."""


class InitError(VocabshiftError):
    """An embedding initialization method cannot run on the inputs it was given."""


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGINT, SIGTERM); ``signum`` says which.

    A ``KeyboardInterrupt`` so that every ``except BaseException`` cleanup (atomic outputs, locks,
    training checkpoints) runs exactly as for Ctrl-C; the CLI exits with status ``128 + signum``.
    """

    def __init__(self, signum: int, what: str = "") -> None:
        import signal

        super().__init__(what or signal.Signals(signum).name)
        self.signum = signum

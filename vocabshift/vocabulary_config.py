"""The settings of ``vocabshift prune`` and ``vocabshift extend`` (:class:`PruneConfig`,
:class:`ExtendConfig`), without torch.

Split from :mod:`vocabshift.vocabulary`, which re-exports them, so that the command line and the recipe
read and check these settings without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vocabshift.config import MAX_INT, MAX_PAD_MULTIPLE, MAX_VOCAB_SIZE, ConfigMixin, check_whole_number
from vocabshift.corpus import CorpusConfig
from vocabshift.errors import ConfigError
from vocabshift.tokenization.scripts import resolve_scripts

__all__ = ["ExtendConfig", "PruneConfig"]


def _check_pad(value: int | None) -> None:
    if value is not None:
        check_whole_number(value, "pad_to_multiple_of", 1, MAX_PAD_MULTIPLE)


@dataclass
class PruneConfig(ConfigMixin):
    """Prune a model's vocabulary by script and/or corpus frequency (``vocabshift prune``)."""

    model: str = field(metadata={"help": "Source model directory (or tokenizer directory, or .gguf file)."})
    out: str = field(metadata={"help": "Output directory (written atomically)."})
    keep_scripts: list[str] | None = field(
        default=None, metadata={"help": "Unicode scripts to keep, names or ISO 15924 codes (Latin, Ethi, Arabic)."})
    keep_corpus: CorpusConfig | None = field(
        default=None, metadata={"help": "Also keep tokens used at least min_count times on this corpus."})
    min_count: int = field(default=1, metadata={"help": "Frequency pruning: minimum number of uses to keep a token."})
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad the embedding matrices to a multiple of this (tensor-core friendly)."})
    in_memory: bool = field(default=False, metadata={
        "help": "Load the whole model instead of streaming safetensors tensor by tensor (the lean default)."})
    force: bool = field(default=False, metadata={"help": "Replace an existing output directory."})

    def __post_init__(self) -> None:
        if not self.keep_scripts and self.keep_corpus is None:
            raise ConfigError("nothing to keep by: give keep_scripts (--keep-scripts) and/or keep_corpus (--keep-corpus)")
        if self.keep_scripts:
            resolve_scripts(self.keep_scripts)  # an unknown script fails here, before any work
        check_whole_number(self.min_count, "min_count", 1, MAX_INT)
        _check_pad(self.pad_to_multiple_of)


@dataclass
class ExtendConfig(ConfigMixin):
    """Add target-language tokens missing from a model's vocabulary (``vocabshift extend``)."""

    model: str = field(metadata={"help": "Source model directory (or tokenizer directory, or .gguf file)."})
    tokenizer: str = field(metadata={"help": "Target tokenizer of the same family (e.g. from `vocabshift tokenizer train`)."})
    out: str = field(metadata={"help": "Output directory (written atomically)."})
    max_new: int | None = field(default=None, metadata={"help": "Add at most this many new tokens."})
    protect_corpus: CorpusConfig | None = field(default=None, metadata={
        "help": "Source-language text that must tokenize exactly as before: new tokens that would change it are left out."})
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad the embedding matrices to a multiple of this (tensor-core friendly)."})
    in_memory: bool = field(default=False, metadata={
        "help": "Load the whole model instead of streaming safetensors tensor by tensor (the lean default)."})
    force: bool = field(default=False, metadata={"help": "Replace an existing output directory."})

    def __post_init__(self) -> None:
        if self.max_new is not None:
            check_whole_number(self.max_new, "max_new", 0, MAX_VOCAB_SIZE)
        _check_pad(self.pad_to_multiple_of)

"""The settings of ``vocabshift init`` (:class:`InitConfig`), without torch.

Split from :mod:`vocabshift.init.apply`, which re-exports it, so that the command line and the recipe read
and check these settings without importing torch; constructing one checks the method name and its options
against the registry (which loads the methods).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vocabshift.config import ConfigMixin, from_dict
from vocabshift.corpus import CorpusConfig
from vocabshift.errors import ConfigError

__all__ = ["InitConfig"]


@dataclass
class InitConfig(ConfigMixin):
    """Initialize the embeddings of a target vocabulary with one method (``vocabshift init``)."""

    method: str = field(metadata={
        "help": "Init method: random, mean, fvt, wechsel, focus, ofa, factorized, omp, distill (see --list)."})
    model: str = field(metadata={
        "help": "Source model directory, or the output of `vocabshift prune`/`extend` (its id_map.json says "
                "which rows are kept and which are new)."})
    out: str = field(metadata={"help": "Output directory (written atomically)."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "Target tokenizer directory for a full vocabulary replacement; not needed after prune/extend."})
    source_vectors: str | None = field(default=None, metadata={
        "help": "Static vectors of the source language (fastText .bin, or .vec/.vec.gz)."})
    target_vectors: str | None = field(default=None, metadata={
        "help": "Static vectors of the target language (fastText .bin, or .vec/.vec.gz)."})
    dictionary: str | None = field(default=None, metadata={
        "help": "Bilingual dictionary to align the two vector spaces (pairs per line, or FreeDict .index); "
                "without one, identical strings seed the alignment."})
    aligned: bool = field(default=False, metadata={
        "help": "The source and target vectors already share one space: use them as they are."})
    alignment: str | None = field(default=None, metadata={
        "help": "Output directory of `vocabshift vectors align` (its W.npy and vector files are used)."})
    corpus: CorpusConfig | None = field(default=None, metadata={
        "help": "Target-language text: distill runs the source model on windows of it; focus trains "
                "token-level fastText on it."})
    skip_documents: int = field(default=0, metadata={
        "help": "distill: documents at the start of the corpus it does not read (adapt's held-out split)."})
    options: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "The method's own options (see `vocabshift init --list`), e.g. {top_k: 10, temperature: 0.1}."})
    copy_overlap: bool | None = field(default=None, metadata={
        "help": "Copy the rows of tokens shared with the source vocabulary (default: what the method's paper does)."})
    pad_to_multiple_of: int | None = field(default=None, metadata={
        "help": "Full replacement: pad the embedding matrices to a multiple of this."})
    seed: int = field(default=0, metadata={"help": "Random seed (random rows, fallbacks, vector training)."})
    device: str = field(default="auto", metadata={"help": "Where to compute: auto (CUDA when present), cpu, cuda."})
    chunk_size: int = field(default=4096, metadata={"help": "Rows per chunk in similarity products (bounds memory)."})
    threads: int | None = field(default=None, metadata={"help": "focus: fastText training threads (default: all)."})
    in_memory: bool = field(default=False, metadata={
        "help": "Load the whole model in fp32 instead of reading only its vocabulary-sized tensors and "
                "streaming the rest (the lean default for safetensors directories, which keeps their dtype)."})
    force: bool = field(default=False, metadata={"help": "Replace an existing output directory."})

    def __post_init__(self) -> None:
        from vocabshift.init.registry import get_init_method

        method = get_init_method(self.method)  # an unknown method fails here, listing the valid ones
        from_dict(method.config, dict(self.options), "options")  # so do unknown/mistyped options
        if self.aligned and self.alignment:
            raise ConfigError("give either aligned (vectors already share a space) or alignment (a "
                              "`vocabshift vectors align` directory), not both")
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be positive, got {self.chunk_size}")
        if isinstance(self.skip_documents, bool) or not isinstance(self.skip_documents, int) or self.skip_documents < 0:
            raise ConfigError(f"skip_documents must be a whole number >= 0, got {self.skip_documents!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")

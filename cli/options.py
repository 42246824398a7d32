"""Shared option groups: corpus flags map one to one onto :class:`vocabshift.corpus.CorpusConfig` fields."""

from __future__ import annotations

from vocabshift.corpus import CorpusConfig, CorpusSource


def corpus_config(
    paths: list[str],
    *,
    text_field: str = "text",
    encoding_errors: str = "strict",
    max_bytes: int | None = None,
    max_lines: int | None = None,
    max_documents: int | None = None,
    shuffle: bool = False,
    seed: int = 0,
    temperature: float | None = None,
) -> CorpusConfig:
    """All paths as one stream, or, when a temperature is given, one source per path mixed by it."""
    if temperature is None:
        sources = [CorpusSource(paths=list(paths))]
    else:
        sources = [CorpusSource(paths=[p]) for p in paths]
    return CorpusConfig(
        sources=sources,
        text_field=text_field,
        encoding_errors=encoding_errors,
        max_bytes=max_bytes,
        max_lines=max_lines,
        max_documents=max_documents,
        shuffle=shuffle,
        seed=seed,
        temperature=1.0 if temperature is None else temperature,
    )


def field_help(config_cls: type, name: str) -> str:
    """The ``help`` metadata of a config dataclass field: CLI help and docs share one text."""
    import dataclasses

    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)

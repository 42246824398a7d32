"""Typed configuration: one dataclass per stage, loadable from YAML and plain dicts.

The dataclasses are the single schema of vocabshift: CLI flags, YAML recipe keys and Python keyword
arguments are the same names. Fields carry ``metadata={"help": ...}``, which the CLI and the recipe
reference in ``docs/`` read. :func:`from_dict` validates nested dicts against the schema: an unknown
key is an error naming the closest valid key, a wrong type an error naming the dotted path.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vocabshift.corpus import CorpusConfig, CorpusSource
from vocabshift.errors import ConfigError

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """A config dataclass (nested ones too) as plain YAML/JSON-friendly data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


class _AlreadyReported(ConfigError):
    """A nested config's problems are already in the collector; unwinds without adding another."""

    def __init__(self) -> None:
        super().__init__("(reported above)")


def to_json_data(obj: Any) -> Any:
    """:func:`to_dict`, with anything JSON cannot hold (tensors, paths in odd places) turned into strings."""
    import json

    return json.loads(json.dumps(to_dict(obj), default=str))


def _check_type(value: Any, hint: Any, where: str, errors: list[str] | None = None) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where, errors)
            except _AlreadyReported:
                raise
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if errors else ConfigError(f"{where}: null is not allowed")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        if errors is None:
            return from_dict(hint, value, where)
        built = _build(hint, value, where, errors, collect=True)
        if built is None:
            raise _AlreadyReported()
        return built
    if origin in (list, tuple) or hint in (list, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        inner = args[0] if args else Any
        return [_check_type(v, inner, f"{where}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if isinstance(hint, type):
        if hint is int and isinstance(value, bool) or not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build config dataclass ``cls`` from ``data``, validating keys and types recursively.

    Raises ConfigError on the first problem; :func:`validate_dict` collects them all instead.
    """
    errors: list[str] = []
    result = _build(cls, data, where, errors, collect=False)
    assert result is not None and not errors
    return result


def validate_dict(cls: type[T], data: dict[str, Any], where: str = "") -> tuple[T | None, list[str]]:
    """Like :func:`from_dict`, but returns ``(config or None, every problem found)`` instead of raising,
    so that a recipe with several mistakes is reported in one go."""
    errors: list[str] = []
    result = _build(cls, data, where, errors, collect=True)
    return (result if not errors else None), errors


def _build(cls: type[T], data: dict[str, Any], where: str, errors: list[str], collect: bool) -> T | None:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    kwargs = {}
    n_errors = len(errors)

    def fail(message: str) -> None:
        if not collect:
            raise ConfigError(message)
        errors.append(message)

    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(names)})"
            fail(f"unknown key '{path}'{hint}")
            continue
        if collect:
            try:
                kwargs[key] = _check_type(value, hints[key], path, errors)
            except _AlreadyReported:
                pass
            except ConfigError as err:
                errors.append(str(err))
        else:
            kwargs[key] = _check_type(value, hints[key], path)
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.init and f.name not in kwargs and f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        fail(f"missing required key(s): {', '.join((where + '.' if where else '') + m for m in missing)}")
    if len(errors) > n_errors:
        return None
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if not collect:
            raise
        errors.append(f"{where}: {err}" if where else str(err))
    except TypeError as err:
        fail(f"{where or cls.__name__}: {err}")
    return None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file does not exist", path=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {str(err).splitlines()[0]}", path=path) from err
    if not isinstance(data, dict):
        raise ConfigError("expected a YAML mapping at the top level", path=path)
    return data


class ConfigMixin:
    """``to_dict`` / ``from_dict`` / YAML round trip for a config dataclass."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        return from_dict(cls, data)

    @classmethod
    def from_yaml(cls: type[T], path: str | Path) -> T:
        return from_dict(cls, load_yaml(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(to_dict(self), sort_keys=False, allow_unicode=True)


@dataclass
class TokenizerTrainConfig(ConfigMixin):
    """Train a target-language tokenizer in the source tokenizer's family (``vocabshift tokenizer train``)."""

    source: str = field(metadata={"help": "Source model or tokenizer directory (as from_pretrained takes), or a .gguf file."})
    corpus: CorpusConfig = field(metadata={"help": "Target-language text to train on."})
    vocab_size: int = field(metadata={"help": "Size of the finished tokenizer, special and byte tokens included."})
    out: str = field(metadata={"help": "Output directory (written atomically)."})
    min_frequency: int = field(default=2, metadata={"help": "BPE/WordPiece: minimum pair count for a merge."})
    character_coverage: float = field(
        default=0.9995, metadata={"help": "sentencepiece: share of characters the alphabet covers (rest: byte fallback or UNK)."}
    )
    max_piece_length: int = field(default=16, metadata={"help": "Longest token in characters (0: the trainer's default)."})
    threads: int | None = field(default=None, metadata={
        "help": "sentencepiece trainer threads (default: all cores); tokenizers' trainers use RAYON_NUM_THREADS."})
    show_progress: bool = field(default=True, metadata={"help": "Show the trainer's progress bars."})
    force: bool = field(default=False, metadata={"help": "Replace an existing output directory."})

    def __post_init__(self) -> None:
        if self.vocab_size <= 0:
            raise ConfigError(f"vocab_size must be positive, got {self.vocab_size}")
        if self.min_frequency < 1:
            raise ConfigError(f"min_frequency must be at least 1, got {self.min_frequency}")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(f"character_coverage must be in (0, 1], got {self.character_coverage}")
        if self.max_piece_length < 0:
            raise ConfigError(f"max_piece_length must be >= 0, got {self.max_piece_length}")


__all__ = ["ConfigMixin", "CorpusConfig", "CorpusSource", "TokenizerTrainConfig", "from_dict", "load_yaml", "to_dict"]

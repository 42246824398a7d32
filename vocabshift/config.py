"""Typed configuration: one dataclass per stage, loadable from YAML and plain dicts.

The dataclasses are the single schema of vocabshift: CLI flags, YAML recipe keys and Python keyword
arguments are the same names. Fields carry ``metadata={"help": ...}``, which the CLI and the recipe
reference in ``docs/`` read. :func:`from_dict` validates nested dicts against the schema: an unknown
key is an error naming the closest valid key, a wrong type an error naming the dotted path.
A config's own checks (``__post_init__``) collect their problems with :class:`Problems`, so that a config
with several mistakes names all of them. :func:`recipe_section` makes the section of the ``adapt`` recipe
that a stage's config becomes, without the fields the pipeline fills; :func:`to_dict_as_given` is what a
stage key hashes of it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vocabshift.corpus import CorpusConfig, CorpusSource
from vocabshift.errors import ConfigError

T = TypeVar("T")

MAX_INT = 2**63 - 1  # an int field holds what an int64 (and Rust's u64/usize) holds, no more
MAX_VOCAB_SIZE = 2**24  # 16,777,216: far above any real vocabulary; what every trainer accepts without crashing
MAX_PAD_MULTIPLE = 2**16  # pad_to_multiple_of: padding rows are allocated, so a typo must not ask for billions
MAX_ALIAS_NODES = 10_000  # YAML nodes that aliases (*name) may add to a document when expanded
MAX_VALUE_CHARS = 200  # a value quoted in an error message is cut to this
MAX_PROBLEMS = 20  # problems listed in one error line; the rest are counted

_NUMBER = re.compile(r"^[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$")  # numbers YAML 1.1 reads as strings (1e6)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 8, 8, MAX_VALUE_CHARS, 60


def show(value: Any) -> str:
    """``repr(value)`` for an error message, at most :data:`MAX_VALUE_CHARS` long (nested data elided)."""
    text = _REPR.repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS - 3] + "..."


def format_problems(problems: list[str], limit: int = MAX_PROBLEMS) -> str:
    """Problems joined with ``; `` for one error line: the first ``limit``, then how many more there are."""
    shown = [p if len(p) <= 2 * MAX_VALUE_CHARS else p[:2 * MAX_VALUE_CHARS - 3] + "..." for p in problems[:limit]]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; ... and {more} more" if more > 0 else "")


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


class ConfigProblems(ConfigError):
    """Several problems of one config, found at once; ``str`` lists them on one line, ``errors`` one by one."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__(format_problems([str(e) for e in self.errors]))


class Problems:
    """Collects the ConfigErrors of independent checks, so that a config names every problem at once::

        found = Problems()
        with found:
            check_a()
        with found:
            check_b()
        found.raise_any()  # nothing, the one error, or ConfigProblems listing them all
    """

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def __enter__(self) -> Problems:
        return self

    def __exit__(self, kind: Any, err: BaseException | None, tb: Any) -> bool:
        if isinstance(err, ConfigProblems):
            self.errors += err.errors
        elif isinstance(err, ConfigError):
            self.errors.append(err)
        return isinstance(err, ConfigError)  # swallowed: recorded

    def raise_any(self) -> None:
        """Raise what was collected: the one error as it is, several as one :class:`ConfigProblems`."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigProblems(self.errors)


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
        # ``errors`` is the caller's collector: a nested section's problems must land there, not in a
        # list of this union's failed alternatives (which would drop them silently).
        failed: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where, errors)
            except _AlreadyReported:
                raise
            except ConfigError as err:
                failed.append(err)
        raise failed[0] if failed else ConfigError(f"{where}: null is not allowed")
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
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {show(value)}")
        inner = args[0] if args else Any
        if errors is None:
            return [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        items, failed = [], False
        for i, v in enumerate(value):  # collecting: every item's problems, not only the first bad item's
            try:
                items.append(_check_type(v, inner, f"{where}[{i}]", errors))
            except _AlreadyReported:
                failed = True
            except ConfigError as err:
                errors.append(str(err))
                failed = True
        if failed:
            raise _AlreadyReported()
        return items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_INT:
            raise ConfigError(f"{where}: {show(value)} is out of range (at most ±{MAX_INT:,})")
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if hint is int and (isinstance(value, float) or isinstance(value, str) and _NUMBER.match(value.strip())):
        # YAML reads 1e6 as a string and 1.0e+6 as a float: an int field takes whole numbers in digits only
        raise ConfigError(f"{where}: expected int, got {type(value).__name__} {show(value)}",
                          hint="write a whole number in digits, e.g. 1000000 (not 1e6 or 1.5)")
    if isinstance(hint, type):
        if hint is int and isinstance(value, bool) or not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {show(value)}")
    if hint is int and abs(value) > MAX_INT:
        raise ConfigError(f"{where}: {show(value)} is out of range (at most ±{MAX_INT:,})")
    if hint is float and math.isnan(value):
        raise ConfigError(f"{where}: NaN is not a value", hint="give a number")
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
        filled = getattr(cls, "FILLED_BY_PIPELINE", {})
        if key in filled:
            fail(f"{path}: set by the pipeline ({filled[key]}), not by the recipe")
            continue
        if key not in names:
            close = _closest(str(key), names)
            hint = f" (did you mean '{close}'?)" if close else f" (valid keys: {', '.join(names)})"
            shown = path if len(path) <= MAX_VALUE_CHARS else path[:MAX_VALUE_CHARS - 3] + "..."
            fail(f"unknown key '{shown}'{hint}")
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
        failed = [k for k in data if k in names and k not in kwargs]
        errors.extend(_other_problems(cls, kwargs, failed, where, names))
        return None
    try:
        built = cls(**kwargs)
    except ConfigError as err:
        if not collect:
            raise
        errors.extend(_located(where, names, str(e)) for e in getattr(err, "errors", [err]))
    except TypeError as err:
        fail(f"{where or cls.__name__}: {err}")
    else:
        _remember_given(built, data)
        return built
    return None


def _closest(key: str, names: list[str]) -> str | None:
    """The valid key ``key`` was most likely meant to be: a close spelling, else the closest of the keys
    that share a word with it (``lr_typo`` -> a ``..._lr``)."""
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return close[0]
    words = set(key.lower().split("_"))
    sharing = [n for n in names if words & set(n.split("_"))]
    close = difflib.get_close_matches(key, sharing, n=1, cutoff=0.0)
    return close[0] if close else None


def _other_problems(cls: type, kwargs: dict[str, Any], failed: list[str], where: str, names: list[str]) -> list[str]:
    """The config's own checks with its ``failed`` fields (whose problems are named already) at their
    defaults, but for problems that name one of them: a section with a wrong type has its other mistakes
    named too, in the same error."""
    try:
        cls(**kwargs)
    except ConfigError as err:
        messages = [str(e) for e in getattr(err, "errors", [err])]
        return [_located(where, names, m) for m in messages
                if not any(re.search(rf"\b{re.escape(name)}\b", m) for name in failed)]
    except (TypeError, ValueError, AttributeError):  # a required field is missing, or a default does not fit
        return []
    return []


def _located(where: str, names: list[str], message: str) -> str:
    """``message`` of the config at ``where``, with its dotted path: ``max_steps must be ...`` ->
    ``training.max_steps must be ...``; in a nested section, ``lora.r must be ...`` (at ``training.lora``) ->
    ``training.lora.r must be ...``; anything else -> ``where: message``."""
    if not where:
        return message
    first = message.split(" ", 1)[0].rstrip(":")
    parent, _, last = where.rpartition(".")
    if first in names:
        return f"{where}.{message}"
    if parent and first.startswith(last + ".") and first[len(last) + 1:] in names:  # it names its own section
        return f"{parent}.{message}"
    return f"{where}: {message}"


# ------------------------------------------------------------------------------------------------
# What a config was given, and recipe sections

_GIVEN = "_vocabshift_given"  # attribute of a config built by from_dict: the mapping it was built from
_UNSET = object()


def _remember_given(config: Any, data: dict[str, Any]) -> None:
    try:
        object.__setattr__(config, _GIVEN, dict(data))
    except (AttributeError, TypeError):  # a dataclass with __slots__: nothing remembered
        pass


def replace_given(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` that keeps what ``config`` was given, with ``changes`` applied to it too."""
    new = dataclasses.replace(config, **changes)  # type: ignore[type-var]
    given = getattr(config, _GIVEN, None)
    if given is not None:
        _remember_given(new, {**given, **{k: v for k, v in changes.items() if k in given}})
    return new


def _at_default(config: Any, f: dataclasses.Field) -> bool:
    value = getattr(config, f.name)
    if f.default is not dataclasses.MISSING:
        return bool(value == f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return bool(value == f.default_factory())  # type: ignore[misc]
    return False


def to_dict_as_given(config: Any) -> dict[str, Any]:
    """:func:`to_dict` of only the fields ``config`` was given (the keys of the mapping :func:`from_dict`
    built it from, and any field not at its default), nested ones alike, with each value as written
    where it equals the typed one (``alpha: 32`` stays ``32``, not ``32.0``).

    Stage keys hash this of a recipe section, so typing a section that was a plain mapping keeps the keys
    (and the cached stages) of existing runs.
    """
    return _as_given(config, _UNSET)


def _as_given(typed: Any, raw: Any) -> Any:
    if dataclasses.is_dataclass(typed) and not isinstance(typed, type):
        if not isinstance(raw, dict):
            raw = getattr(typed, _GIVEN, None) or {}
        keys = [f.name for f in dataclasses.fields(typed) if f.name in raw or not _at_default(typed, f)]
        return {k: _as_given(getattr(typed, k), raw.get(k, _UNSET)) for k in keys}
    if isinstance(typed, (list, tuple)) and isinstance(raw, list) and len(raw) == len(typed):
        return [_as_given(t, r) for t, r in zip(typed, raw, strict=True)]
    if isinstance(typed, dict) and isinstance(raw, dict):
        return {k: _as_given(v, raw.get(k, _UNSET)) for k, v in typed.items()}
    if type(raw) in (int, float, str, bool, type(None)) and raw == typed:
        return raw
    return to_dict(typed)


def recipe_section(config_cls: type, name: str, filled_by_pipeline: dict[str, str],
                   check: Callable[[Any], None], doc: str, module: str) -> type:
    """The section of the ``adapt`` recipe that ``config_cls`` becomes: a dataclass with the same fields
    (types, defaults, help) but those in ``filled_by_pipeline`` (name -> what the pipeline sets it to),
    which the recipe may not give; ``check(section)`` runs as its ``__post_init__``. ``module``: where it
    is defined (its ``__module__``).
    """
    hints = typing.get_type_hints(config_cls)
    fields = [(f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory,  # type: ignore[call-overload]
                                            metadata=f.metadata))
              for f in dataclasses.fields(config_cls) if f.name not in filled_by_pipeline]
    section = dataclasses.make_dataclass(name, fields, bases=(ConfigMixin,), namespace={
        "__doc__": doc, "__post_init__": check, "FILLED_BY_PIPELINE": dict(filled_by_pipeline)})
    section.__module__ = module
    return section


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes in ``node`` with every alias expanded (``sizes``: the answer per node already counted)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ConfigError("a YAML alias refers to a node that contains it (a recursive document)")
    open_nodes.add(key)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes)
                       for k, v in node.value)
    else:
        size = 1
    open_nodes.discard(key)
    sizes[key] = size
    return size


def safe_load_yaml(text: str, path: str | Path | None = None) -> Any:
    """``yaml.safe_load`` that refuses alias bombs: aliases (``*name``) may add at most
    :data:`MAX_ALIAS_NODES` nodes when expanded, and may not be recursive.

    A few kilobytes of nested aliases otherwise expand to gigabytes wherever the data is walked (JSON,
    hashing, an error message quoting it). Raises ConfigError naming ``path``.
    """
    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}
        added = _expanded_size(node, sizes, set()) - len(sizes)
        if added > MAX_ALIAS_NODES:
            raise ConfigError(f"YAML aliases expand the document by {added:,} nodes (at most {MAX_ALIAS_NODES:,})",
                              path=path, hint="write the repeated parts out, or reuse fewer anchors")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(f"invalid YAML: {str(err).splitlines()[0][:MAX_VALUE_CHARS]}", path=path) from err
    except RecursionError as err:
        raise ConfigError("invalid YAML: nested too deeply", path=path) from err
    except ConfigError as err:
        if path is None or err.path is not None:
            raise
        raise ConfigError(err.problem, path=path, hint=err.hint) from err
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file (aliases bounded: :func:`safe_load_yaml`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file does not exist", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read it: {err}", path=path) from err
    data = safe_load_yaml(text, path)
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


def check_whole_number(value: Any, name: str, minimum: int, maximum: int) -> None:
    """Refuse anything but an int in ``minimum .. maximum`` (for configs built in Python, where no YAML
    type check ran: ``TrainConfig(max_steps=1e30)``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {type(value).__name__} {show(value)}",
                          hint="write it in digits, e.g. 1000 (not 1e3 or 1.5)")
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum:,} and {maximum:,}, got {value:,}")


def check_vocab_size(value: int, name: str) -> None:
    """Refuse a vocabulary size outside 1 .. :data:`MAX_VOCAB_SIZE` before any trainer sees it.

    The family's own minimum (special tokens, 256 byte tokens) needs the source tokenizer; the tokenizer
    stage checks it. Above the maximum the Rust trainers abort the process (allocation failure).
    """
    check_whole_number(value, name, -MAX_INT, MAX_INT)
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value:,}",
                          hint="give the size of the finished tokenizer, e.g. 32000")
    if value > MAX_VOCAB_SIZE:
        raise ConfigError(f"{name} {value:,} is above the maximum {MAX_VOCAB_SIZE:,}",
                          hint="give the size of the finished tokenizer, e.g. 32000")


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
        check_trainer_settings(self)


def check_trainer_settings(config: Any) -> None:
    """The tokenizer trainer's settings (``vocab_size``, ``min_frequency``, ``character_coverage``,
    ``max_piece_length``) of :class:`TokenizerTrainConfig` or the recipe's ``tokenizer`` section."""
    check_vocab_size(config.vocab_size, "vocab_size")
    if config.min_frequency < 1:
        raise ConfigError(f"min_frequency must be at least 1, got {config.min_frequency}")
    if not 0.0 < config.character_coverage <= 1.0:
        raise ConfigError(f"character_coverage must be in (0, 1], got {config.character_coverage}")
    if config.max_piece_length < 0:
        raise ConfigError(f"max_piece_length must be >= 0, got {config.max_piece_length}")


__all__ = ["MAX_PAD_MULTIPLE", "MAX_VOCAB_SIZE", "ConfigMixin", "ConfigProblems", "CorpusConfig", "CorpusSource", "Problems",
           "TokenizerTrainConfig", "check_trainer_settings", "check_vocab_size", "format_problems", "from_dict",
           "load_yaml", "recipe_section", "replace_given", "safe_load_yaml", "show", "to_dict", "to_dict_as_given"]

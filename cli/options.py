"""Command-line options generated from the stage configs: one schema for flags, YAML keys and kwargs.

Each command declares once, beside itself, which config dataclasses it exposes and where it departs from
the rule (:class:`ConfigOptions`); :func:`config_options` adds one option per field to its signature.
The rule: ``--field-name`` (``--lora-r`` for the field ``r`` of the section ``lora``); the type from the
annotation (a bool whose default is False is a switch ``--x``, any other bool a pair ``--x/--no-x``, a
list repeats its flag); the help from the field's ``help`` metadata; the default shown is the field's.

The command receives only the flags given on the command line, as ``given={"lora.r": 8, ...}``, so the
config's own defaults fill in the rest and a ``--config`` recipe is overridden only by what was typed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import typer

from vocabshift.corpus import CorpusConfig, CorpusSource

F = TypeVar("F", bound=Callable[..., Any])

GIVEN = "given"  # the parameter of a command that receives the flags given
_CONTEXT = "_ctx"  # the click context, injected to tell typed flags from defaults
_TYPED = ("COMMANDLINE", "ENVIRONMENT")  # click parameter sources that count as given


def field_help(config_cls: type, name: str) -> str:
    """The ``help`` metadata of a config dataclass field: CLI help and docs share one text."""
    for f in dataclasses.fields(config_cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(name)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default (its factory called), or ``dataclasses.MISSING`` for a required field."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


@dataclass(frozen=True)
class ConfigOptions:
    """How one command exposes the fields of one config dataclass as options.

    Every field gets a flag unless it is ``excluded`` (with the reason: given another way, or internal);
    a field that is itself a dataclass needs its own :class:`ConfigOptions` with that ``key``, or an
    exclusion. ``only`` picks a few fields of a section shared with other configs (the corpus reading
    flags), whose field in the stage config is excluded with its reason.
    """

    config: type
    key: str = ""  # the section's dotted place in the command's config ("lora", "data"); "": top level
    prefix: str | None = None  # flag prefix ("lora" -> --lora-r); default: the key; "" for none
    flags: Mapping[str, str] = field(default_factory=dict)  # field -> its declaration instead of --field-name
    comma_separated: frozenset[str] = frozenset()  # list fields given as "a,b,c" in one flag
    paths: frozenset[str] = frozenset()  # str fields read as paths (normalized, shown as <path>)
    notes: Mapping[str, str] = field(default_factory=dict)  # field -> text added to its help
    excluded: Mapping[str, str] = field(default_factory=dict)  # field -> why it has no flag
    only: tuple[str, ...] | None = None  # expose only these fields (a shared section); None: all
    required: bool = True  # fields without a default are required flags (False: the command checks them)

    def __post_init__(self) -> None:
        names = {f.name for f in dataclasses.fields(self.config)}
        for what in ("flags", "comma_separated", "paths", "notes", "excluded", "only"):
            unknown = set(getattr(self, what) or ()) - names
            if unknown:
                raise ValueError(f"{self.config.__name__} has no field {sorted(unknown)} ({what})")
        empty = [name for name, reason in self.excluded.items() if not reason.strip()]
        if empty:
            raise ValueError(f"{self.config.__name__}: excluded fields need a reason: {empty}")

    def dotted(self, name: str) -> str:
        """The field's dotted key in the command's config (``lora.r``)."""
        return f"{self.key}.{name}" if self.key else name

    def exposed(self) -> list[dataclasses.Field]:
        """The fields that get a flag."""
        return [f for f in dataclasses.fields(self.config)
                if f.name not in self.excluded and (self.only is None or f.name in self.only)]

    def options(self, sections: set[str]) -> list[_Option]:
        """One :class:`_Option` per exposed field; ``sections`` are the keys other groups of the command expand."""
        hints = typing.get_type_hints(self.config)
        prefix = self.key.replace(".", "-") if self.prefix is None else self.prefix
        out = []
        for f in self.exposed():
            hint = _strip_none(hints[f.name])
            key = self.dotted(f.name)
            if dataclasses.is_dataclass(hint):
                if key not in sections:
                    raise ValueError(f"{self.config.__name__}.{f.name} is a section: expand it with its own "
                                     f"ConfigOptions(key={key!r}) or exclude it with the reason")
                continue
            out.append(self._option(f, hint, key, prefix))
        return out

    def _option(self, f: dataclasses.Field, hint: Any, key: str, prefix: str) -> _Option:
        default = field_default(f)
        decl = "--" + "-".join(p for p in (prefix, f.name.replace("_", "-")) if p)
        help_text = " ".join(t for t in (field_help(self.config, f.name), self.notes.get(f.name, "")) if t)
        annotation: Any = hint
        convert: Callable[[Any], Any] = _same
        if hint is bool:
            decl = decl if default is False else f"{decl}/--no-{decl[2:]}"
        elif f.name in self.comma_separated:
            annotation, convert, help_text = str, _split_commas, f"Comma-separated. {help_text}"
            default = ",".join(default) if default else None
        elif typing.get_origin(hint) is list:
            convert, help_text = list, f"{help_text} Repeatable."
            default = list(default) if default else None
        elif f.name in self.paths and hint is str:
            annotation, convert = Path, str
        elif hint not in (int, float, str):
            raise TypeError(f"{self.config.__name__}.{f.name}: no flag type for {hint!r}; exclude it with the reason")
        if default is dataclasses.MISSING:
            default = ... if self.required else None
        info = typer.Option(default, self.flags.get(f.name, decl), help=help_text)
        return _Option(key=key, param=key.replace(".", "_"), annotation=annotation, info=info, convert=convert)


@dataclass(frozen=True)
class _Option:
    """One generated option: where its value goes, and the typer parameter that reads it."""

    key: str  # dotted config key
    param: str  # the command's parameter name
    annotation: Any
    info: Any  # typer.Option(...)
    convert: Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _split_commas(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _strip_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def config_options(*groups: ConfigOptions) -> Callable[[F], F]:
    """Decorator: the command gains one option per field of ``groups`` and receives the flags given as
    ``given`` (``{dotted key: value}``); its own parameters (paths, ``--config``) stay as written."""
    sections = {g.key for g in groups if g.key}

    def decorate(fn: F) -> F:
        options = [o for g in groups for o in g.options(sections)]
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
               if p.name != GIVEN]
        names = [p.name for p in own] + [o.param for o in options]
        flags = [d for o in options for d in "/".join(o.info.param_decls).split("/")]
        clash = {n for n in names if names.count(n) > 1} | {f for f in flags if flags.count(f) > 1}
        if clash or _CONTEXT in names:
            raise ValueError(f"{fn.__name__}: parameters or flags declared twice: {sorted(clash)}")
        by_param = {o.param: o for o in options}

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            ctx = kwargs.pop(_CONTEXT)
            given = {}
            for param, option in by_param.items():
                value = kwargs.pop(param)
                source = ctx.get_parameter_source(param)
                if source is not None and source.name in _TYPED and value is not None:
                    given[option.key] = option.convert(value)
            return fn(**kwargs, **{GIVEN: given})

        params = [inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]
        params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        params += [inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY, default=o.info,
                                     annotation=o.annotation) for o in options]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer reads the signature above, not fn's
        command.config_options = groups  # type: ignore[attr-defined]  (tests/test_cli_from_configs.py)
        return typing.cast(F, command)

    return decorate


def as_tree(given: Mapping[str, Any], tree: dict[str, Any] | None = None) -> dict[str, Any]:
    """``given``'s dotted keys as nested mappings (``{"lora.r": 8}`` -> ``{"lora": {"r": 8}}``), set into
    ``tree`` (a recipe read from ``--config``) when one is passed."""
    tree = {} if tree is None else tree
    for dotted, value in given.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


# The corpus flags every reading command shares: CorpusConfig's fields (its sources are the --corpus paths).
CORPUS_READING = ("text_field", "encoding_errors", "max_bytes", "max_lines", "max_documents")


def corpus_section(*names: str, **kwargs: Any) -> ConfigOptions:
    """The :class:`~vocabshift.corpus.CorpusConfig` fields ``names`` as flags, under the key ``corpus``."""
    return ConfigOptions(CorpusConfig, key="corpus", prefix="", only=names or CORPUS_READING, **kwargs)


def corpus_config(paths: list[str], **reading: Any) -> CorpusConfig:
    """All paths as one stream, or, when a ``temperature`` is given, one source per path mixed by it;
    ``reading`` are the other :class:`~vocabshift.corpus.CorpusConfig` fields given."""
    if reading.get("temperature") is None:
        reading.pop("temperature", None)
        sources = [CorpusSource(paths=list(paths))]
    else:
        sources = [CorpusSource(paths=[p]) for p in paths]
    return CorpusConfig(sources=sources, **reading)

"""The registry of embedding initialization methods: one name -> function, config class, paper.

A method is a function ``fn(inputs: InitInputs, config: XConfig) -> InitResult`` in its own module,
registered with :func:`register_init_method`; the end of this module imports every method module
explicitly, so ``REGISTERED_INIT_METHODS`` is complete once this module is imported.
:func:`run_init_method` is the one way the rest of vocabshift calls a method: it validates the
inputs against what the method ``requires``, runs it, checks the result and records statistics.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from vocabshift.config import ConfigMixin
from vocabshift.errors import ConfigError, InitError
from vocabshift.init._common import validate_inputs
from vocabshift.init.base import (
    COPIED,
    ORIGIN_NAMES,
    REQUIRES_ALIGNED,
    REQUIRES_DECOMPOSITIONS,
    REQUIRES_SHARED,
    REQUIRES_TARGET_TOKEN,
    REQUIRES_TEACHER,
    InitInputs,
    InitResult,
)

log = logging.getLogger(__name__)

KNOWN_REQUIRES = frozenset({REQUIRES_ALIGNED, REQUIRES_TARGET_TOKEN, REQUIRES_DECOMPOSITIONS, REQUIRES_SHARED,
                            REQUIRES_TEACHER})
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

F = TypeVar("F", bound=Callable[..., InitResult])


@dataclass(frozen=True)
class InitMethod:
    """A registered method and what the glue needs to know to run it."""

    name: str
    fn: Callable[[InitInputs, Any], InitResult]
    config: type  # the method's config dataclass (ConfigMixin); ``config()`` gives the paper defaults
    reference_url: str  # the paper
    requires: frozenset[str]  # REQUIRES_* names the glue must compute for it
    copy_overlap: bool  # paper default for a full vocabulary replacement: copy the rows of shared tokens?
    description: str  # one line for ``vocabshift init --list`` and docs


REGISTERED_INIT_METHODS: dict[str, InitMethod] = {}


def register_init_method(
    name: str,
    *,
    config: type,
    reference_url: str,
    requires: Iterable[str] = (),
    copy_overlap: bool,
    description: str,
) -> Callable[[F], F]:
    """Decorator registering ``fn(inputs, config) -> InitResult`` under ``name``.

    Refuses a duplicate name, a name that is not lowercase ``[a-z][a-z0-9_]*``, and unknown
    ``requires`` entries. Returns the function unchanged.
    """
    if not _NAME.match(name):
        raise ValueError(f"init method name {name!r} must be lowercase letters, digits and '_'")
    if name in REGISTERED_INIT_METHODS:
        raise ValueError(f"init method {name!r} is already registered")
    if not (dataclasses.is_dataclass(config) and isinstance(config, type) and issubclass(config, ConfigMixin)):
        raise ValueError(f"init method {name!r}: config must be a ConfigMixin dataclass, got {config!r}")
    needs = frozenset(requires)
    unknown = needs - KNOWN_REQUIRES
    if unknown:
        raise ValueError(f"init method {name!r} requires unknown input(s) {sorted(unknown)}; known: {sorted(KNOWN_REQUIRES)}")

    def decorator(fn: F) -> F:
        REGISTERED_INIT_METHODS[name] = InitMethod(
            name=name, fn=fn, config=config, reference_url=reference_url, requires=needs,
            copy_overlap=copy_overlap, description=description,
        )
        return fn

    return decorator


def get_init_method(name: str) -> InitMethod:
    """The method registered as ``name``; an unknown name is a :class:`ConfigError` listing valid ones."""
    try:
        return REGISTERED_INIT_METHODS[name]
    except (KeyError, TypeError):
        names = sorted(REGISTERED_INIT_METHODS)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"unknown init method {name!r}", hint=f"{hint}valid methods: {', '.join(names)}"
        ) from None


def list_init_methods() -> list[InitMethod]:
    """Every registered method, sorted by name."""
    return [REGISTERED_INIT_METHODS[n] for n in sorted(REGISTERED_INIT_METHODS)]


def _resolve_config(method: InitMethod, config: Any) -> Any:
    if config is None:
        return method.config()
    if isinstance(config, dict):
        return method.config.from_dict(config)
    if not isinstance(config, method.config):
        raise ConfigError(
            f"init method '{method.name}' takes a {method.config.__name__}, got {type(config).__name__}"
        )
    return config


def _check_result(result: InitResult, inputs: InitInputs, name: str) -> None:
    """A method's result must honour the contract; a violation is a bug in the method, except NaNs."""
    import torch
    shape = (inputs.n_target, int(inputs.source_embeddings.shape[1]))
    if not isinstance(result, InitResult):
        raise TypeError(f"init method '{name}' returned {type(result).__name__}, not InitResult")
    rows, origin = result.rows, result.origin
    if tuple(rows.shape) != shape or rows.dtype != torch.float32 or rows.device.type != "cpu":
        raise TypeError(f"init method '{name}' returned rows {tuple(rows.shape)} {rows.dtype} on "
                        f"{rows.device}; the contract is {shape} float32 on cpu")
    if tuple(origin.shape) != (shape[0],) or origin.dtype != torch.int8:
        raise TypeError(f"init method '{name}' returned origin {tuple(origin.shape)} {origin.dtype}, "
                        f"expected ({shape[0]},) int8")
    copied = inputs.copy >= 0
    if not bool((origin[copied] == COPIED).all()) or bool((origin[~copied] == COPIED).any()):
        raise TypeError(f"init method '{name}' marked origins that disagree with inputs.copy")
    bad = ~torch.isfinite(rows).all(1)
    if bool(bad.any()):
        raise InitError(
            f"init method '{name}' produced {int(bad.sum())} non-finite row(s), e.g. target id {int(bad.nonzero()[0])}",
            hint="check the source embeddings and vectors for NaN/inf values",
        )


def run_init_method(name: str, inputs: InitInputs, config: Any = None) -> InitResult:
    """Run method ``name`` on ``inputs`` and return its :class:`InitResult`.

    Args:
        name: a registered method name (see :func:`list_init_methods`).
        inputs: the arrays; validated here (shapes, dtypes, id ranges, the method's ``requires``).
        config: the method's config object, a plain dict of its fields, or ``None`` for the defaults.

    The result is deterministic under ``inputs.seed``. ``info`` gains ``method``, ``config`` (as a dict)
    and ``counts`` (rows per origin name).

    Raises:
        ConfigError: unknown method or a config of the wrong type.
        InitError: inputs that do not fit (naming what is missing or wrong), or non-finite rows.
    """
    method = get_init_method(name)
    config = _resolve_config(method, config)
    inputs = validate_inputs(inputs, method=name, requires=method.requires)
    result = method.fn(inputs, config)
    _check_result(result, inputs, name)
    result.info = {"method": name, "config": config.to_dict(), **result.info, "counts": result.counts()}
    counts = ", ".join(f"{result.info['counts'][n]} {n}" for n in ORIGIN_NAMES.values())
    log.info("init %s: %d target rows (%s)", name, inputs.n_target, counts)
    return result


# Every method module registers itself on import; importing them here, explicitly, is what makes the
# registry complete whenever it is imported. Last in this module: each of them imports the decorator above.
from vocabshift.init import (  # noqa: E402, F401, I001  (registration)
    distill,
    factorized,
    focus,
    fvt,
    mean,
    ofa,
    omp,
    random,
    wechsel,
)

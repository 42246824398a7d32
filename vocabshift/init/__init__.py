"""Embedding initialization: one registry of methods, each a pure function of tensors.

Every method module registers itself on import (``@register_init_method``);
:mod:`vocabshift.init.registry` imports them all, explicitly, so the registry is complete whenever it
is imported. Add a method by adding a module and one import line there. The contract (inputs, result,
origin codes) is in :mod:`vocabshift.init.base`.

The names below load on first use: importing :mod:`vocabshift.init.config` (the stage's settings)
does not import torch.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    **dict.fromkeys(("COMPUTED", "COPIED", "FALLBACK", "ORIGIN_NAMES", "REQUIRES_ALIGNED", "REQUIRES_DECOMPOSITIONS",
                     "REQUIRES_SHARED", "REQUIRES_TARGET_TOKEN", "REQUIRES_TEACHER", "InitInputs", "InitResult",
                     "Teacher"), "vocabshift.init.base"),
    **dict.fromkeys(("REGISTERED_INIT_METHODS", "InitMethod", "get_init_method", "list_init_methods",
                     "register_init_method", "run_init_method"), "vocabshift.init.registry"),
    "InitConfig": "vocabshift.init.config",
    "DistillConfig": "vocabshift.init.distill",
    "FactorizedConfig": "vocabshift.init.factorized",
    "FocusConfig": "vocabshift.init.focus",
    "sparsemax": "vocabshift.init.focus",
    "FVTConfig": "vocabshift.init.fvt",
    "MeanConfig": "vocabshift.init.mean",
    "OFAConfig": "vocabshift.init.ofa",
    "OMPConfig": "vocabshift.init.omp",
    "RandomConfig": "vocabshift.init.random",
    "WechselConfig": "vocabshift.init.wechsel",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vocabshift.init' has no attribute {name!r}")


__all__ = sorted(_LAZY)

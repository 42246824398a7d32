"""Embedding initialization: one registry of methods, each a pure function of tensors.

Every method module below registers itself on import (``@register_init_method``); importing them
all here, explicitly, is what makes the registry complete. Add a method by adding a module and one
import line. The contract (inputs, result, origin codes) is in :mod:`vocabshift.init.base`.
"""

from vocabshift.init import distill, factorized, focus, fvt, mean, ofa, omp, random, wechsel  # noqa: F401  (registration)
from vocabshift.init.base import (
    COMPUTED,
    COPIED,
    FALLBACK,
    ORIGIN_NAMES,
    REQUIRES_ALIGNED,
    REQUIRES_DECOMPOSITIONS,
    REQUIRES_SHARED,
    REQUIRES_TARGET_TOKEN,
    REQUIRES_TEACHER,
    InitInputs,
    InitResult,
    Teacher,
)
from vocabshift.init.distill import DistillConfig
from vocabshift.init.factorized import FactorizedConfig
from vocabshift.init.focus import FocusConfig, sparsemax
from vocabshift.init.fvt import FVTConfig
from vocabshift.init.mean import MeanConfig
from vocabshift.init.ofa import OFAConfig
from vocabshift.init.omp import OMPConfig
from vocabshift.init.random import RandomConfig
from vocabshift.init.registry import (
    REGISTERED_INIT_METHODS,
    InitMethod,
    get_init_method,
    list_init_methods,
    register_init_method,
    run_init_method,
)
from vocabshift.init.wechsel import WechselConfig

__all__ = [
    "COMPUTED",
    "COPIED",
    "FALLBACK",
    "ORIGIN_NAMES",
    "REGISTERED_INIT_METHODS",
    "REQUIRES_ALIGNED",
    "REQUIRES_DECOMPOSITIONS",
    "REQUIRES_SHARED",
    "REQUIRES_TARGET_TOKEN",
    "REQUIRES_TEACHER",
    "DistillConfig",
    "FVTConfig",
    "FactorizedConfig",
    "FocusConfig",
    "InitInputs",
    "InitMethod",
    "InitResult",
    "MeanConfig",
    "OFAConfig",
    "OMPConfig",
    "RandomConfig",
    "Teacher",
    "WechselConfig",
    "get_init_method",
    "list_init_methods",
    "register_init_method",
    "run_init_method",
    "sparsemax",
]

"""The torch device a stage's ``device`` setting names (``auto``, ``cpu``, ``cuda``, ``cuda:1``...)."""

from __future__ import annotations

from typing import Any

from vocabshift.errors import ConfigError


def resolve_device(name: str) -> Any:
    """``auto``: CUDA when it is available, else the CPU; any other name as torch reads it (CUDA checked)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)

"""A low-rank embedding: ``E = coordinates @ primitives``, trained in factorized form, exported dense.

OFA (Liu et al., 2024) and the UNKs-Everywhere factorization (Pfeiffer et al., 2021) keep the
embedding matrix as the product of per-token *coordinates* ``[V, r]`` and shared *primitives*
``[r, d]``. During continued pretraining this trains ``V·r + r·d`` parameters instead of ``V·d``;
at export :meth:`FactorizedEmbedding.materialize` turns it back into a plain ``nn.Embedding`` so the
checkpoint loads with stock ``transformers``.

The module is a drop-in for ``nn.Embedding`` where a model only calls it and reads ``.weight``:
``forward`` looks up coordinates and projects them (the same output as an ``nn.Embedding`` of the
materialized matrix), and ``weight`` is that matrix, computed on each read (with autograd, so a tied
LM head that multiplies by ``.weight`` trains the factors).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from vocabshift.errors import ModelError
from vocabshift.outputs import check_output_path


class FactorizedEmbedding(nn.Module):
    """Embedding rows ``coordinates[i] @ primitives`` with ``coordinates`` [V, r] and ``primitives`` [r, d]."""

    def __init__(
        self, coordinates: torch.Tensor, primitives: torch.Tensor, *, freeze_primitives: bool = False
    ) -> None:
        """Wrap copies of the two factors as Parameters.

        Args:
            coordinates: ``[V, r]`` per-token coordinates.
            primitives: ``[r, d]`` shared primitives.
            freeze_primitives: set ``requires_grad=False`` on the primitives, so training updates only
                the coordinates (an OFA option).
        """
        super().__init__()
        if coordinates.dim() != 2 or primitives.dim() != 2 or coordinates.shape[1] != primitives.shape[0]:
            raise ModelError(
                f"factorized embedding needs coordinates [V, r] and primitives [r, d], got "
                f"{tuple(coordinates.shape)} and {tuple(primitives.shape)}"
            )
        if coordinates.dtype != primitives.dtype:
            raise ModelError(f"coordinates ({coordinates.dtype}) and primitives ({primitives.dtype}) differ in dtype")
        self.coordinates = nn.Parameter(coordinates.detach().clone())
        self.primitives = nn.Parameter(primitives.detach().clone(), requires_grad=not freeze_primitives)

    @property
    def num_embeddings(self) -> int:
        return int(self.coordinates.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.primitives.shape[1])

    @property
    def rank(self) -> int:
        return int(self.primitives.shape[0])

    @property
    def freeze_primitives(self) -> bool:
        return not self.primitives.requires_grad

    @property
    def weight(self) -> torch.Tensor:
        """The ``[V, d]`` matrix ``coordinates @ primitives``, a new tensor on every read.

        Writing into it does not change the module; gradients through it reach both factors.
        """
        return self.coordinates @ self.primitives

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Look up r-dimensional coordinates first, then project: O(tokens·r·d), never the V×d matrix.
        return F.embedding(input_ids, self.coordinates) @ self.primitives

    @torch.no_grad()
    def materialize(self, dtype: torch.dtype = torch.float32) -> nn.Embedding:
        """A plain ``nn.Embedding`` holding a copy of ``coordinates @ primitives`` in ``dtype``."""
        # The product is taken in the factors' own precision, then cast once.
        weight = (self.coordinates @ self.primitives).to(dtype)
        emb = nn.Embedding(self.num_embeddings, self.embedding_dim, dtype=dtype, device=weight.device)
        emb.weight.copy_(weight)
        return emb

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write ``coordinates`` and ``primitives`` to a safetensors file (atomically); returns the path."""
        path = check_output_path(path, force)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "coordinates": self.coordinates.detach().cpu().contiguous(),
            "primitives": self.primitives.detach().cpu().contiguous(),
        }
        metadata = {"format": "pt", "freeze_primitives": str(self.freeze_primitives).lower()}
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> FactorizedEmbedding:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise ModelError("factorized embedding file does not exist", path=path)
        try:
            tensors = load_file(str(path), device=str(device))
            with safe_open(str(path), framework="pt") as fh:
                metadata = fh.metadata() or {}
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelError(f"not a readable safetensors file ({err})", path=path) from err
        missing = [k for k in ("coordinates", "primitives") if k not in tensors]
        if missing:
            raise ModelError(
                f"not a factorized embedding: missing tensor(s) {', '.join(missing)}",
                path=path, hint="expected 'coordinates' [V, r] and 'primitives' [r, d]",
            )
        return cls(
            tensors["coordinates"], tensors["primitives"],
            freeze_primitives=metadata.get("freeze_primitives") == "true",
        )

    def extra_repr(self) -> str:
        frozen = ", freeze_primitives=True" if self.freeze_primitives else ""
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}{frozen}"


__all__ = ["FactorizedEmbedding"]

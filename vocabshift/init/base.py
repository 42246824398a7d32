"""The contract every embedding initialization method follows: arrays in, :class:`InitResult` out.

Methods never touch an ``nn.Module`` or a file. The glue in :mod:`vocabshift.init.apply` turns a model,
tokenizers and vectors into :class:`InitInputs` (computing only what the method declares it
``requires``), calls the method once for the input embeddings and once more for an untied LM head,
and writes the rows into the model with :func:`vocabshift.surgery.resize.remap_vocab`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported when a method runs: importing the contract (and the CLI) stays light
    import torch

# Where a row came from (InitResult.origin).
COPIED = 0  # copied as is from a source row (inputs.copy >= 0): kept, shared or special tokens
COMPUTED = 1  # computed by the method (neighbours, decomposition, factor coordinates)
FALLBACK = 2  # the method had nothing to go on (no vector, empty decomposition): its fallback row
ORIGIN_NAMES = {COPIED: "copied", COMPUTED: "computed", FALLBACK: "fallback"}

# Names a method may list in ``requires`` (what the glue must compute for it).
REQUIRES_ALIGNED = "aligned_token_vectors"  # source_ and target_token_vectors in one aligned space
REQUIRES_TARGET_TOKEN = "target_token_vectors"  # target_token_vectors only, any space (FOCUS: token-level fastText)
REQUIRES_DECOMPOSITIONS = "decompositions"  # source-tokenizer splits of target tokens (FVT)
REQUIRES_SHARED = "shared"  # lexical overlap: target token -> source id with the same surface form
REQUIRES_TEACHER = "teacher"  # the source model's body and windows of target text (distill)


@dataclass
class Teacher:
    """The source model, seen through its embedding input, and target text to run it on (``distill``).

    The one input that is not a plain array: model-aware methods learn rows from what the source model
    computes. ``body`` takes input embeddings (rows of ``InitInputs.source_embeddings`` or learned
    ones) and returns the last hidden states (after the final norm, before the LM head), so a method
    never needs the model's own row numbering.
    """

    body: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (embeds [B, L, d], mask [B, L]) -> [B, L, d]
    contexts: torch.Tensor  # [N, L] long: windows of target text as target ids, -1 = padding at the end
    prefix: int = -1  # compact source id in front of every window (bos, else eos), -1 = none
    causal: bool = True  # a causal LM (next-token loss possible); False: an encoder
    output_embeddings: torch.Tensor | None = None  # [V_s, d] untied LM head rows (compact); None: tied head
    dtype: torch.dtype | None = None  # autocast dtype of the body's forward passes (bfloat16 on CUDA); None: float32
    owns_model: bool = False  # the model was loaded for this teacher alone: done() releases it (init's lean path)

    def __post_init__(self) -> None:
        if self.dtype is None:
            import torch

            self.dtype = torch.float32

    def done(self) -> None:
        """The method has what it needs from the model: when the teacher ``owns`` it, drop it (its weights
        are freed once nothing else holds them) and make ``body`` raise from now on.

        distill calls it after training so that its output matrix is not built beside the weights (the
        peak memory of an init). A teacher that does not own its model (the default) stays usable, so the
        same inputs can be run again.
        """
        if not self.owns_model:
            return

        def released(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("the teacher's model was released")

        self.body = released


@dataclass
class InitInputs:
    """Everything a method may use. Target rows are indexed by target token id ``0..n_target-1``."""

    source_embeddings: torch.Tensor  # [V_s, d] float32: the source matrix (input embeddings, or an untied head)
    copy: torch.Tensor  # [V_t] long: source id whose row target token i copies unchanged; -1 = method computes it
    shared: torch.Tensor | None = None  # [V_t] long: source id with the same canonical surface form, -1 if none
    source_token_vectors: torch.Tensor | None = None  # [V_s, k] source tokens in the static (aligned) space
    source_vector_mask: torch.Tensor | None = None  # [V_s] bool: source token has a usable vector
    target_token_vectors: torch.Tensor | None = None  # [V_t, k] target tokens in the static space
    target_vector_mask: torch.Tensor | None = None  # [V_t] bool
    decompositions: list[list[int]] | None = None  # [V_t] source ids of the source tokenizer's split of each surface form
    teacher: Teacher | None = None  # the source model and target text (REQUIRES_TEACHER)
    seed: int = 0
    device: str | torch.device = "cpu"
    chunk_size: int = 4096  # rows per chunk in similarity products: bounds memory at chunk_size x V

    @property
    def n_target(self) -> int:
        return int(self.copy.numel())


@dataclass
class InitResult:
    """Rows for every target token, where each came from, and method statistics."""

    rows: torch.Tensor  # [V_t, d] float32 on CPU
    origin: torch.Tensor  # [V_t] int8, codes COPIED / COMPUTED / FALLBACK
    info: dict[str, Any] = field(default_factory=dict)  # counts per origin + method-specific statistics
    factorized: Any = None  # vocabshift.surgery.factorized.FactorizedEmbedding for ofa / factorized, else None
    # [V_t, d] rows for an untied LM head, when the method computes both matrices in one run (distill);
    # None: the glue runs the method again on the head's matrix.
    output_rows: torch.Tensor | None = None

    def counts(self) -> dict[str, int]:
        """How many rows came from where, by name."""
        return {name: int((self.origin == code).sum()) for code, name in ORIGIN_NAMES.items()}

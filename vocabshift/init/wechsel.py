"""``wechsel``: WECHSEL (Minixhofer, Paischer & Rekabsaz, 2022, NAACL).

Source and target tokens have static vectors in one aligned space (``inputs.source_token_vectors``
/ ``target_token_vectors``, e.g. fastText subword vectors mapped with orthogonal Procrustes). Each
target token ``t`` takes the ``k`` source tokens most cosine-similar to it, ``N_k(t)``, and

    w_j = exp(cos(x_t, y_j) / T) / sum_{l in N_k(t)} exp(cos(x_t, y_l) / T)
    E_t[t] = sum_{j in N_k(t)} w_j * E_s[j]

with ``k = 10`` and ``T = 0.1`` by default. Source tokens without a usable vector (mask False or an
all-zero vector) are never neighbours. Target tokens without a vector get the fallback row: a draw
from the per-dimension normal of the source rows, as the WECHSEL package does, or the mean row.
WECHSEL computes every row this way, shared tokens included (``copy_overlap=False``); rows the glue
still marks for copying (special tokens) are copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vocabshift.config import ConfigMixin
from vocabshift.init._common import check_fallback, check_positive, neighbour_transfer, start_rows
from vocabshift.init.base import REQUIRES_ALIGNED, InitInputs, InitResult
from vocabshift.init.registry import register_init_method


@dataclass
class WechselConfig(ConfigMixin):
    """Options of ``wechsel`` (defaults from the paper)."""

    neighbours: int = field(default=10, metadata={
        "help": "Number k of most similar source tokens combined for each target token."})
    temperature: float = field(default=0.1, metadata={
        "help": "Softmax temperature T over the neighbours' cosine similarities (lower: closer to the top-1)."})
    fallback: str = field(default="mean", metadata={
        "help": "Row for a target token without a vector: 'mean' (the mean source row; default, see "
                "docs/init.md) or 'random' (per-dimension normal of the source rows, as the WECHSEL package)."})

    def __post_init__(self) -> None:
        check_positive(self.neighbours, "neighbours")
        check_positive(self.temperature, "temperature")
        check_fallback(self.fallback)


@register_init_method(
    "wechsel",
    config=WechselConfig,
    reference_url="https://aclanthology.org/2022.naacl-main.293/",
    requires=(REQUIRES_ALIGNED,),
    copy_overlap=False,
    description="WECHSEL: softmax(cos/T)-weighted top-k source rows, neighbours in an aligned vector space.",
)
def wechsel_init(inputs: InitInputs, config: WechselConfig) -> InitResult:
    """Each row not copied = softmax-weighted sum of its top-k aligned source neighbours' rows."""
    rows, origin, todo = start_rows(inputs)
    info = neighbour_transfer(inputs, inputs.source_embeddings, rows, origin, todo, method="wechsel",
                              neighbours=config.neighbours, temperature=config.temperature, fallback=config.fallback)
    return InitResult(rows=rows, origin=origin, info=info)

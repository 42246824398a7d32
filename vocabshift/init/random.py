"""``random``: every new row drawn from the source embeddings' per-dimension normal distribution.

The baseline of the embedding-transfer papers and the fallback WECHSEL and FOCUS use for tokens
without a vector: row ``i`` has entries ``e_ij ~ N(mu_j, sigma_j)`` where ``mu_j`` and ``sigma_j``
are the mean and (population) standard deviation of column ``j`` of the source embeddings. Rows the
glue marks for copying (``inputs.copy >= 0``) are copied as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from vocabshift.config import ConfigMixin
from vocabshift.init._common import fallback_rows, generator, start_rows
from vocabshift.init.base import InitInputs, InitResult
from vocabshift.init.registry import register_init_method


@dataclass
class RandomConfig(ConfigMixin):
    """``random`` has no options: the distribution is the source embeddings' own, the seed is ``inputs.seed``."""


@register_init_method(
    "random",
    config=RandomConfig,
    reference_url="https://aclanthology.org/2022.naacl-main.293/",
    copy_overlap=False,
    description="Per-dimension normal N(mean, std) of the source embeddings (the usual baseline).",
)
def random_init(inputs: InitInputs, config: RandomConfig) -> InitResult:
    """Rows ``~ N(mu, diag(sigma^2))`` of the source embeddings for every token not copied."""
    rows, origin, todo = start_rows(inputs)
    n = int(todo.sum())
    rows[todo] = fallback_rows("random", n, inputs.source_embeddings, inputs, generator(inputs))
    return InitResult(rows=rows, origin=origin, info={})

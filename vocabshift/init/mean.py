"""``mean``: every new row is the mean of the source embeddings.

Hewitt (2021) argues that the mean keeps the model's output distribution close to the old one
(a new token's logit is the average logit, not a large random one); ``transformers``'
``resize_token_embeddings(mean_resizing=True)`` samples around it, we take the mean itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from vocabshift.config import ConfigMixin
from vocabshift.init._common import fallback_rows, start_rows
from vocabshift.init.base import InitInputs, InitResult
from vocabshift.init.registry import register_init_method


@dataclass
class MeanConfig(ConfigMixin):
    """``mean`` has no options."""


@register_init_method(
    "mean",
    config=MeanConfig,
    reference_url="https://nlp.stanford.edu/~johnhew/vocab-expansion.html",
    copy_overlap=False,
    description="Mean of the source embeddings for every new row.",
)
def mean_init(inputs: InitInputs, config: MeanConfig) -> InitResult:
    """Row ``= (1/V_s) sum_j E_s[j]`` (accumulated in float64) for every token not copied."""
    rows, origin, todo = start_rows(inputs)
    rows[todo] = fallback_rows("mean", int(todo.sum()), inputs.source_embeddings, inputs)
    return InitResult(rows=rows, origin=origin, info={})

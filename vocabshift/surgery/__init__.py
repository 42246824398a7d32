"""Model surgery: the one place that changes a model's vocabulary-sized parameters.

Later stages (pruning, extension, embedding init) produce an ``id_map`` (new id -> source id, or -1
for a new token) and, optionally, rows for the new tokens; :func:`remap_vocab` applies them to the
model in place — input embeddings, LM head (tied or untied), MLM output bias, ``config.vocab_size``
and the special-token ids of the config and generation config — keeping the rows of kept tokens
bit-identical. :func:`locate` tells where those parameters are and whether the head is tied.
Only this package touches ``nn.Module`` s; init methods work on plain tensors.
"""

from vocabshift.errors import IdMapError, ModelError
from vocabshift.surgery.locate import EmbeddingLayout, locate
from vocabshift.surgery.resize import remap_vocab

__all__ = ["EmbeddingLayout", "IdMapError", "ModelError", "locate", "remap_vocab"]

"""Held-out language-modelling loss and bits per byte of a model on a corpus.

The held-out text is packed exactly as continued pretraining packs its evaluation split
(:func:`vocabshift.train.data.build_eval_set`: the first documents of the corpus stream, special
tokens around each document, cut into ``seq_len`` blocks, at most ``max_sequences`` of them), so a
figure here is comparable with the ``eval_bits_per_byte`` that ``vocabshift train`` logs.

* ``loss`` — mean negative log-likelihood per predicted token, in nats;
* ``bits_per_byte = total_nll_nats / ln(2) / n_bytes`` (:func:`~vocabshift.train.data.bits_per_byte`),
  where ``n_bytes`` counts the UTF-8 bytes of the text the sequences cover. Unlike the per-token
  loss it does not depend on the tokenizer, so models with different vocabularies compare on it.

Causal LMs predict every token but the first of each sequence. Masked LMs are scored on the masked
positions only (``mlm_probability`` of the non-special tokens, seeded): the MLM figure is a *pseudo*
loss of the masked tokens, and its bits per byte divides their NLL by the bytes of the whole text,
so it compares only between masked LMs on the same text and masking rate, never with a causal LM.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vocabshift.corpus import CorpusConfig
from vocabshift.train.data import IGNORE_INDEX, DataConfig, bits_per_byte, build_eval_set, resolve_objective

log = logging.getLogger(__name__)

MLM_NOTE = ("pseudo: only the masked tokens are scored (masked-LM objective), so this compares only "
            "with other masked LMs on the same text and masking rate")

# Families whose position ids start after the padding index (RoBERTa's create_position_ids_from_input_ids),
# so `pad_token_id + 1` of their `max_position_embeddings` cannot be used by text.
_PADDING_OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                                       "data2vec-text", "xmod", "ibert", "mpnet", "longformer"})


@dataclass
class LMResult:
    """Held-out loss of one model."""

    objective: str  # "clm" or "mlm"
    loss: float  # mean NLL per predicted token, nats
    bits_per_byte: float  # total NLL / ln 2 / UTF-8 bytes of the covered text
    total_nll_nats: float
    predicted_tokens: int
    bytes: int
    sequences: int
    seq_len: int
    documents: int
    pseudo: bool  # masked LM: only masked tokens scored
    note: str = ""


def max_positions(config: Any) -> int | None:
    """Longest input (tokens) the model's position embeddings allow, or None when it has no limit set."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            if getattr(config, "model_type", None) in _PADDING_OFFSET_POSITIONS:
                value -= int(getattr(config, "pad_token_id", None) or 0) + 1
            return value
    return None


def summed_nll(model: Any, batches: Iterable[dict[str, torch.Tensor]], objective: str,
               device: torch.device | str = "cpu") -> tuple[float, int]:
    """Summed NLL (nats, float64) and number of predicted tokens over ``batches`` (with ``labels``).

    CLM: position ``t`` predicts token ``t + 1`` (the labels are shifted here, as the model would);
    MLM: positions whose label is not ``-100``.
    """
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    with torch.inference_mode():
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits.float()
            if objective == "clm":
                logits, labels = logits[:, :-1], labels[:, 1:]
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                  ignore_index=IGNORE_INDEX, reduction="sum")
            total += nll.double().cpu()
            count += int((labels != IGNORE_INDEX).sum())
    return float(total), count


def lm_loss(model: Any, tokenizer: Any, corpus: CorpusConfig, *, seq_len: int, max_documents: int,
            max_sequences: int, batch_size: int = 8, objective: str = "auto", mlm_probability: float = 0.15,
            seed: int = 0, device: torch.device | str = "cpu") -> LMResult:
    """Held-out loss and bits per byte of ``model`` on the first ``max_documents`` documents of ``corpus``.

    Raises :class:`~vocabshift.errors.ConfigError` when the model cannot do ``objective`` (e.g. a base
    model without an LM head) and :class:`~vocabshift.errors.CorpusError` when the documents hold
    less than one ``seq_len`` sequence.
    """
    objective = resolve_objective(model, objective)
    data = DataConfig(seq_len=seq_len, objective=objective, mlm_probability=mlm_probability,
                      eval_documents=max_documents, eval_max_sequences=max_sequences, num_workers=0, seed=seed)
    eval_set = build_eval_set(tokenizer, corpus, data, objective)
    assert eval_set is not None  # eval_documents >= 1
    was_training = model.training
    model.eval()
    try:
        total, count = summed_nll(model, eval_set.batches(batch_size), objective, device)
    finally:
        model.train(was_training)
    pseudo = objective == "mlm"
    result = LMResult(objective=objective, loss=total / max(count, 1),
                      bits_per_byte=bits_per_byte(total, eval_set.n_bytes), total_nll_nats=total,
                      predicted_tokens=count, bytes=eval_set.n_bytes,
                      sequences=len(eval_set.sequences), seq_len=seq_len, documents=eval_set.n_documents,
                      pseudo=pseudo, note=MLM_NOTE if pseudo else "")
    log.info("%s loss %.4f nats/token, %.4f bits per byte over %d tokens (%d sequences of %d, %d bytes)",
             objective, result.loss, result.bits_per_byte, count, result.sequences, seq_len, result.bytes)
    return result

r"""Held-out language-modelling loss and bits per byte of a model on a corpus, under two protocols.

``document`` (the default of ``vocabshift eval``; :func:`score_documents`) scores each held-out
document on its own, as lm-evaluation-harness's ``loglikelihood_rolling`` does (EleutherAI,
``lm_eval/models/huggingface.py`` and ``get_rolling_token_windows`` in ``lm_eval/utils.py``): the
document's tokens (no special tokens added) are predicted after one prefix token (the tokenizer's
bos token, else its eos token, like HFLM's ``prefix_token_id``); a document longer than the window
is scored in rolling windows. The first window predicts tokens ``0 .. W-1`` from the prefix; each
later one predicts the next ``stride`` tokens (or the rest) with the ``W - stride`` tokens before
them as extra context, so every token is predicted exactly once and never sees another document.
``stride = W`` (the default) is lm-eval's ``context_len=1``. Masked LMs are scored per document by
their pseudo-log-likelihood (:func:`score_documents_pll`, below). Totals follow lm-eval's metrics:
``bits_per_byte = total_nll / bytes / ln 2``, ``byte_perplexity = exp(total_nll / bytes)``,
``word_perplexity = exp(total_nll / words)`` with ``words = len(re.split(r"\s+", doc))``.
Because bytes come from the documents' text, two models scored on the same list of documents are
scored on the same bytes whatever their tokenizers.

A masked LM has no left-to-right likelihood; per document it gets the pseudo-log-likelihood (PLL,
Salazar et al., 2020, "Masked Language Model Scoring"): each token is masked in turn and scored from
the rest of the document, :math:`\mathrm{PLL}(d) = \sum_i \log p(t_i \mid d_{\setminus i})`.
Plain PLL flatters tokenizers that split words into many pieces (the other pieces of a word give a
masked piece away), so it would favour the source tokenizer over an adapted one with whole-word
tokens; we use Kauf & Ivanova's (2023) ``PLL-word-l2r`` instead: masking token ``i`` also masks the
tokens after it in the same word (``word_ids()`` of the fast tokenizer), so a word's pieces are
scored left to right as a causal model would. Documents longer than the window are scored in
disjoint chunks, each wrapped in the tokenizer's special tokens. The figure is a pseudo
loss (``pseudo=True``): it compares masked LMs with each other on the same documents, not with a
causal LM's likelihood.

``packed`` (:func:`lm_loss`) packs the held-out text exactly as continued pretraining packs its
evaluation split (:func:`vocabshift.train.data.build_eval_set`: the first documents of the corpus stream, special
tokens around each document, cut into ``seq_len`` blocks, at most ``max_sequences`` of them), so a
figure here is comparable with the ``eval_bits_per_byte`` that ``vocabshift train`` logs. Each document
is then predicted with the previous documents as context, and each tokenizer's ``max_sequences``
blocks cover a different amount of text: packed figures of two models do not compare on the same
bytes; use the ``document`` protocol for that.

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
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vocabshift.corpus import CorpusConfig
from vocabshift.errors import ConfigError, CorpusError, TokenizerError
from vocabshift.eval.bootstrap import Interval
from vocabshift.eval.config import MIN_WINDOW, PROTOCOLS, check_window  # noqa: F401  (re-exported)
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
    protocol: str = "packed"


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


# --------------------------------------------------------------------------------------------------
# Per-document scoring (the lm-evaluation-harness protocol)

DEFAULT_WINDOW = 2048  # lm-eval HFLM's max length when neither the config nor the tokenizer states one
DEFAULT_BATCH_TOKENS = 8192  # padded tokens per forward pass (logits are batch x length x vocabulary)


@dataclass
class DocumentScores:
    """Per-document figures of one model; index ``i`` is the ``i``-th held-out document."""

    nll: list[float]  # summed NLL of the document's tokens, nats
    tokens: list[int]  # predicted tokens (the document's tokens: each predicted once)
    bytes: list[int]  # UTF-8 bytes
    words: list[int]  # len(re.split(r"\s+", doc)), as lm-eval counts words


@dataclass
class DocumentLMResult:
    """Held-out loss of one model, each document scored on its own (``protocol == "document"``)."""

    objective: str  # "clm"
    loss: float  # mean NLL per predicted token, nats
    bits_per_byte: float  # total NLL / ln 2 / bytes
    byte_perplexity: float  # exp(total NLL / bytes)
    word_perplexity: float  # exp(total NLL / words)
    total_nll_nats: float
    predicted_tokens: int
    bytes: int
    words: int
    documents: int
    window: int  # tokens per forward pass, the prefix token included
    stride: int  # tokens newly predicted by each window after the first
    prefix_token_id: int
    windows: int  # forward windows over all documents
    per_document: DocumentScores
    interval: Interval | None = None  # bootstrap interval of bits_per_byte (set by vocabshift eval)
    protocol: str = "document"
    pseudo: bool = False
    note: str = ""


def prefix_token_id(tokenizer: Any) -> int:
    """The token each document is predicted after: bos, else eos (lm-eval HFLM's ``prefix_token_id``)."""
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    raise TokenizerError(f"{type(tokenizer).__name__} has neither a bos nor an eos token to predict the first "
                         "token of a document from", hint="set bos_token or eos_token in tokenizer_config.json")


def rolling_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows that score a document of ``n_tokens`` tokens, as ``(start, end, scored)`` spans.

    Spans index the sequence ``[prefix] + tokens`` (length ``n_tokens + 1``): the model reads
    ``seq[start:end]`` and its last ``scored`` positions predict ``seq[end - scored + 1 : end + 1]``.
    The first window starts at the prefix and scores all it reads; the later ones end ``stride``
    tokens further (the last one at the document's end) and read ``window`` tokens back from there.
    """
    check_window(window, stride)
    if n_tokens == 0:
        return []
    end = min(window, n_tokens)
    spans = [(0, end, end)]
    while end < n_tokens:
        new_end = min(end + stride, n_tokens)
        spans.append((new_end - window, new_end, new_end - end))
        end = new_end
    return spans


def perplexity(total_nll: float, units: int) -> float:
    """``exp(total_nll / units)``, or ``inf`` past float range (a broken model must still get its report)."""
    try:
        return math.exp(total_nll / max(units, 1))
    except OverflowError:
        return math.inf


def count_words(text: str) -> int:
    """Words as lm-eval's word perplexity counts them: ``len(re.split(r"\\s+", text))``."""
    return len(re.split(r"\s+", text))


def _encode_documents(tokenizer: Any, documents: list[str]) -> list[list[int]]:
    """Each document's tokens without special tokens (the prefix token stands in for them)."""
    if not documents:
        return []
    # verbose=False: a long document is expected here (rolling windows), no "longer than max length" warning.
    return [list(ids) for ids in tokenizer(documents, add_special_tokens=False, verbose=False)["input_ids"]]


def _batches(lengths: list[int], batch_size: int, batch_tokens: int) -> list[list[int]]:
    """Window indices grouped longest first: at most ``batch_size`` windows and ``batch_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < batch_size and lengths[groups[-1][0]] * (len(groups[-1]) + 1) <= batch_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _require_documents(documents: list[str]) -> None:
    if not documents:
        raise CorpusError("there are no held-out documents to score",
                          hint="check the corpus and --max-documents (or eval_documents in a recipe)")


def _document_result(objective: str, nll: torch.Tensor, tokens: list[int], documents: list[str],
                     **fields: Any) -> DocumentLMResult:
    """The totals of per-document NLLs (lm-eval's bits per byte, byte and word perplexity) as a result."""
    scores = DocumentScores(nll=nll.tolist(), tokens=tokens, bytes=[len(doc.encode("utf-8")) for doc in documents],
                            words=[count_words(doc) for doc in documents])
    total, n_bytes, n_words, n_tokens = float(nll.sum()), sum(scores.bytes), sum(scores.words), sum(scores.tokens)
    return DocumentLMResult(
        objective=objective, loss=total / max(n_tokens, 1), bits_per_byte=bits_per_byte(total, n_bytes),
        byte_perplexity=perplexity(total, n_bytes), word_perplexity=perplexity(total, n_words),
        total_nll_nats=total, predicted_tokens=n_tokens, bytes=n_bytes, words=n_words, documents=len(documents),
        per_document=scores, **fields)


def score_documents(model: Any, tokenizer: Any, documents: list[str], *, window: int, stride: int | None = None,
                    batch_size: int = 8, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                    device: torch.device | str = "cpu") -> DocumentLMResult:
    """Score each of ``documents`` on its own (lm-eval's ``loglikelihood_rolling``) with a causal LM.

    ``window``: tokens per forward pass (the model's max length, or less); ``stride``: tokens newly
    predicted per window after the first (default ``window``: disjoint windows). Raises
    :class:`~vocabshift.errors.CorpusError` for no documents, :class:`~vocabshift.errors.ConfigError`
    for a window below 2 or a stride outside ``1 .. window``, or a model that is not a causal LM.
    """
    stride = window if stride is None else stride
    check_window(window, stride)
    _require_documents(documents)
    if resolve_objective(model, "auto") != "clm":
        raise ConfigError(f"score_documents needs a causal LM; {type(model).__name__} is a masked LM",
                          hint="masked LMs: score_documents_pll (their pseudo-log-likelihood)")
    prefix = prefix_token_id(tokenizer)
    encoded = _encode_documents(tokenizer, documents)
    items: list[tuple[int, list[int], list[int]]] = []  # (document, model input, targets of its last positions)
    for d, ids in enumerate(encoded):
        seq = [prefix, *ids]
        for start, end, scored in rolling_windows(len(ids), window, stride):
            items.append((d, seq[start:end], seq[end - scored + 1:end + 1]))
    nll = torch.zeros(len(documents), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for group in _batches([len(inp) for _, inp, _ in items], batch_size, batch_tokens):
                width = len(items[group[0]][1])
                # Right padding: a causal model's real positions never attend to the padding after them.
                inputs = torch.full((len(group), width), prefix, dtype=torch.long)
                for row, i in enumerate(group):
                    inp = items[i][1]
                    inputs[row, :len(inp)] = torch.tensor(inp)
                logits = model(input_ids=inputs.to(device)).logits
                for row, i in enumerate(group):
                    d, inp, targets = items[i]
                    scored = logits[row, len(inp) - len(targets):len(inp)].float()
                    loss = F.cross_entropy(scored, torch.tensor(targets, device=scored.device), reduction="sum")
                    nll[d] += loss.double().cpu()
    finally:
        model.train(was_training)
    result = _document_result("clm", nll, [len(ids) for ids in encoded], documents, window=window, stride=stride,
                              prefix_token_id=prefix, windows=len(items))
    log.info("per-document: %.4f bits per byte over %d documents (%d bytes, %d tokens, %d windows of <= %d)",
             result.bits_per_byte, result.documents, result.bytes, result.predicted_tokens, result.windows, window)
    return result


PLL_LOGIT_BUDGET = 2 ** 28  # logit floats per forward pass of the PLL scorer (1 GiB in fp32)
PLL_NOTE = ("pseudo: masked-LM pseudo-log-likelihood (PLL-word-l2r: each token masked in turn with the rest of "
            "its word), comparable between masked LMs on the same documents, not with a causal LM")


def _special_wrap(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one sequence (``[CLS]``/``[SEP]``, ``<s>``/``</s>``).

    Read off a probe text encoded with and without them, so it holds for any post-processor template.
    """
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for k in range(len(full) - len(bare) + 1):
        if full[k:k + len(bare)] == bare:
            return list(full[:k]), list(full[k + len(bare):])
    raise TokenizerError(f"{type(tokenizer).__name__} changes the text's tokens when it adds its special tokens",
                         hint="check the post-processor in tokenizer.json")


def _pll_items(encoding: Any, n_docs: int, tokenizer: Any,
               window: int) -> tuple[list[tuple[int, list[int], int, int]], list[int]]:
    """The masked copies that score every token, ``(document, model input, position, token)``, and token counts.

    Each document's tokens are cut into chunks of at most ``window`` minus the special tokens, each chunk
    wrapped as the tokenizer wraps one sequence; within a chunk, the copy that scores token ``i`` has
    ``i`` and the later tokens of its word replaced by the mask token.
    """
    mask = tokenizer.mask_token_id
    prefix, suffix = _special_wrap(tokenizer)
    room = window - len(prefix) - len(suffix)
    if room < 1:
        raise ConfigError(f"a window of {window} tokens leaves no room for text after "
                          f"{len(prefix) + len(suffix)} special tokens", hint="use a larger window (--seq-len)")
    items: list[tuple[int, list[int], int, int]] = []
    counts = []
    for d in range(n_docs):
        ids = list(encoding["input_ids"][d])
        words = encoding.word_ids(d)
        counts.append(len(ids))
        for start in range(0, len(ids), room):
            chunk, chunk_words = ids[start:start + room], words[start:start + room]
            wrapped, offset = prefix + chunk + suffix, len(prefix)
            for i in range(len(chunk)):
                inp = list(wrapped)
                inp[offset + i] = mask
                j = i + 1
                while j < len(chunk) and chunk_words[i] is not None and chunk_words[j] == chunk_words[i]:
                    inp[offset + j] = mask
                    j += 1
                items.append((d, inp, offset + i, chunk[i]))
    return items, counts


def _mlm_head(model: Any) -> tuple[Any, Any] | None:
    """(body, head) of a masked LM whose head maps hidden states to logits on its own (BERT's ``cls``,
    RoBERTa/XLM-R's ``lm_head``), or None: then the whole model runs and the logits are gathered after."""
    body = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
    head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
    if body is None or head is None or not callable(body) or not callable(head):
        return None
    return body, head


def _masked_logits(model: Any, inputs: torch.Tensor, attention: torch.Tensor, rows: torch.Tensor,
                   positions: torch.Tensor) -> torch.Tensor:
    """Logits at one position per row. With a separable head, only those positions go through it: the
    head of a 250k-token vocabulary costs more than the whole body at every position."""
    parts = _mlm_head(model)
    if parts is None:
        logits = model(input_ids=inputs, attention_mask=attention).logits
        return logits[rows.to(logits.device), positions.to(logits.device)].float()
    body, head = parts
    hidden = body(input_ids=inputs, attention_mask=attention)[0]
    picked = hidden[rows.to(hidden.device), positions.to(hidden.device)]
    return head(picked).float()


def score_documents_pll(model: Any, tokenizer: Any, documents: list[str], *, window: int, batch_size: int = 64,
                        batch_tokens: int = DEFAULT_BATCH_TOKENS,
                        device: torch.device | str = "cpu") -> DocumentLMResult:
    """Score each of ``documents`` on its own by a masked LM's pseudo-log-likelihood (PLL-word-l2r).

    One forward pass per token (batched): token ``i`` is predicted with it and the rest of its word
    masked (see the module docstring). ``bits_per_byte`` divides the summed negative PLL by the
    documents' UTF-8 bytes, so two masked LMs with different tokenizers compare on the same bytes.
    Raises :class:`~vocabshift.errors.CorpusError` for no documents,
    :class:`~vocabshift.errors.TokenizerError` for a tokenizer without a mask token or word ids (a slow
    tokenizer), :class:`~vocabshift.errors.ConfigError` for a model that is not a masked LM.
    """
    _require_documents(documents)
    if resolve_objective(model, "auto") != "mlm":
        raise ConfigError(f"pseudo-log-likelihood scoring needs a masked LM; {type(model).__name__} is not one",
                          hint="causal LMs: score_documents")
    if getattr(tokenizer, "mask_token_id", None) is None:
        raise TokenizerError(f"{type(tokenizer).__name__} has no mask token to score a masked LM with",
                             hint="set mask_token in tokenizer_config.json")
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(f"{type(tokenizer).__name__} is a slow tokenizer: PLL-word-l2r needs the word of "
                             "each token (word_ids of a fast tokenizer)", hint="save the tokenizer with a tokenizer.json")
    check_window(window, window)
    # Every masked copy yields a whole row of logits (batch x length x vocabulary floats): keep that near 1 GiB.
    vocab = int(model.get_output_embeddings().weight.shape[0]) if model.get_output_embeddings() is not None else 1
    batch_tokens = max(window, min(batch_tokens, PLL_LOGIT_BUDGET // max(vocab, 1)))
    encoding = tokenizer(documents, add_special_tokens=False, verbose=False)
    items, counts = _pll_items(encoding, len(documents), tokenizer, window)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.mask_token_id
    nll = torch.zeros(len(documents), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for group in _batches([len(item[1]) for item in items], batch_size, batch_tokens):
                width = len(items[group[0]][1])
                inputs = torch.full((len(group), width), pad, dtype=torch.long)
                attention = torch.zeros((len(group), width), dtype=torch.long)
                for row, i in enumerate(group):
                    inp = items[i][1]
                    inputs[row, :len(inp)] = torch.tensor(inp)
                    attention[row, :len(inp)] = 1
                rows = torch.arange(len(group))
                positions = torch.tensor([items[i][2] for i in group])
                scored = _masked_logits(model, inputs.to(device), attention.to(device), rows, positions)
                targets = torch.tensor([items[i][3] for i in group], device=scored.device)
                loss = F.cross_entropy(scored, targets, reduction="none")
                nll.index_add_(0, torch.tensor([items[i][0] for i in group]), loss.double().cpu())
    finally:
        model.train(was_training)
    result = _document_result("mlm", nll, counts, documents, window=window, stride=window, prefix_token_id=-1,
                              windows=len(items), pseudo=True, note=PLL_NOTE)
    log.info("per-document PLL: %.4f bits per byte over %d documents (%d bytes, %d tokens, %d masked copies)",
             result.bits_per_byte, result.documents, result.bytes, result.predicted_tokens, len(items))
    return result

"""Continued-pretraining data: stream, tokenize, pack and mask a corpus, resumably.

The pipeline, for the training split::

    iter_corpus (mixing, limits)  ->  drop held-out documents  ->  tokenize (worker processes)
      ->  [prefix] ids [suffix] per document  ->  concatenate  ->  cut into seq_len blocks
      ->  interleave replay blocks  ->  optional shuffle buffer  ->  MLM masks or CLM labels

- **Packing.** Every document becomes ``prefix + ids + suffix``, where prefix and suffix are the
  special tokens the tokenizer's post-processor puts around a single sequence (``[CLS] … [SEP]`` for
  BERT, ``<s> … </s>`` for RoBERTa/XLM-R, ``<s> …`` for Llama). A causal LM always gets an eos at the
  end of each document, so documents do not run together (GPT-2 and SmolLM2 add no special tokens
  themselves). A masked LM without a post-processor gets cls/bos and sep/eos. Documents are
  concatenated and cut into blocks of exactly ``seq_len`` tokens: no padding, a block may start in
  the middle of a document, and attention crosses document boundaries inside a block (as in
  RoBERTa's FULL-SENTENCES packing and GPT-2-style pretraining). Tokens left over at the end of an
  epoch carry over into the next; the final partial block of a finite stream is dropped.
- **Held-out split.** The first ``eval_documents`` documents of the corpus stream (epoch 0, the
  corpus seed) are the evaluation set. The training stream drops every document whose text equals a
  held-out one, so a held-out document never reaches training, not even when mixing restarts a small
  source or an exact duplicate sits elsewhere in the corpus. Each later training epoch re-reads the
  corpus with seed ``corpus.seed + epoch``, so mixing draws and shuffles differ between epochs.
- **Replay.** With ``replay`` set, each training block is drawn from the replay corpus with
  probability ``replay_weight`` (an independent seeded coin per block); the replay stream is
  tokenized with the same (new) tokenizer and cycles forever.
- **Masking** (BERT, Devlin et al. 2019, section 3.1): each non-special token is chosen with
  probability ``mlm_probability``; chosen tokens become the mask token (80%), a random non-special
  token (10%) or stay unchanged (10%); labels are the original ids at chosen positions, -100
  elsewhere. A block in which nothing was chosen gets one chosen token, so no batch has an undefined
  loss. Whole-word masking chooses words instead (a word is a word-initial token and its continuation
  tokens: WordPiece ``##``, sentencepiece pieces without ``▁``, byte-level BPE tokens without ``Ġ``;
  a special token ends a word); in scripts written without spaces a "word" can be a whole sentence.
- **Determinism.** All randomness is counter-based: the mask of block ``i`` comes from a
  ``torch.Generator`` seeded from ``(seed, i)``, the replay coin of block ``j`` from ``(seed, j)``,
  the shuffle-buffer slot from ``(seed, i)``. So nothing depends on batch boundaries, and there is no
  random state to save beyond counters.
- **Resuming.** :meth:`PackedStream.state_dict` holds, per stream (train, replay), the epoch, the
  number of corpus documents before the first token not yet emitted, and how many tokens of that
  document were already emitted; plus the counters and the shuffle buffer's blocks. It is small
  (constant size without a shuffle buffer) and JSON-serializable. :func:`~vocabshift.corpus.iter_corpus`
  mixes sources with a seeded generator that is not itself resumable, so resuming re-reads (but does
  not tokenize) the consumed prefix of the current epoch and skips it: exact, because the stream is
  deterministic under its seed, at the cost of reading that prefix once more.

Tokenization uses the tokenizer's Rust backend (a copy with truncation and padding switched off) in a
pool of ``num_workers`` processes (forkserver where the platform has it, else spawn; each worker runs
the tokenizer single-threaded). Document batches go out with at most ``2 * num_workers`` in flight
and come back in order, so the output is the same for any number of workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocabshift.corpus import CorpusConfig, iter_corpus
from vocabshift.errors import ConfigError, CorpusError, TokenizerError
from vocabshift.train.data_config import (  # noqa: F401  (re-exported)
    IGNORE_INDEX,
    MIN_SEQ_LEN,
    OBJECTIVES,
    DataConfig,
    _check_int,
    resolve_objective,
)

__all__ = [
    "IGNORE_INDEX",
    "OBJECTIVES",
    "DataConfig",
    "EvalSet",
    "PackedStream",
    "bits_per_byte",
    "build_eval_set",
    "resolve_objective",
]

log = logging.getLogger(__name__)

STATE_FORMAT = "vocabshift.train.data.PackedStream/1"

# Tags that keep the counter-based random streams apart: the same (seed, index) never feeds two uses.
_TAG_REPLAY, _TAG_SHUFFLE, _TAG_MASK, _TAG_EVAL_MASK = 1, 2, 3, 4


# --------------------------------------------------------------------------------------------------
# Tokenizer and document format


def _load_tokenizer(tokenizer: Any) -> Any:
    """A transformers fast tokenizer, loaded offline from a directory when given a path."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        from vocabshift.safe_loading import LOAD_KWARGS, refuse_remote_code

        path = Path(tokenizer)
        if not path.exists():
            raise TokenizerError("no such tokenizer directory", path=path)
        refuse_remote_code(path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), **LOAD_KWARGS)
        except (OSError, ValueError) as err:
            raise TokenizerError(f"cannot load the tokenizer: {str(err).splitlines()[0]}", path=path) from err
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise TokenizerError(
            f"{type(tokenizer).__name__} is not a fast tokenizer (it has no tokenizer.json backend)",
            hint="save the tokenizer with a current transformers so that tokenizer.json is written",
        )
    return tokenizer


@dataclass(frozen=True)
class _DocFormat:
    """How one document becomes token ids; picklable, sent once to each worker process."""

    tokenizer_json: str
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]


def _plain_backend(tokenizer_json: str) -> Any:
    """A copy of the Rust tokenizer with truncation and padding off (tokenizer.json may carry them)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tokenizer_json)
    backend.no_truncation()
    backend.no_padding()
    return backend


def _doc_format(tokenizer: Any, objective: str) -> _DocFormat:
    """The special tokens around each document, read off the tokenizer's post-processor."""
    spec = tokenizer.backend_tokenizer.to_str()
    backend = _plain_backend(spec)
    probe = "a"
    plain = backend.encode(probe, add_special_tokens=False).ids
    full = backend.encode(probe, add_special_tokens=True).ids
    prefix: list[int] = []
    suffix: list[int] = []
    for k in range(len(full) - len(plain) + 1):
        if full[k:k + len(plain)] == plain:
            prefix, suffix = full[:k], full[k + len(plain):]
            break
    else:
        log.warning("the tokenizer's post-processor rewrites the text tokens; adding no special tokens")
    if objective == "clm":
        eos = tokenizer.eos_token_id
        if eos is None:
            raise TokenizerError(
                f"{type(tokenizer).__name__} has no eos token, which causal-LM packing puts between documents",
                hint="set eos_token in the tokenizer (tokenizer_config.json)",
            )
        if not suffix or suffix[-1] != eos:
            suffix = [*suffix, eos]
    else:
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if not prefix and start is not None:
            prefix = [start]
        if not suffix and end is not None:
            suffix = [end]
    return _DocFormat(spec, tuple(prefix), tuple(suffix))


class _Encoder:
    """Documents -> ``prefix + ids + suffix`` as int32 arrays (no truncation, no padding)."""

    def __init__(self, fmt: _DocFormat) -> None:
        self.backend = _plain_backend(fmt.tokenizer_json)
        self.prefix = np.asarray(fmt.prefix, dtype=np.int32)
        self.suffix = np.asarray(fmt.suffix, dtype=np.int32)

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self.backend.encode_batch_fast(texts, add_special_tokens=False)
        return [np.concatenate([self.prefix, np.asarray(e.ids, dtype=np.int32), self.suffix]) for e in encodings]


_WORKER_ENCODER: _Encoder | None = None


def _worker_init(fmt: _DocFormat) -> None:
    # Parallelism comes from the processes; a rayon pool per worker would oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _WORKER_ENCODER
    _WORKER_ENCODER = _Encoder(fmt)


def _worker_encode(texts: list[str]) -> list[np.ndarray]:
    assert _WORKER_ENCODER is not None, "worker not initialized"
    return _WORKER_ENCODER.encode(texts)


def _start_pool(fmt: _DocFormat, num_workers: int) -> Any:
    """A process pool of tokenizers; forkserver (fast and safe next to threads) where available."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # Takes effect when the fork server starts (once per process): workers then fork with this
        # module, torch and tokenizers imported, instead of importing them each.
        ctx.set_forkserver_preload([__name__])
    else:
        ctx = mp.get_context("spawn")
    return ctx.Pool(num_workers, initializer=_worker_init, initargs=(fmt,))


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _held_out_documents(corpus: CorpusConfig, n: int) -> list[str]:
    """The first ``n`` documents of the corpus stream (fewer if the corpus is shorter)."""
    if n == 0:
        return []
    stream = iter_corpus(corpus)
    try:
        return list(itertools.islice(stream, n))
    finally:
        stream.close()


def _corpus_name(corpus: CorpusConfig) -> str:
    paths = [p for source in corpus.sources for p in source.paths]
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


# --------------------------------------------------------------------------------------------------
# Counter-based randomness


def _seed(seed: int, tag: int, index: int) -> int:
    """A 63-bit seed for use ``tag`` of item ``index``, independent across (seed, tag, index)."""
    a, b = np.random.SeedSequence([seed, tag, index]).generate_state(2, dtype=np.uint32).tolist()
    return ((a << 32) | b) & ((1 << 63) - 1)


def _uniform(seed: int, tag: int, index: int) -> float:
    return _seed(seed, tag, index) / float(1 << 63)


# --------------------------------------------------------------------------------------------------
# Masking


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special)
    return ids


class _Masker:
    """BERT's 80/10/10 masking, one seeded generator per sequence."""

    def __init__(self, tokenizer: Any, config: DataConfig) -> None:
        if tokenizer.mask_token_id is None:
            raise ConfigError(
                f"objective 'mlm' needs a mask token, but {type(tokenizer).__name__} has none",
                hint="use a tokenizer with a mask token (e.g. [MASK] or <mask>), or objective clm",
            )
        self.mask_id = int(tokenizer.mask_token_id)
        self.probability = float(config.mlm_probability)
        self.seed = config.seed
        backend = tokenizer.backend_tokenizer
        size = max(backend.get_vocab_size(with_added_tokens=True), len(tokenizer))
        special = _special_ids(tokenizer)
        holes = [i for i in range(size) if i not in special and backend.id_to_token(i) is None]
        self.special = torch.zeros(size, dtype=torch.bool)
        self.special[sorted(i for i in special if i < size)] = True
        # Random replacements are drawn uniformly from real, non-special tokens.
        ok = ~self.special.clone()
        ok[holes] = False
        self.random_ids = torch.nonzero(ok).flatten()
        self.word_initial: torch.Tensor | None = None
        if config.whole_word_masking:
            from vocabshift.tokenization.surface import surface_forms

            forms = surface_forms(tokenizer)
            self.word_initial = torch.ones(size, dtype=torch.bool)  # unknown ids: a word of their own
            self.word_initial[: len(forms)] = torch.tensor([f.word_initial for f in forms], dtype=torch.bool)

    def mask(self, ids: torch.Tensor, indices: list[int], tag: int = _TAG_MASK) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, labels) for sequences ``ids`` [B, L] whose stream indices are ``indices``."""
        inputs = ids.clone()
        labels = torch.full_like(ids, IGNORE_INDEX)
        for row, index in enumerate(indices):
            generator = torch.Generator().manual_seed(_seed(self.seed, tag, index))
            inputs[row], labels[row] = self._mask_one(ids[row], generator)
        return inputs, labels

    def _mask_one(self, ids: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        special = self.special[ids]
        candidate = ~special
        if self.word_initial is None:
            chosen = (torch.rand(ids.shape, generator=g) < self.probability) & candidate
            units = torch.arange(len(ids))
        else:
            # A word starts at a word-initial token, at the block start, and at or after a special token.
            starts = self.word_initial[ids] | special
            starts[0] = True
            starts[1:] |= special[:-1]
            units = torch.cumsum(starts.long(), 0) - 1  # word index of each position
            picked = torch.rand(int(units[-1]) + 1, generator=g) < self.probability
            chosen = picked[units] & candidate
        if not chosen.any() and candidate.any():
            # Nothing chosen (short block, bad luck): choose one unit so the loss stays defined.
            options = torch.unique(units[candidate])
            unit = options[torch.randint(len(options), (1,), generator=g)]
            chosen = (units == unit) & candidate
        u = torch.rand(ids.shape, generator=g)
        replacement = self.random_ids[torch.randint(len(self.random_ids), ids.shape, generator=g)]
        inputs = torch.where(chosen & (u < 0.8), torch.full_like(ids, self.mask_id), ids)
        inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), replacement, inputs)
        labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
        return inputs, labels


# --------------------------------------------------------------------------------------------------
# One packed token stream (training corpus or replay corpus)


@dataclass
class _Position:
    """Where a stream stands: the first token not yet emitted is token ``offset`` of document
    ``document`` (counted over the corpus stream, held-out documents included) of epoch ``epoch``."""

    epoch: int = 0
    document: int = 0
    offset: int = 0


@dataclass
class _Segment:
    """A tokenized document in the packing buffer: ``ids`` starts at token ``offset`` of the document."""

    epoch: int
    document: int
    offset: int
    ids: np.ndarray
    used: int = 0  # tokens of ``ids`` already emitted


class _TokenStream:
    """Documents of one corpus, tokenized and cut into blocks, with an exact :class:`_Position`."""

    def __init__(self, *, name: str, corpus: CorpusConfig, encoder: _Encoder, seq_len: int,
                 position: _Position, keep: Callable[[str], bool], epochs: int | None,
                 limit: int | None, reseed_epochs: bool, batch_documents: int) -> None:
        self.name = name
        self.corpus = corpus
        self.encoder = encoder
        self.seq_len = seq_len
        self.position = position  # shared with the PackedStream: updated in place after every block
        self.keep = keep
        self.epochs = epochs
        self.limit = limit  # read at most this many documents per epoch (the evaluation split)
        self.reseed_epochs = reseed_epochs
        self.batch_documents = batch_documents
        self._tokens: Iterator[tuple[int, int, int, np.ndarray]] | None = None
        self._segments: deque[_Segment] = deque()  # documents with tokens not yet emitted
        self._buffered = 0

    def open(self, pool: Any, window: int) -> None:
        self.close()
        self._tokens = self._tokenized(pool, window)

    def close(self) -> None:
        if self._tokens is not None:
            self._tokens.close()  # type: ignore[attr-defined]
        self._tokens = None
        self._segments.clear()
        self._buffered = 0

    def _epoch_corpus(self, epoch: int) -> CorpusConfig:
        if epoch == 0 or not self.reseed_epochs:
            return self.corpus
        return dataclasses.replace(self.corpus, seed=self.corpus.seed + epoch)

    def documents(self, start: _Position, one_epoch: bool = False) -> Iterator[tuple[int, int, str]]:
        """(epoch, document index, text) of the kept documents from ``start`` on."""
        epoch, skip = start.epoch, start.document
        while self.epochs is None or epoch < self.epochs:
            stream = iter_corpus(self._epoch_corpus(epoch))
            kept = 0
            try:
                # Resuming: iter_corpus is deterministic, so the first `skip` documents are the ones
                # consumed before; read past them without tokenizing.
                for index in range(skip):
                    if next(stream, None) is None:
                        raise CorpusError(
                            f"cannot resume: epoch {epoch} of the {self.name} has {index} documents, but the "
                            f"saved position is document {skip}",
                            path=_corpus_name(self.corpus),
                            hint="resume with the same corpus files and settings",
                        )
                for index, text in enumerate(stream, start=skip):
                    if self.limit is not None and index >= self.limit:
                        break
                    if self.keep(text):
                        kept += 1
                        yield epoch, index, text
            finally:
                stream.close()
            if one_epoch:
                return
            if skip == 0 and kept == 0:  # guards against cycling forever over epochs without text
                raise CorpusError(f"the {self.name} has no document left for training",
                                  path=_corpus_name(self.corpus))
            epoch, skip = epoch + 1, 0

    def _tokenized(self, pool: Any, window: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """(epoch, document, offset, ids[offset:]) from the position on; offset > 0 only when resuming."""
        start = dataclasses.replace(self.position)
        docs = self.documents(start)
        batches = iter(lambda: list(itertools.islice(docs, self.batch_documents)), [])
        first = True
        pending: deque[tuple[list[tuple[int, int]], Any]] = deque()
        try:
            while True:
                # Keep up to `window` batches in flight in the pool; results come back in order.
                while pool is not None and len(pending) < window:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    pending.append(([(e, i) for e, i, _ in batch],
                                    pool.apply_async(_worker_encode, ([t for _, _, t in batch],))))
                if pool is not None:
                    if not pending:
                        return
                    keys, result = pending.popleft()
                    encoded = result.get()
                else:
                    batch = next(batches, None)
                    if batch is None:
                        return
                    keys, encoded = [(e, i) for e, i, _ in batch], self.encoder.encode([t for _, _, t in batch])
                for (epoch, index), ids in zip(keys, encoded, strict=True):
                    if first and start.offset:  # resuming inside a document: drop what was emitted
                        if (epoch, index) != (start.epoch, start.document) or start.offset >= len(ids):
                            raise CorpusError(
                                f"cannot resume: the saved position is token {start.offset} of document "
                                f"{start.document} (epoch {start.epoch}) of the {self.name}, which that "
                                "document no longer has",
                                path=_corpus_name(self.corpus),
                                hint="resume with the same corpus, tokenizer and settings",
                            )
                        first = False
                        yield epoch, index, start.offset, ids[start.offset:]
                        continue
                    first = False
                    yield epoch, index, 0, ids
        finally:
            docs.close()

    def next_block(self) -> np.ndarray | None:
        """The next ``seq_len`` tokens, or None when a finite stream is used up (its tail is dropped)."""
        assert self._tokens is not None, "stream not opened"
        while self._buffered < self.seq_len:
            item = next(self._tokens, None)
            if item is None:
                return None
            segment = _Segment(*item)
            if len(segment.ids):
                self._segments.append(segment)
                self._buffered += len(segment.ids)
        parts = []
        need = self.seq_len
        last: _Segment | None = None
        while need:
            segment = self._segments[0]
            take = min(need, len(segment.ids) - segment.used)
            parts.append(segment.ids[segment.used:segment.used + take])
            segment.used += take
            need -= take
            if segment.used == len(segment.ids):
                last = self._segments.popleft()
        self._buffered -= self.seq_len
        # The position is the first token not emitted yet: inside the oldest buffered document, or
        # the start of the document after the last one emitted.
        pos = self.position
        if self._segments:
            head = self._segments[0]
            pos.epoch, pos.document, pos.offset = head.epoch, head.document, head.offset + head.used
        else:
            assert last is not None
            pos.epoch, pos.document, pos.offset = last.epoch, last.document + 1, 0
        return np.concatenate(parts)

    def count_tokens(self, at_least: int) -> tuple[int, bool]:
        """Tokens of epoch 0, counted in-process until ``at_least`` is reached: (count, reached)."""
        total = 0
        stream = self.documents(_Position(), one_epoch=True)
        try:
            while total < at_least:
                batch = list(itertools.islice(stream, 16))
                if not batch:
                    return total, False
                total += sum(len(ids) for ids in self.encoder.encode([t for _, _, t in batch]))
        finally:
            stream.close()
        return total, True


# --------------------------------------------------------------------------------------------------
# The packed training stream


class PackedStream:
    """Infinite-or-finite stream of packed training sequences with a resumable position.

    ``tokenizer`` is a transformers fast tokenizer or a directory to load one from (offline);
    ``objective`` is ``'mlm'`` or ``'clm'`` (see :func:`resolve_objective`). ``split='train'`` streams
    the corpus without its held-out documents (plus replay), ``split='eval'`` only the held-out ones.
    ``epochs=None`` streams forever; otherwise the stream ends after that many passes over the corpus
    (the final partial sequence is dropped, as is a partial batch's missing rest: the last batch may
    be smaller). Raises :class:`CorpusError` at construction when the corpus holds less than one
    sequence of text. One :meth:`batches` iterator is live at a time: a new call closes the previous.
    """

    def __init__(self, tokenizer: Any, corpus: CorpusConfig, config: DataConfig, objective: str, *,
                 split: str = "train", epochs: int | None = None) -> None:
        if objective not in ("mlm", "clm"):
            raise ConfigError(f"PackedStream needs objective 'mlm' or 'clm', got {objective!r}",
                              hint="resolve 'auto' with resolve_objective(model, objective) first")
        if split not in ("train", "eval"):
            raise ConfigError(f"split must be 'train' or 'eval', got {split!r}")
        if epochs is not None:
            _check_int("epochs", epochs, 1)
        if split == "eval" and config.eval_documents == 0:
            raise ConfigError("split 'eval' needs held-out documents, but eval_documents is 0")
        self.tokenizer = _load_tokenizer(tokenizer)
        self.corpus = corpus
        self.config = config
        self.objective = objective
        self.split = split
        self.epochs = epochs
        self.seq_len = config.seq_len
        self._format = _doc_format(self.tokenizer, objective)
        self._encoder = _Encoder(self._format)
        self._masker = _Masker(self.tokenizer, config) if objective == "mlm" else None
        if config.whole_word_masking and objective == "clm":
            log.warning("whole_word_masking applies to mlm only; ignored for clm")

        held_out = _held_out_documents(corpus, config.eval_documents)
        self.n_held_out = len(held_out)
        self.sequences_seen = 0
        self.tokens_seen = 0
        self._drawn = 0  # blocks drawn from the streams (ahead of sequences_seen by the shuffle buffer)
        self._buffer: list[np.ndarray] = []
        self._positions: dict[str, _Position] = {"train": _Position()}
        self._streams: dict[str, _TokenStream] = {}
        self._active: Any = None
        common = {"encoder": self._encoder, "seq_len": self.seq_len,
                  "batch_documents": config.tokenize_batch_documents}
        if split == "train":
            digests = {_digest(t) for t in held_out}
            self._streams["train"] = _TokenStream(
                name="corpus", corpus=corpus, position=self._positions["train"],
                keep=(lambda text: _digest(text) not in digests) if digests else (lambda text: True),
                epochs=epochs, limit=None, reseed_epochs=True, **common)
            if config.replay is not None:
                self._positions["replay"] = _Position()
                self._streams["replay"] = _TokenStream(
                    name="replay corpus", corpus=config.replay, position=self._positions["replay"],
                    keep=lambda text: True, epochs=None, limit=None, reseed_epochs=True, **common)
        else:
            self._streams["train"] = _TokenStream(
                name="evaluation documents", corpus=corpus, position=self._positions["train"],
                keep=lambda text: True, epochs=epochs, limit=config.eval_documents, reseed_epochs=False,
                **common)
        self._check_enough_text()
        log.info("packing %s split of %s into %d-token %s sequences; %d documents held out for evaluation%s",
                 split, _corpus_name(corpus), self.seq_len, objective, self.n_held_out,
                 f"; replay weight {config.replay_weight}" if "replay" in self._streams else "")

    def _check_enough_text(self) -> None:
        """Fail now, with the numbers, when a stream cannot fill even one sequence."""
        for key, stream in self._streams.items():
            count, enough = stream.count_tokens(self.seq_len)
            if enough:
                continue
            need = f"one sequence needs {self.seq_len} (seq_len)"
            if key == "replay":
                raise CorpusError(f"replay corpus has {count} tokens; {need}",
                                  path=_corpus_name(stream.corpus),
                                  hint="give more replay text or a smaller --seq-len")
            if self.split == "eval":
                raise CorpusError(f"the {self.n_held_out} evaluation documents have {count} tokens; {need}",
                                  path=_corpus_name(self.corpus),
                                  hint="raise eval_documents or lower --seq-len")
            if self.n_held_out:
                all_held = " (all of them)" if self.n_held_out < self.config.eval_documents else ""
                raise CorpusError(
                    f"corpus has {count} tokens after holding out {self.n_held_out} documents{all_held} for "
                    f"evaluation; {need}",
                    path=_corpus_name(self.corpus),
                    hint="give more text, a smaller --seq-len or fewer eval documents (--eval-documents)",
                )
            raise CorpusError(f"corpus has {count} tokens; {need}", path=_corpus_name(self.corpus),
                              hint="give more text or a smaller --seq-len")

    # -- iteration -----------------------------------------------------------------------------

    def batches(self, batch_size: int, *, rank: int = 0, world_size: int = 1) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``input_ids`` [B, L] (long), ``attention_mask`` [B, L] (all ones) and ``labels`` [B, L].

        CLM: ``labels`` equal ``input_ids`` (the model shifts them). MLM: inputs masked 80/10/10 and
        labels -100 where nothing is predicted, with a ``torch.Generator`` seeded from (seed,
        sequence index), so masks do not depend on batch boundaries. Data parallel: every process
        builds the same stream and passes its ``rank``; each step draws ``world_size * batch_size``
        sequences and this process gets rows ``rank * batch_size ...``. The state is then the same on
        every process, so one rank's :meth:`state_dict` resumes them all.
        """
        _check_int("batch_size", batch_size, 1)
        _check_int("world_size", world_size, 1)
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, {world_size}), got {rank!r}")
        self.close()
        self._active = self._iterate(batch_size, rank, world_size)
        return self._active

    def close(self) -> None:
        """Stop the live :meth:`batches` iterator and its worker processes (the position is kept)."""
        if self._active is not None:
            self._active.close()
            self._active = None

    def _iterate(self, batch_size: int, rank: int, world_size: int) -> Iterator[dict[str, torch.Tensor]]:
        workers = self.config.num_workers
        pool = _start_pool(self._format, workers) if workers else None
        try:
            for stream in self._streams.values():
                stream.open(pool, 2 * workers)
            step = batch_size * world_size
            while True:
                blocks: list[np.ndarray] = []
                first = self.sequences_seen
                while len(blocks) < step:
                    block = self._next_sequence(first + len(blocks))
                    if block is None:
                        break
                    blocks.append(block)
                mine = blocks[rank * batch_size:(rank + 1) * batch_size]
                self.sequences_seen += len(blocks)
                self.tokens_seen += len(blocks) * self.seq_len
                if not mine:  # a finite stream is used up (a last, short step can leave a rank empty)
                    return
                yield self._collate(mine, first + rank * batch_size)
                if len(blocks) < step:
                    return
        finally:
            for stream in self._streams.values():
                stream.close()
            if pool is not None:
                pool.terminate()
                pool.join()

    def _next_sequence(self, index: int) -> np.ndarray | None:
        """Output block number ``index`` (through the shuffle buffer, when there is one)."""
        size = self.config.shuffle_buffer
        if size == 0:
            return self._draw()
        while len(self._buffer) < size:
            block = self._draw()
            if block is None:
                break
            self._buffer.append(block)
        if not self._buffer:
            return None
        slot = _seed(self.config.seed, _TAG_SHUFFLE, index) % len(self._buffer)
        block = self._buffer[slot]
        self._buffer[slot] = self._buffer[-1]
        self._buffer.pop()
        return block

    def _draw(self) -> np.ndarray | None:
        """The next block from the training or (by a seeded coin) the replay stream; None at the end."""
        key = "train"
        if "replay" in self._streams and _uniform(self.config.seed, _TAG_REPLAY, self._drawn) < self.config.replay_weight:
            key = "replay"
        block = self._streams[key].next_block()
        if block is not None:
            self._drawn += 1
        return block

    def _collate(self, blocks: list[np.ndarray], first_index: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.stack(blocks)).long()
        if self._masker is None:
            inputs, labels = ids, ids.clone()
        else:
            inputs, labels = self._masker.mask(ids, list(range(first_index, first_index + len(blocks))))
        return {"input_ids": inputs, "attention_mask": torch.ones_like(ids), "labels": labels}

    # -- state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The stream's position, JSON-serializable: positions per stream, counters, shuffle buffer.

        There is no random-generator state to save: every random draw is seeded from (seed, counter).
        """
        return {
            "format": STATE_FORMAT,
            "split": self.split,
            "objective": self.objective,
            "seq_len": self.seq_len,
            "seed": self.config.seed,
            "replay_weight": self.config.replay_weight if "replay" in self._streams else None,
            "sequences_seen": self.sequences_seen,
            "tokens_seen": self.tokens_seen,
            "blocks_drawn": self._drawn,
            "positions": {key: dataclasses.asdict(pos) for key, pos in self._positions.items()},
            "shuffle_buffer": [block.tolist() for block in self._buffer],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where the stream that saved ``state`` stood (same data settings required)."""
        self.close()
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ConfigError(f"not a data-stream state: format {found!r}, expected {STATE_FORMAT!r}")
        replay_weight = self.config.replay_weight if "replay" in self._streams else None
        for name, mine in (("split", self.split), ("objective", self.objective), ("seq_len", self.seq_len),
                           ("seed", self.config.seed), ("replay_weight", replay_weight)):
            if state.get(name) != mine:
                raise ConfigError(
                    f"the saved data stream has {name}={state.get(name)!r} but this one has {name}={mine!r}",
                    hint="resume with the data settings the run started with",
                )
        positions = state["positions"]
        if set(positions) != set(self._positions):
            raise ConfigError(f"the saved data stream has streams {sorted(positions)}, this one {sorted(self._positions)}")
        for key, pos in self._positions.items():
            saved = positions[key]
            pos.epoch, pos.document, pos.offset = int(saved["epoch"]), int(saved["document"]), int(saved["offset"])
        buffer = [np.asarray(block, dtype=np.int32) for block in state["shuffle_buffer"]]
        if any(len(block) != self.seq_len for block in buffer):
            raise ConfigError("the saved shuffle buffer holds blocks of another length than seq_len")
        self._buffer = buffer
        self.sequences_seen = int(state["sequences_seen"])
        self.tokens_seen = int(state["tokens_seen"])
        self._drawn = int(state["blocks_drawn"])


# --------------------------------------------------------------------------------------------------
# Evaluation


def bits_per_byte(total_nll_nats: float, n_bytes: int) -> float:
    """Bits per UTF-8 byte of text: ``total_nll_nats / ln(2) / n_bytes``."""
    if n_bytes <= 0:
        raise ConfigError(f"bits per byte needs a positive number of bytes, got {n_bytes}")
    return total_nll_nats / math.log(2) / n_bytes


@dataclass
class EvalSet:
    """The held-out documents packed into at most ``eval_max_sequences`` sequences.

    ``n_bytes`` is the UTF-8 size of the text those sequences cover (whole documents, and the covered
    prefix of the one cut at the end), so ``bits_per_byte = total_nll_nats / ln(2) / n_bytes`` where
    ``total_nll_nats`` is the summed loss over the predicted tokens. ``n_predicted_tokens``: CLM,
    every position but the first of each sequence (the model shifts the labels); MLM, the masked
    positions, so the MLM figure is the bits of the masked tokens only (compare it across MLM runs).
    """

    sequences: torch.Tensor  # [N, L] long, unmasked
    n_bytes: int
    n_predicted_tokens: int
    objective: str
    n_documents: int  # held-out documents (wholly or partly) inside the sequences
    input_ids: torch.Tensor = field(repr=False)  # masked for MLM, == sequences for CLM
    labels: torch.Tensor = field(repr=False)

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """The evaluation batches, always the same (MLM masks are seeded)."""
        _check_int("batch_size", batch_size, 1)
        for start in range(0, len(self.sequences), batch_size):
            inputs = self.input_ids[start:start + batch_size]
            yield {"input_ids": inputs, "attention_mask": torch.ones_like(inputs),
                   "labels": self.labels[start:start + batch_size]}

    def bits_per_byte(self, total_nll_nats: float) -> float:
        """:func:`bits_per_byte` of this set's text."""
        return bits_per_byte(total_nll_nats, self.n_bytes)


def build_eval_set(tokenizer: Any, corpus: CorpusConfig, config: DataConfig, objective: str) -> EvalSet | None:
    """Pack the held-out documents (the first ``eval_documents`` of the corpus stream); None if 0.

    Raises :class:`CorpusError` when they hold less than one sequence of text.
    """
    if config.eval_documents == 0:
        return None
    if objective not in ("mlm", "clm"):
        raise ConfigError(f"build_eval_set needs objective 'mlm' or 'clm', got {objective!r}",
                          hint="resolve 'auto' with resolve_objective(model, objective) first")
    tokenizer = _load_tokenizer(tokenizer)
    fmt = _doc_format(tokenizer, objective)
    backend = _plain_backend(fmt.tokenizer_json)
    docs = _held_out_documents(corpus, config.eval_documents)
    seq_len = config.seq_len
    budget = config.eval_max_sequences * seq_len
    prefix, suffix = list(fmt.prefix), list(fmt.suffix)
    stream: list[int] = []
    spans = []  # per document: (first token in the stream, its content encoding)
    for encoding in backend.encode_batch(docs, add_special_tokens=False):
        if len(stream) >= budget:
            break
        spans.append((len(stream), encoding))
        stream.extend(prefix + encoding.ids + suffix)
    n_sequences = min(len(stream), budget) // seq_len
    if n_sequences == 0:
        raise CorpusError(
            f"the {len(docs)} evaluation documents have {len(stream)} tokens; one evaluation sequence needs "
            f"{seq_len} (seq_len)",
            path=_corpus_name(corpus),
            hint="raise --eval-documents, lower --seq-len, or set eval_documents to 0 to skip evaluation",
        )
    covered = n_sequences * seq_len
    n_bytes = 0
    n_documents = 0
    for (start, encoding), text in zip(spans, docs, strict=False):
        if start >= covered:
            break
        n_documents += 1
        k = covered - start - len(prefix)  # content tokens of this document inside the sequences
        if k >= len(encoding.ids):
            n_bytes += len(text.encode("utf-8"))
        elif k > 0:
            end = max(e for _, e in encoding.offsets[:k])  # character offsets
            n_bytes += len(text[:end].encode("utf-8"))
    sequences = torch.tensor(stream[:covered], dtype=torch.long).view(n_sequences, seq_len)
    if objective == "mlm":
        inputs, labels = _Masker(tokenizer, config).mask(sequences, list(range(n_sequences)), _TAG_EVAL_MASK)
        n_predicted = int((labels != IGNORE_INDEX).sum())
    else:
        inputs, labels = sequences, sequences.clone()
        n_predicted = n_sequences * (seq_len - 1)
    log.info("evaluation set: %d sequences of %d tokens from %d held-out documents, %d bytes",
             n_sequences, seq_len, n_documents, n_bytes)
    return EvalSet(sequences=sequences, n_bytes=n_bytes, n_predicted_tokens=n_predicted, objective=objective,
                   n_documents=n_documents, input_ids=inputs, labels=labels)

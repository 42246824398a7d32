"""Train a target-language tokenizer in the source tokenizer's own family.

The trained tokenizer mirrors the source: same normalizer, pre-tokenizer, decoder and post-processor,
the same special (added) tokens with the same strings and flags, placed first in the source's order,
the same byte fallback, and the source's ``tokenizer_config.json`` (class, ``model_max_length``,
padding side, chat template). Only the vocabulary (and merges or scores) is new. The Rust trainers
do the work: ``tokenizers`` (BPE, WordPiece, Unigram) and, when the source ships a native
sentencepiece ``.model``, ``sentencepiece`` itself, with the source model's own trainer and
normalizer settings, so that the output ships a ``.model`` that agrees with its ``tokenizer.json``.

``vocab_size`` is the size of the finished tokenizer, ``len(AutoTokenizer.from_pretrained(out))``,
special and byte tokens included.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocabshift.config import TokenizerTrainConfig
from vocabshift.corpus import CorpusConfig, iter_corpus, plain_text_files, split_document
from vocabshift.errors import ConfigError, TokenizerError
from vocabshift.outputs import atomic_output_dir, check_output_path, writes_output
from vocabshift.tokenization.source import (
    SourceTokenizer,
    TokenizerFamily,
    load_source_tokenizer,
    named_special_tokens,
    token_to_id,
)

log = logging.getLogger(__name__)

BYTE_FALLBACK_PIECES = [f"<0x{b:02X}>" for b in range(256)]
# Keys of a saved tokenizer_config.json that describe the old files or the old vocabulary's ids.
_CONFIG_KEYS_TO_DROP = ("added_tokens_decoder", "name_or_path", "is_local", "local_files_only",
                        "tokenizer_file", "vocab_file", "merges_file", "auto_map")
_SOURCE_VOCAB_FILES = {"tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt"}
# The written tokenizer is reloaded with AutoTokenizer as a check when this is "1" (always) or "0" (never);
# unset: when that is cheap, i.e. transformers is imported already and the tokenizer is small.
FULL_RELOAD_CHECK_ENV = "VOCABSHIFT_FULL_RELOAD_CHECK"
FULL_RELOAD_CHECK_MAX_TOKENS = 65_536
_SPM_BUILTIN_RULES = {"nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity"}
# Longest text handed to a trainer, in UTF-8 bytes; longer documents are cut at whitespace. sentencepiece
# skips longer sentences (this is its max_sentence_length), and train_from_iterator buffers 256 batches
# ahead, so pieces and _BATCH_CHARS (characters per batch) bound that buffer.
TRAIN_PIECE_BYTES = 1 << 16
_BATCH_CHARS = 1 << 18


@dataclass
class TokenizerTrainResult:
    """What :func:`train_tokenizer` wrote and measured."""

    out: Path
    family: TokenizerFamily
    vocab_size: int
    trainer: str  # "tokenizers" or "sentencepiece"
    documents: int
    bytes: int
    seconds: float


class _CountingTexts:
    """The corpus as a trainer takes it, counting what went through.

    When the corpus is just plain UTF-8 text files (:func:`vocabshift.corpus.plain_text_files`), the
    trainers read the files themselves, in Rust, on all cores; otherwise documents are streamed
    through :func:`vocabshift.corpus.iter_corpus`.
    """

    def __init__(self, corpus: CorpusConfig, batch_size: int = 1000, probe_size: int = 20) -> None:
        self.files = plain_text_files(corpus, head=probe_size)
        self._corpus = corpus
        self._batch_size = batch_size
        self.probe: list[str] = [] if self.files is None else [t[:2000] for t in self.files.head]
        self._probe_size = probe_size
        self.documents = 0 if self.files is None else self.files.documents
        self.bytes = 0 if self.files is None else self.files.bytes

    @property
    def paths(self) -> list[str] | None:
        return None if self.files is None else [str(p) for p in self.files.paths]

    def docs(self) -> Iterator[str]:
        for doc in iter_corpus(self._corpus):
            self.documents += 1
            self.bytes += len(doc.encode("utf-8"))
            if len(self.probe) < self._probe_size:
                self.probe.append(doc[:2000])
            yield doc

    def batches(self) -> Iterator[list[str]]:
        # Batches cut the Python/Rust crossings of ``train_from_iterator`` by three orders of magnitude;
        # long documents come in pieces, so that a batch is bounded (the trainers pre-tokenize at whitespace).
        batch: list[str] = []
        chars = 0
        for doc in self.docs():
            for piece in split_document(doc, TRAIN_PIECE_BYTES):
                batch.append(piece)
                chars += len(piece)
                if len(batch) >= self._batch_size or chars >= _BATCH_CHARS:
                    yield batch
                    batch = []
                    chars = 0
        if batch:
            yield batch

    def lines(self) -> Iterator[str]:
        # sentencepiece trains on sentences; long multi-line documents are split at newlines, and
        # lines it would skip as too long are cut into pieces it takes.
        for doc in self.docs():
            for line in doc.split("\n"):
                if line.strip():
                    yield from split_document(line, TRAIN_PIECE_BYTES)


# --------------------------------------------------------------------------------------------------
# Mirroring the source pipeline onto a trained vocabulary


def _token_to_id(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    return token_to_id(tokenizer_json)


def _remap_post_processor(proc: dict[str, Any] | None, ids: dict[str, int]) -> dict[str, Any] | None:
    """Rewrite the special-token ids a post-processor hard-codes to the new vocabulary's ids."""
    if proc is None:
        return None
    proc = copy.deepcopy(proc)

    def lookup(token: str) -> int:
        if token not in ids:
            raise TokenizerError(f"post-processor token {token!r} is missing from the trained vocabulary")
        return ids[token]

    kind = proc.get("type")
    if kind == "TemplateProcessing":
        for spec in proc.get("special_tokens", {}).values():
            spec["ids"] = [lookup(t) for t in spec["tokens"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            proc[key] = [proc[key][0], lookup(proc[key][0])]
    elif kind == "Sequence":
        proc["processors"] = [_remap_post_processor(p, ids) for p in proc["processors"]]
    return proc


def _mirror_source(trained: dict[str, Any], source: SourceTokenizer) -> dict[str, Any]:
    """Put the source's pipeline and added-token flags around a freshly trained model."""
    out = copy.deepcopy(trained)
    src = source.backend_json
    for key in ("normalizer", "pre_tokenizer", "decoder"):
        out[key] = copy.deepcopy(src.get(key))
    ids = _token_to_id(out)
    added = []
    for tok in source.special_tokens:
        if tok["content"] not in ids:
            raise TokenizerError(f"special token {tok['content']!r} of the source is missing after training")
        added.append({**tok, "id": ids[tok["content"]]})
    out["added_tokens"] = sorted(added, key=lambda t: t["id"])
    out["post_processor"] = _remap_post_processor(src.get("post_processor"), ids)
    out["truncation"] = None
    out["padding"] = None
    return out


# --------------------------------------------------------------------------------------------------
# The `tokenizers` path: byte-level BPE, WordPiece, and sentencepiece-style sources without a .model


def _training_pipeline(source: SourceTokenizer) -> dict[str, Any]:
    """The source's tokenizer.json with an empty model of the same type, ready for a trainer."""
    src = source.backend_json
    model = src["model"]
    if model["type"] == "BPE":
        empty: dict[str, Any] = {k: v for k, v in model.items() if k not in ("vocab", "merges")}
        empty.update(vocab={}, merges=[], dropout=None)
    elif model["type"] == "WordPiece":
        empty = {k: v for k, v in model.items() if k != "vocab"}
        empty["vocab"] = {}
    else:  # Unigram
        empty = {"type": "Unigram", "unk_id": None, "vocab": [], "byte_fallback": False}
    pipeline = {
        "version": src.get("version", "1.0"),
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": copy.deepcopy(src.get("normalizer")),
        "pre_tokenizer": copy.deepcopy(src.get("pre_tokenizer")),
        "post_processor": None,  # refers to ids that do not exist yet
        "decoder": copy.deepcopy(src.get("decoder")),
        "model": empty,
    }
    if source.family.is_sentencepiece:
        # Train on words: sentencepiece never merges across a "▁" word boundary, and a Metaspace with
        # split=False (or the old Replace-normalizer layout with no pre-tokenizer) would make every
        # sentence one "word". Pieces then never hold an inner "▁", so the source's unsplit
        # pre-tokenizer segments text exactly like this split one.
        pipeline["pre_tokenizer"] = _split_metaspace(src.get("pre_tokenizer"))
    return pipeline


def _split_metaspace(pre: dict[str, Any] | None) -> dict[str, Any]:
    if pre is None:
        return {"type": "Split", "pattern": {"String": "▁"}, "behavior": "MergedWithNext", "invert": False}
    pre = copy.deepcopy(pre)
    if pre.get("type") == "Metaspace":
        pre["split"] = True
    elif pre.get("type") == "Sequence":
        pre["pretokenizers"] = [_split_metaspace(p) if p.get("type") == "Metaspace" else p
                                for p in pre["pretokenizers"]]
    return pre


def _source_unk(source: SourceTokenizer) -> str | None:
    model = source.backend_json["model"]
    if model["type"] == "Unigram":
        unk_id = model.get("unk_id")
        return None if unk_id is None else model["vocab"][unk_id][0]
    return model.get("unk_token")


def _byte_fallback(source: SourceTokenizer) -> bool:
    return bool(source.backend_json["model"].get("byte_fallback"))


def minimum_vocab_size(source: SourceTokenizer) -> int:
    """Special tokens plus the byte alphabet the family always needs, plus room for one learned token."""
    base = len(source.special_tokens)
    if source.family is TokenizerFamily.BYTE_LEVEL_BPE or _byte_fallback(source):
        base += 256
    return base + 1


def _train_with_tokenizers(source: SourceTokenizer, texts: _CountingTexts, cfg: TokenizerTrainConfig) -> dict:
    from tokenizers import Tokenizer, pre_tokenizers, trainers

    specials = [t["content"] for t in source.special_tokens]
    unk = _source_unk(source)
    if unk is not None and unk not in specials:
        specials.append(unk)
    n_bytes = 256 if (source.family.is_sentencepiece and _byte_fallback(source)) else 0
    target = cfg.vocab_size - n_bytes  # byte-fallback pieces are added after training
    model = source.backend_json["model"]
    if source.family is TokenizerFamily.BYTE_LEVEL_BPE:
        affixes = {k: model[k] for k in ("continuing_subword_prefix", "end_of_word_suffix") if model.get(k)}
        trainer = trainers.BpeTrainer(
            vocab_size=target, min_frequency=cfg.min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=cfg.show_progress,
            max_token_length=cfg.max_piece_length if cfg.max_piece_length > 0 else None, **affixes,
        )
    elif source.family is TokenizerFamily.SENTENCEPIECE_BPE:
        trainer = trainers.BpeTrainer(
            vocab_size=target, min_frequency=cfg.min_frequency, special_tokens=specials,
            show_progress=cfg.show_progress,
            max_token_length=cfg.max_piece_length if cfg.max_piece_length > 0 else None,
        )
    elif source.family is TokenizerFamily.WORDPIECE:
        trainer = trainers.WordPieceTrainer(
            vocab_size=target, min_frequency=cfg.min_frequency, special_tokens=specials,
            show_progress=cfg.show_progress,
            continuing_subword_prefix=model.get("continuing_subword_prefix") or "##",
        )
    else:
        trainer = trainers.UnigramTrainer(
            vocab_size=target, special_tokens=specials, unk_token=unk, show_progress=cfg.show_progress,
            max_piece_length=cfg.max_piece_length if cfg.max_piece_length > 0 else 16,
        )
    tok = Tokenizer.from_str(json.dumps(_training_pipeline(source)))
    if texts.paths is not None:
        tok.train(texts.paths, trainer=trainer)
    else:
        tok.train_from_iterator(texts.batches(), trainer=trainer)
    trained = json.loads(tok.to_str())
    trained_model = trained["model"]
    # Restore the source model's switches that the trainers reset.
    for key in ("fuse_unk", "byte_fallback", "unk_token", "ignore_merges", "max_input_chars_per_word"):
        if key in model and key in trained_model:
            trained_model[key] = model[key]
    if n_bytes:
        trained["model"] = _insert_byte_pieces(trained_model, n_special=len(specials))
    return trained


def _insert_byte_pieces(model: dict[str, Any], n_special: int) -> dict[str, Any]:
    """Place the 256 ``<0xNN>`` byte-fallback pieces right after the special tokens (Llama-2 layout)."""
    model = copy.deepcopy(model)
    if model["type"] == "BPE":
        order = sorted(model["vocab"], key=model["vocab"].__getitem__)
        rest = [t for t in order[n_special:] if t not in BYTE_FALLBACK_PIECES]
        model["vocab"] = {t: i for i, t in enumerate(order[:n_special] + BYTE_FALLBACK_PIECES + rest)}
    else:  # Unigram: byte pieces get the lowest score, as sentencepiece gives them 0 and never prefers them
        floor = min(score for _, score in model["vocab"][n_special:]) - 1.0
        pieces = model["vocab"]
        model["vocab"] = pieces[:n_special] + [[p, floor] for p in BYTE_FALLBACK_PIECES] + pieces[n_special:]
        if model.get("unk_id") is not None and model["unk_id"] >= n_special:
            model["unk_id"] += 256
    model["byte_fallback"] = True
    return model


# --------------------------------------------------------------------------------------------------
# The `sentencepiece` path: sources that ship a native .model


def sentencepiece_trainer_args(proto: Any, vocab_size: int, *, character_coverage: float, max_piece_length: int,
                               threads: int | None = None, show_progress: bool = False) -> dict[str, Any]:
    """``SentencePieceTrainer.train`` arguments that mirror a source ``ModelProto``'s trainer and normalizer
    specs, for a finished size of ``vocab_size`` sentencepiece pieces (text input and writer not included).

    A custom normalization rule (only a precompiled charsmap) trains as ``identity``; the caller
    pre-normalizes the text and restores the source's normalizer spec.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    ts, ns = proto.trainer_spec, proto.normalizer_spec
    meta = {ts.unk_piece, ts.bos_piece, ts.eos_piece, ts.pad_piece}
    control = [p.piece for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.CONTROL and p.piece not in meta]
    user = [p.piece for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.USER_DEFINED]
    kwargs: dict[str, Any] = dict(
        model_type={1: "unigram", 2: "bpe"}.get(ts.model_type, "unigram"),
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        byte_fallback=ts.byte_fallback,
        split_digits=ts.split_digits,
        split_by_unicode_script=ts.split_by_unicode_script,
        split_by_number=ts.split_by_number,
        split_by_whitespace=ts.split_by_whitespace,
        treat_whitespace_as_suffix=ts.treat_whitespace_as_suffix,
        allow_whitespace_only_pieces=ts.allow_whitespace_only_pieces,
        max_sentencepiece_length=max_piece_length if max_piece_length > 0 else ts.max_sentencepiece_length,
        unk_id=ts.unk_id, bos_id=ts.bos_id, eos_id=ts.eos_id, pad_id=ts.pad_id,
        unk_piece=ts.unk_piece, bos_piece=ts.bos_piece, eos_piece=ts.eos_piece, pad_piece=ts.pad_piece,
        unk_surface=ts.unk_surface,
        normalization_rule_name=ns.name if ns.name in _SPM_BUILTIN_RULES else "identity",
        add_dummy_prefix=ns.add_dummy_prefix,
        remove_extra_whitespaces=ns.remove_extra_whitespaces,
        max_sentence_length=TRAIN_PIECE_BYTES,
        num_threads=threads or os.cpu_count() or 1,
        minloglevel=0 if show_progress else 2,
    )
    if control:
        kwargs["control_symbols"] = control
    if user:
        kwargs["user_defined_symbols"] = user
    return kwargs


def _train_with_sentencepiece(
    source: SourceTokenizer, texts: _CountingTexts, cfg: TokenizerTrainConfig
) -> tuple[dict[str, Any], bytes]:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    assert source.sentencepiece_model is not None
    proto = pb.ModelProto()
    proto.ParseFromString(source.sentencepiece_model.read_bytes())
    ns = proto.normalizer_spec
    # Tokens the transformers class adds around the .model (XLM-R inserts <pad> and appends <mask>).
    extra = source.vocab_size - len(proto.pieces)
    builtin_rule = ns.name in _SPM_BUILTIN_RULES
    if builtin_rule and texts.files is not None and texts.files.longest_line <= TRAIN_PIECE_BYTES:
        text_input: dict[str, Any] = {"input": texts.paths}
    else:
        lines: Iterable[str] = texts.lines()
        if not builtin_rule:
            # A custom rule lives only as a precompiled charsmap: normalize with the source's own
            # normalizer, train on identity, and put the source's normalizer spec back afterwards.
            normalizer = source.backend.normalizer
            lines = (normalizer.normalize_str(line) if normalizer else line for line in lines)
        text_input = {"sentence_iterator": iter(lines)}
    writer = io.BytesIO()
    kwargs = sentencepiece_trainer_args(
        proto, cfg.vocab_size - extra, character_coverage=cfg.character_coverage,
        max_piece_length=cfg.max_piece_length, threads=cfg.threads, show_progress=cfg.show_progress,
    )
    kwargs.update(text_input, model_writer=writer)
    try:
        spm.SentencePieceTrainer.train(**kwargs)
    except RuntimeError as err:
        msg = str(err)
        if "Vocabulary size too high" in msg or "vocab_size" in msg:
            raise TokenizerError(f"vocab size {cfg.vocab_size} is larger than the corpus supports ({msg.strip()})",
                                 hint="lower --vocab-size or give more text") from err
        raise TokenizerError(f"sentencepiece training failed: {msg.strip()}") from err
    new = pb.ModelProto()
    new.ParseFromString(writer.getvalue())
    if not builtin_rule:
        new.normalizer_spec.CopyFrom(ns)
    sp_bytes = new.SerializeToString()
    return _convert_sentencepiece(source, sp_bytes), sp_bytes


def _convert_sentencepiece(source: SourceTokenizer, sp_bytes: bytes) -> dict[str, Any]:
    """Build tokenizer.json from a .model exactly as the source's transformers class reads it.

    A Unigram source whose tokenizer.json lays out its own .model in a way we can read off (below) is
    converted here, without transformers (importing it is ~1.8 s, most of what training adds to the raw
    trainer's time); anything else goes through ``AutoTokenizer``. Only the model part matters: the
    pipeline, added tokens and post-processor are the source's (:func:`_mirror_source`).
    """
    model = _unigram_model_from_layout(source, sp_bytes)
    if model is not None:
        return {"version": source.backend_json.get("version", "1.0"), "model": model}
    return _convert_with_transformers(source, sp_bytes)


def _unigram_model_from_layout(source: SourceTokenizer, sp_bytes: bytes) -> dict[str, Any] | None:
    """The trained .model as the source's Unigram model lays out its own .model; None when it cannot tell.

    A converted sentencepiece vocabulary is ``head + pieces[s:] + tail``: the transformers class drops the
    first ``s`` pieces of the .model (XLM-R's ``<unk> <s> </s>``) and puts fixed tokens before them
    (XLM-R's fairseq ``<s> <pad> </s> <unk>``) and after (``<mask>``, T5's ``<extra_id_*>``). The layout is
    read off the source (its tokenizer.json against its .model: every piece string and score must line
    up) and applied to the trained .model, whose first ``s`` pieces must be the source's. Conversion
    settings the trainer could change (byte fallback, the normalizer) must be the source's too.
    """
    from sentencepiece import sentencepiece_model_pb2 as pb

    src_model = source.backend_json.get("model") or {}
    if src_model.get("type") != "Unigram" or source.sentencepiece_model is None:
        return None
    old, new = pb.ModelProto(), pb.ModelProto()
    old.ParseFromString(source.sentencepiece_model.read_bytes())
    new.ParseFromString(sp_bytes)
    if (old.trainer_spec.model_type != new.trainer_spec.model_type
            or old.trainer_spec.byte_fallback != new.trainer_spec.byte_fallback
            or bool(src_model.get("byte_fallback", False)) != bool(new.trainer_spec.byte_fallback)
            or any(getattr(old.normalizer_spec, f.name) != getattr(new.normalizer_spec, f.name)
                   for f in old.normalizer_spec.DESCRIPTOR.fields)):  # values, not presence: the trainer sets some
        return None
    vocab = src_model.get("vocab") or []
    normal = pb.ModelProto.SentencePiece.NORMAL
    first = next((i for i, p in enumerate(old.pieces) if p.type == normal), None)
    if first is None:
        return None
    h = next((k for k in range(min(len(vocab), 16)) if vocab[k][0] == old.pieces[first].piece), None)
    if h is None:
        return None
    s = first
    while s > 0 and h > 0 and vocab[h - 1][0] == old.pieces[s - 1].piece and vocab[h - 1][1] == old.pieces[s - 1].score:
        s, h = s - 1, h - 1  # leading control pieces the vocabulary keeps where the .model has them
    n_old = len(old.pieces) - s
    if len(vocab) < h + n_old:
        return None
    for j in range(n_old):
        piece = old.pieces[s + j]
        if vocab[h + j][0] != piece.piece or vocab[h + j][1] != piece.score:
            return None
    if [p.piece for p in new.pieces[:s]] != [p.piece for p in old.pieces[:s]]:
        return None
    tail = vocab[h + n_old:]
    out_vocab = [list(v) for v in vocab[:h]] + [[p.piece, p.score] for p in new.pieces[s:]] + [list(v) for v in tail]
    unk_id = src_model.get("unk_id")
    if unk_id is not None:
        unk = vocab[unk_id][0]
        unk_id = next((i for i, v in enumerate(out_vocab) if v[0] == unk), None)
        if unk_id is None:
            return None
    return {"type": "Unigram", "unk_id": unk_id, "vocab": out_vocab, "byte_fallback": bool(src_model.get("byte_fallback", False))}


def _convert_with_transformers(source: SourceTokenizer, sp_bytes: bytes) -> dict[str, Any]:
    """tokenizer.json of the trained .model as ``AutoTokenizer`` converts it with the source's class."""
    from transformers import AutoTokenizer

    assert source.sentencepiece_model is not None
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / source.sentencepiece_model.name).write_bytes(sp_bytes)
        config = _tokenizer_config(source)
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(config))
        for name in ("special_tokens_map.json",):
            if name in source.files:
                (Path(tmp) / name).write_bytes(source.files[name])
        try:
            hf = AutoTokenizer.from_pretrained(tmp, trust_remote_code=False, local_files_only=True)
        except Exception as err:
            raise TokenizerError(
                f"transformers cannot read the trained sentencepiece model with class "
                f"{config.get('tokenizer_class')} ({str(err).splitlines()[0][:200] if str(err) else type(err).__name__})"
            ) from err
        return json.loads(hf.backend_tokenizer.to_str())


# --------------------------------------------------------------------------------------------------
# Writing and checking the output


def _tokenizer_config(source: SourceTokenizer) -> dict[str, Any]:
    return {k: v for k, v in source.tokenizer_config.items() if k not in _CONFIG_KEYS_TO_DROP}


def _write_output(
    out_dir: Path, source: SourceTokenizer, tokenizer_json: dict[str, Any], sp_bytes: bytes | None,
    backend: Any = None,
) -> Any:
    """Write the tokenizer files into ``out_dir``; return the ``tokenizers.Tokenizer`` written.

    ``backend`` is the ``tokenizers.Tokenizer`` of ``tokenizer_json`` when the caller has built it
    already (it is built here otherwise).
    """
    from tokenizers import Tokenizer

    if backend is None:
        backend = Tokenizer.from_str(json.dumps(tokenizer_json))
    backend.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(source), indent=2, ensure_ascii=False))
    for name, data in source.files.items():
        # chat_template.jinja, special_tokens_map.json, ...; the source's vocabulary files are not ours.
        if name not in _SOURCE_VOCAB_FILES and not name.endswith(".model"):
            (out_dir / name).write_bytes(data)
    if sp_bytes is not None and source.sentencepiece_model is not None:
        (out_dir / source.sentencepiece_model.name).write_bytes(sp_bytes)
    # The classic vocabulary files, for tools that read them instead of tokenizer.json.
    if source.family is TokenizerFamily.WORDPIECE:
        vocab = sorted(backend.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])
        (out_dir / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
    elif source.family is TokenizerFamily.BYTE_LEVEL_BPE:
        backend.model.save(str(out_dir))  # vocab.json + merges.txt
    return backend


def _full_reload_check(size: int) -> bool:
    setting = os.environ.get(FULL_RELOAD_CHECK_ENV, "").strip()
    if setting in ("0", "1"):
        return setting == "1"
    return "transformers" in sys.modules and size <= FULL_RELOAD_CHECK_MAX_TOKENS


def _verify_reload(out_dir: Path, tokenizer_json: dict[str, Any], probe: list[str], *, backend: Any = None,
                   full: bool | None = None) -> int:
    """Check that ``out_dir`` holds the tokenizer we built and loads as it; return its number of tokens.

    Always, without ``transformers``: ``tokenizer.json`` on disk is exactly the serialization of
    ``backend`` (the ``tokenizers.Tokenizer`` built from ``tokenizer_json``, built here when not
    given), whose vocabulary, ids and added tokens are exactly those of ``tokenizer_json``;
    ``tokenizer_config.json`` is a JSON object and every special token it or
    ``special_tokens_map.json`` names is in the vocabulary (``AutoTokenizer`` would append a
    missing one as a new token); and with ``probe`` texts, ``tokenizer.json`` read back from disk
    encodes them as ``backend`` does.

    With ``full`` (default: :data:`FULL_RELOAD_CHECK_ENV` when set, else only when cheap, i.e.
    ``transformers`` is imported already and the tokenizer has at most
    :data:`FULL_RELOAD_CHECK_MAX_TOKENS` tokens), the directory is also reloaded with
    ``AutoTokenizer``, which must have as many tokens and encode the probe texts the same.
    """
    from tokenizers import Tokenizer

    if backend is None:
        backend = Tokenizer.from_str(json.dumps(tokenizer_json))
    expected = backend.get_vocab_size(with_added_tokens=True)
    written = (out_dir / "tokenizer.json").read_text(encoding="utf-8")
    if written != backend.to_str(pretty=True):
        raise TokenizerError("tokenizer.json on disk differs from the tokenizer built", path=out_dir)
    ids = _token_to_id(tokenizer_json)
    if backend.get_vocab(with_added_tokens=True) != ids or expected != len(ids):
        raise TokenizerError("the written tokenizer's vocabulary or ids differ from the ones built", path=out_dir)
    added = {i: (t.content, t.special) for i, t in backend.get_added_tokens_decoder().items()}
    if added != {t["id"]: (t["content"], t.get("special", False)) for t in tokenizer_json.get("added_tokens", [])}:
        raise TokenizerError("the written tokenizer's added tokens differ from the ones built", path=out_dir)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = out_dir / name
        if not path.exists():
            continue
        try:
            config = json.loads(path.read_bytes())
        except ValueError as err:
            raise TokenizerError(f"{name} is not valid JSON ({err})", path=out_dir) from err
        if not isinstance(config, dict):
            raise TokenizerError(f"{name} is not a JSON object", path=out_dir)
        missing = sorted(t for t in named_special_tokens(config) if t not in ids)
        if missing:
            raise TokenizerError(f"{name} names special tokens the tokenizer lacks: {', '.join(map(repr, missing[:5]))}",
                                 path=out_dir, hint="AutoTokenizer would add them as new tokens")
    if probe:
        reloaded = Tokenizer.from_str(written)
        for text in probe:
            if reloaded.encode(text, add_special_tokens=False).ids != backend.encode(text, add_special_tokens=False).ids:
                raise TokenizerError(f"tokenizer.json read back disagrees with the built one on {text[:40]!r}",
                                     path=out_dir)
    if full is None:
        full = _full_reload_check(expected)
    if not full:
        return expected
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(out_dir), trust_remote_code=False, local_files_only=True)
    except Exception as err:
        raise TokenizerError(f"the trained tokenizer does not reload with AutoTokenizer: {err}", path=out_dir) from err
    if len(hf) != expected:
        raise TokenizerError(f"reloaded tokenizer has {len(hf)} tokens, expected {expected}", path=out_dir)
    for text in probe:
        got = hf(text, add_special_tokens=False)["input_ids"]
        want = backend.encode(text, add_special_tokens=False).ids
        if got != want:
            raise TokenizerError(f"reloaded tokenizer disagrees with the trained one on {text[:40]!r}", path=out_dir)
    return len(hf)


@writes_output
def train_tokenizer(config: TokenizerTrainConfig) -> TokenizerTrainResult:
    """Train a target tokenizer in the source's family on ``config.corpus`` and write it to ``config.out``.

    The output directory loads with ``AutoTokenizer.from_pretrained``. Nothing is written when any step
    fails, and an existing output is replaced only with ``config.force``.
    """
    out = check_output_path(config.out, config.force)
    start = time.perf_counter()
    source = load_source_tokenizer(config.source)
    minimum = minimum_vocab_size(source)
    if config.vocab_size < minimum:
        raise ConfigError(
            f"vocab size {config.vocab_size} is below the minimum {minimum} for a {source.family.value} "
            f"tokenizer ({len(source.special_tokens)} special tokens"
            f"{' + 256 byte tokens' if minimum - len(source.special_tokens) > 1 else ''})",
            hint="raise --vocab-size",
        )
    texts = _CountingTexts(config.corpus)
    sp_bytes: bytes | None = None
    if source.family.is_sentencepiece and source.sentencepiece_model is not None:
        trained, sp_bytes = _train_with_sentencepiece(source, texts, config)
        trainer_name = "sentencepiece"
    else:
        trained = _train_with_tokenizers(source, texts, config)
        trainer_name = "tokenizers"
    tokenizer_json = _mirror_source(trained, source)
    size = len(_token_to_id(tokenizer_json))
    if size > config.vocab_size:
        raise TokenizerError(
            f"vocab size {config.vocab_size} is too small for this corpus: its alphabet alone needs {size} tokens",
            hint="raise --vocab-size" + (" or lower --character-coverage" if trainer_name == "sentencepiece" else ""),
        )
    if size < config.vocab_size:
        raise TokenizerError(
            f"vocab size {config.vocab_size} is larger than the corpus supports: training stopped at {size} "
            f"tokens ({texts.documents} documents, {texts.bytes} bytes)",
            hint="lower --vocab-size, lower --min-frequency or give more text",
        )
    with atomic_output_dir(out, force=config.force) as tmp:
        backend = _write_output(tmp, source, tokenizer_json, sp_bytes)
        size = _verify_reload(tmp, tokenizer_json, texts.probe, backend=backend)
        seconds = time.perf_counter() - start
        info = {
            "source": str(config.source), "family": source.family.value, "trainer": trainer_name,
            "vocab_size": size, "documents": texts.documents, "bytes": texts.bytes,
            "seconds": round(seconds, 3), "config": config.to_dict(),
        }
        (tmp / "vocabshift_tokenizer.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))
    log.info("trained %s tokenizer with %d tokens on %d documents (%.1f MB) in %.1f s -> %s",
             source.family.value, size, texts.documents, texts.bytes / 1e6, seconds, out)
    return TokenizerTrainResult(out=out, family=source.family, vocab_size=size, trainer=trainer_name,
                                documents=texts.documents, bytes=texts.bytes, seconds=seconds)

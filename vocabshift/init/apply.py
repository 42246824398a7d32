"""The init stage (``vocabshift init``): give a model the target vocabulary with rows from an init method.

Two ways in:

* **full replacement** — ``model`` is the source model and ``tokenizer`` a different target tokenizer
  (e.g. from ``vocabshift tokenizer train``). Target tokens whose canonical surface form is also a
  source token are *shared*; whether shared rows are copied follows the method's paper
  (``copy_overlap``: WECHSEL computes every row, FOCUS/OFA/FVT copy) unless the config overrides it.
  Special tokens are always copied from the source token with the same role (bos, eos, pad...) or
  string when there is one.
* **after prune/extend** — ``model`` is an output of ``vocabshift prune``/``extend``: its ``id_map.json``
  says which rows are source rows (kept as they are) and which are new (``-1``, computed by the method).

The method itself only sees arrays (:class:`~vocabshift.init.base.InitInputs`); this module computes
what the method ``requires`` — shared tokens, source-tokenizer decompositions (FVT), token vectors in
an aligned static space (WECHSEL, OFA) or token-level target vectors (FOCUS) — runs it for the input
embeddings and again for an untied LM head, gives an MLM output bias the copied entries and the mean
elsewhere, and writes the model through :func:`~vocabshift.surgery.resize.remap_vocab`.
"""

from __future__ import annotations

import gc
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocabshift.config import from_dict, to_json_data
from vocabshift.devices import resolve_device
from vocabshift.errors import ConfigError, InitError, ModelError
from vocabshift.init.base import (
    REQUIRES_ALIGNED,
    REQUIRES_DECOMPOSITIONS,
    REQUIRES_TARGET_TOKEN,
    REQUIRES_TEACHER,
    InitInputs,
    InitResult,
    Teacher,
)
from vocabshift.init.config import InitConfig
from vocabshift.init.early import (
    Background,
    focus_token_vectors,
    start_focus_token_vectors,
    take_focus_token_vectors,
)
from vocabshift.outputs import atomic_output_dir, check_output_path, writes_output
from vocabshift.sentence_transformer_files import copy_sentence_transformer_files
from vocabshift.tokenization.source import copy_tokenizer_files
from vocabshift.tokenization.surface import Surface
from vocabshift.vocabulary import ID_MAP_FILE, read_id_map_data

log = logging.getLogger(__name__)

INIT_REPORT_FILE = "init_report.json"
FACTORIZED_FILE = "factorized_embedding.safetensors"
_SPECIAL_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


@dataclass
class InitOutput:
    """What the init stage wrote."""

    out: Path
    report: dict[str, Any]


@dataclass
class _Plan:
    """The vocabulary question, independent of where it came from.

    ``source_rows`` are the rows of the model's current matrices that count as the source vocabulary
    (all of them for a full replacement, the kept ones after prune/extend); the method sees only
    those, indexed ``0..len(source_rows)-1``.
    """

    mode: str  # "replace" or "id_map"
    source_rows: list[int]  # model row of each compact source token
    source_surfaces: list[Surface]  # per compact source token
    source_hf: Any  # tokenizer whose ids are model rows of source tokens (word-only vector fallback)
    source_surfaces_full: list[Surface]  # per id of source_hf
    decompose_hf: Any | None  # tokenizer that splits surface forms into source tokens (FVT)
    decompose_to_compact: dict[int, int] | None  # its ids -> compact source index
    target_hf: Any
    target_surfaces: list[Surface]
    copy_compact: list[int]  # per target id: compact source index to copy, -1 = computed
    shared_compact: list[int]  # per target id: compact source index with the same surface form, -1 = none
    remap_id_map: list[int]  # per model row of the output: model row of the input to copy, -1 = new
    special_token_ids: dict[str, int] = field(default_factory=dict)
    tokenizer_dir: Path | None = None
    id_map_data: dict[str, Any] | None = None


def surface_key(surface: Surface) -> tuple[Any, ...] | None:
    """Canonical form used to match tokens across vocabularies (None: never matched, e.g. specials).

    Complete tokens match on (decoded text, starts a word); lone bytes and partial UTF-8 sequences on
    their raw bytes, so byte-level ``Ã©`` matches only the same bytes.
    """
    if surface.kind == "special":
        return None
    if surface.kind in ("byte", "partial"):
        return ("bytes", surface.raw)
    return ("text", surface.text, surface.word_initial)


def match_shared(source: list[Surface], target: list[Surface]) -> list[int]:
    """For each target token, the first source index with the same canonical surface form, else -1."""
    index: dict[tuple[Any, ...], int] = {}
    for i, s in enumerate(source):
        key = surface_key(s)
        if key is not None:
            index.setdefault(key, i)
    return [index.get(surface_key(t), -1) if surface_key(t) is not None else -1 for t in target]


def match_specials(source_hf: Any, target_hf: Any) -> dict[int, int]:
    """Target special-token id -> source id of the token with the same role (bos, eos...) or string."""
    out: dict[int, int] = {}
    for role in _SPECIAL_ROLES:
        t_tok, s_tok = getattr(target_hf, role, None), getattr(source_hf, role, None)
        if t_tok is not None and s_tok is not None:
            t_id, s_id = target_hf.convert_tokens_to_ids(str(t_tok)), source_hf.convert_tokens_to_ids(str(s_tok))
            if isinstance(t_id, int) and isinstance(s_id, int) and t_id >= 0 and s_id >= 0:
                out.setdefault(t_id, s_id)
    source_vocab = source_hf.get_vocab()
    for tok in target_hf.all_special_tokens + [t.content for t in target_hf.added_tokens_decoder.values()]:
        t_id = target_hf.convert_tokens_to_ids(tok)
        if isinstance(t_id, int) and t_id not in out and tok in source_vocab:
            out[t_id] = source_vocab[tok]
    return out


def decompositions(hf: Any, surfaces: list[Surface], wanted: list[bool]) -> list[list[int]]:
    """FVT's decomposition: the ids ``hf`` splits each wanted surface form into (empty when not wanted).

    Word-initial tokens are encoded with a leading space so byte-level BPE picks ``Ġ``-tokens and
    sentencepiece its ``▁``-pieces; a bare ``▁`` piece the encoding adds in front of a non-initial
    form is dropped. Lone bytes and partial UTF-8 tokens split into the source's byte tokens
    (byte-level characters or ``<0xNN>`` pieces) when it has them.
    """
    from vocabshift.tokenization.surface import byte_decoder

    backend = hf.backend_tokenizer
    vocab = backend.get_vocab(with_added_tokens=True)
    bare_ids = {vocab[t] for t in ("▁", "Ġ") if t in vocab}
    byte_char = {b: c for c, b in byte_decoder().items()}
    out: list[list[int]] = [[] for _ in surfaces]
    texts, where = [], []
    for i, (s, want) in enumerate(zip(surfaces, wanted, strict=True)):
        if not want or s.kind == "special":
            continue
        if s.kind in ("byte", "partial") and s.raw is not None:
            ids = [vocab.get(f"<0x{b:02X}>", vocab.get(byte_char[b], -1)) for b in s.raw]
            out[i] = [x for x in ids if x >= 0] if all(x >= 0 for x in ids) else []
            continue
        if not s.text:
            continue
        texts.append(" " + s.text if s.word_initial else s.text)
        where.append(i)
    for i, enc in zip(where, backend.encode_batch(texts, add_special_tokens=False), strict=True):
        ids = list(enc.ids)
        if not surfaces[i].word_initial:
            while ids and ids[0] in bare_ids:
                ids = ids[1:]
        out[i] = ids
    return out


def _load_tokenizer(path: str | Path) -> Any:
    from vocabshift.tokenization.source import load_hf_tokenizer

    hf = load_hf_tokenizer(path)
    if getattr(hf, "backend_tokenizer", None) is None:
        raise ConfigError("the tokenizer has no fast (tokenizers) backend", path=path)
    return hf


def _plan(config: InitConfig, model: Any, copy_overlap: bool, vocab_rows: int) -> _Plan:
    """Decide which target rows are copied from which source rows and which the method computes."""
    from vocabshift.tokenization.surface import surface_forms

    model_dir = Path(config.model)
    id_map_data = read_id_map_data(model_dir) if model_dir.is_dir() else None

    if id_map_data is not None:
        if config.tokenizer and Path(config.tokenizer).resolve() != model_dir.resolve():
            raise ConfigError(
                f"{model_dir} is a prune/extend output (it has {ID_MAP_FILE}); its own tokenizer is the target",
                hint="leave out --tokenizer, or pass the original source model to replace the vocabulary")
        id_map = list(id_map_data["id_map"])
        hf = _load_tokenizer(model_dir)
        if len(hf) != len(id_map):
            raise InitError(f"{ID_MAP_FILE} lists {len(id_map)} tokens but the tokenizer has {len(hf)}",
                            path=model_dir / ID_MAP_FILE)
        if vocab_rows < len(id_map):
            raise InitError(f"the model has {vocab_rows} embedding rows, fewer than the {len(id_map)} tokens "
                            f"of {ID_MAP_FILE}", path=model_dir)
        surfaces = surface_forms(hf)
        source_rows = [i for i, s in enumerate(id_map) if s >= 0]
        if len(source_rows) == len(id_map):
            raise InitError(f"nothing to initialize: all {len(id_map)} tokens of {ID_MAP_FILE} are source tokens "
                            "(a pruned model keeps its rows as they are)", path=model_dir,
                            hint="init runs after `vocabshift extend`, or with --tokenizer for a full replacement")
        compact = {row: k for k, row in enumerate(source_rows)}
        copy = [compact.get(i, -1) if id_map[i] >= 0 else -1 for i in range(len(id_map))]
        shared = list(copy)
        # FVT needs the original source tokenizer: the output's own tokenizer would split a new token
        # into itself. Its ids map to output rows through the id_map.
        decompose_hf, to_compact = None, None
        src_path = Path(str(id_map_data.get("source", "")))
        if src_path.exists():
            try:
                decompose_hf = _load_tokenizer(src_path)
                first_row: dict[int, int] = {}
                for row, src in enumerate(id_map):
                    if src >= 0:
                        first_row.setdefault(src, row)
                to_compact = {src: compact[row] for src, row in first_row.items()}
            except Exception as err:  # the source moved or is not loadable: only FVT needs it
                log.debug("cannot load the id_map's source tokenizer %s: %s", src_path, err)
        remap = [i if i >= len(id_map) or id_map[i] >= 0 else -1 for i in range(vocab_rows)]
        return _Plan(mode="id_map", source_rows=source_rows, source_surfaces=[surfaces[r] for r in source_rows],
                     source_hf=hf, source_surfaces_full=surfaces, decompose_hf=decompose_hf,
                     decompose_to_compact=to_compact, target_hf=hf, target_surfaces=surfaces, copy_compact=copy,
                     shared_compact=shared, remap_id_map=remap, tokenizer_dir=model_dir, id_map_data=id_map_data)

    if not config.tokenizer:
        raise ConfigError(f"{model_dir} has no {ID_MAP_FILE}: give the target tokenizer (--tokenizer) to "
                          "replace its vocabulary, or run `vocabshift extend`/`prune` first")
    source_hf = _load_tokenizer(config.model)
    target_hf = _load_tokenizer(config.tokenizer)
    if len(source_hf) > vocab_rows:
        raise ModelError(f"the tokenizer has {len(source_hf)} tokens but the model only {vocab_rows} embedding rows",
                         path=config.model)
    source_surfaces = surface_forms(source_hf)
    target_surfaces = surface_forms(target_hf)
    shared = match_shared(source_surfaces, target_surfaces)
    copy = list(shared) if copy_overlap else [-1] * len(target_surfaces)
    specials = match_specials(source_hf, target_hf)
    for t_id, s_id in specials.items():
        copy[t_id] = s_id
        shared[t_id] = s_id
    # The model config's special ids become the target tokenizer's (bos/eos/pad always, the others when the
    # config has such a field), rather than wherever the source's special tokens were copied to.
    special_ids = {}
    for role in _SPECIAL_ROLES:
        tok = getattr(target_hf, role, None)
        name = role.replace("_token", "_token_id")
        if tok is not None and (role in ("bos_token", "eos_token", "pad_token") or hasattr(model.config, name)):
            t_id = target_hf.convert_tokens_to_ids(str(tok))
            if isinstance(t_id, int) and t_id >= 0:
                special_ids[name] = t_id
    source_rows = list(range(len(source_hf)))
    return _Plan(mode="replace", source_rows=source_rows, source_surfaces=source_surfaces, source_hf=source_hf,
                 source_surfaces_full=source_surfaces, decompose_hf=source_hf,
                 decompose_to_compact={i: i for i in source_rows}, target_hf=target_hf,
                 target_surfaces=target_surfaces, copy_compact=copy, shared_compact=shared,
                 remap_id_map=list(copy), special_token_ids=special_ids, tokenizer_dir=Path(config.tokenizer))


def _static_vectors(config: InitConfig, report: dict[str, Any]) -> tuple[Any, Any]:
    """Source and target static vectors in one space: given aligned, an alignment directory, or aligned now."""
    from vocabshift.vectors import load_aligned, load_pair

    if config.alignment:
        src, tgt = load_aligned(config.alignment)
        report["vectors"] = {"alignment": config.alignment}
        return src, tgt
    if not (config.source_vectors and config.target_vectors):
        raise ConfigError(f"{config.method} needs static vectors: give source_vectors and target_vectors "
                          "(--source-vectors/--target-vectors) or an alignment directory (--alignment)")
    if config.aligned:
        src, tgt = load_pair(config.source_vectors, config.target_vectors)  # dimensions checked there
        report["vectors"] = {"aligned": True, "source": config.source_vectors, "target": config.target_vectors}
        return src, tgt
    from vocabshift.vectors import VectorsAlignConfig, align_vectors

    with tempfile.TemporaryDirectory(prefix="vocabshift-align-") as tmp:
        out = Path(tmp) / "alignment"
        result = align_vectors(VectorsAlignConfig(source=config.source_vectors, target=config.target_vectors,
                                                  dictionary=config.dictionary, out=str(out)))
        report["vectors"] = {"aligned_here": True, "alignment": to_json_data(result)}
        src, tgt = load_aligned(out)
        # load_aligned may read lazily from the files named in alignment.json, which stay where they are.
        return src, tgt


def _inputs(config: InitConfig, plan: _Plan, requires: frozenset[str], report: dict[str, Any],
            method_config: Any = None, early: Background | None = None) -> dict[str, Any]:
    """The InitInputs fields the method requires (everything but the embedding matrix); ``early``: the
    FOCUS token vectors started by :func:`~vocabshift.init.early.start_focus_token_vectors`."""
    import torch

    kw: dict[str, Any] = {"copy": torch.tensor(plan.copy_compact, dtype=torch.long)}
    # Lexical overlap is cheap and always given (REQUIRES_SHARED methods depend on it; others report it).
    kw["shared"] = torch.tensor(plan.shared_compact, dtype=torch.long)
    compute = [c < 0 for c in plan.copy_compact]
    if REQUIRES_DECOMPOSITIONS in requires:
        if plan.decompose_hf is None or plan.decompose_to_compact is None:
            raise InitError(f"{config.method} splits new tokens with the source tokenizer, but the id_map's "
                            "source is not available", path=config.model,
                            hint="keep the source model where it was when prune/extend ran")
        raw = decompositions(plan.decompose_hf, plan.target_surfaces, compute)
        to_c = plan.decompose_to_compact
        kw["decompositions"] = [[to_c[i] for i in ids if i in to_c] for ids in raw]
        report["decompositions"] = {"empty": sum(1 for d, c in zip(kw["decompositions"], compute, strict=True)
                                                 if c and not d)}
    if REQUIRES_ALIGNED in requires:
        from vocabshift.vectors import token_vectors

        src_vecs, tgt_vecs = _static_vectors(config, report)
        t0 = time.perf_counter()
        s_full, s_found = token_vectors(src_vecs, plan.source_surfaces_full, tokenizer=plan.source_hf)
        t_vec, t_found = token_vectors(tgt_vecs, plan.target_surfaces, tokenizer=plan.target_hf)
        rows = plan.source_rows
        kw["source_token_vectors"] = torch.as_tensor(s_full[rows], dtype=torch.float32)
        kw["source_vector_mask"] = torch.as_tensor(s_found[rows], dtype=torch.bool)
        kw["target_token_vectors"] = torch.as_tensor(t_vec, dtype=torch.float32)
        kw["target_vector_mask"] = torch.as_tensor(t_found, dtype=torch.bool)
        report.setdefault("vectors", {}).update({
            "source_tokens_with_vector": int(kw["source_vector_mask"].sum()),
            "source_tokens": len(rows),
            "target_tokens_with_vector": int(kw["target_vector_mask"].sum()),
            "target_tokens": len(plan.target_surfaces),
            "token_vector_seconds": round(time.perf_counter() - t0, 3)})
    elif REQUIRES_TARGET_TOKEN in requires:
        from vocabshift.vectors import token_id_vectors

        t0 = time.perf_counter()
        given = getattr(method_config, "token_vectors", None)
        taken = take_focus_token_vectors(early, plan.target_hf, len(plan.target_surfaces))
        if given is not None:
            t_vec, t_found = token_id_vectors(given, len(plan.target_surfaces), strict=True)
        elif config.corpus is None:
            raise ConfigError(f"{config.method} trains token-level fastText on target text tokenized by the "
                              "target tokenizer: give a corpus (--corpus), or a trained model (-o token_vectors=PATH)")
        elif taken is not None:
            t_vec, t_found = taken
        else:
            t_vec, t_found = focus_token_vectors(plan.target_hf, len(plan.target_surfaces), config, method_config)
        kw["target_token_vectors"] = torch.as_tensor(t_vec, dtype=torch.float32)
        kw["target_vector_mask"] = torch.as_tensor(t_found, dtype=torch.bool)
        report["token_vectors"] = {"target_tokens_with_vector": int(kw["target_vector_mask"].sum()),
                                   "target_tokens": len(plan.target_surfaces),
                                   "source": str(given) if given is not None else "trained",
                                   "trained_while_planning": taken is not None,
                                   "train_seconds": round(time.perf_counter() - t0, 3)}
    return kw


def _teacher(config: InitConfig, loaded: Any, plan: _Plan, method_config: Any, copy: Any, output: Any,
             device: Any, report: dict[str, Any]) -> Teacher:
    """The source model and windows of target text for a model-aware method (``distill``).

    ``loaded``: the model when init holds it in memory (fp32); None on the lean path, where it is loaded
    here for the method alone, in the dtype of its ``precision`` (bf16: half the memory), and freed after.
    """
    from vocabshift.init.contexts import require_corpus, target_windows, teacher_dtype, teacher_for
    from vocabshift.surgery.checkpoint import load_model
    from vocabshift.train.data import resolve_objective

    corpus = require_corpus(config.method, config.corpus)
    dtype = teacher_dtype(getattr(method_config, "precision", "auto"), device)
    model = loaded if loaded is not None else load_model(config.model, dtype=dtype)
    try:
        causal = resolve_objective(model, "auto") == "clm"
    except ConfigError:  # a base model without an LM head: its body is all distill uses
        causal = bool(getattr(model.config, "is_decoder", False))
    windows, stats = target_windows(plan.target_hf, corpus, copy < 0, length=method_config.context_length,
                                    per_token=method_config.contexts_per_token,
                                    max_windows=method_config.max_contexts, skip_documents=config.skip_documents)
    if windows.shape[0] == 0:
        raise InitError(f"{config.method}: no window of the corpus shows any of the "
                        f"{int((copy < 0).sum())} new tokens", path=corpus.sources[0].paths[0] if corpus.sources else None,
                        hint="give target-language text the new tokens occur in")
    # Windows start after the token a document is predicted from (bos, else eos; an encoder's cls).
    roles = ("bos_token_id", "eos_token_id") if causal else ("cls_token_id", "bos_token_id")
    compact = {row: k for k, row in enumerate(plan.source_rows)}
    prefix = next((compact.get(v, -1) for v in (getattr(plan.source_hf, r, None) for r in roles)
                   if isinstance(v, int)), -1)
    report["teacher"] = {**stats, "causal": causal, "prefix": prefix, "device": str(device),
                         "dtype": str(dtype).removeprefix("torch."),
                         "weights": "loaded for the method" if loaded is None else "the model init holds"}
    return teacher_for(model, windows, prefix=prefix, causal=causal, output_embeddings=output, device=device,
                       dtype=dtype, owns_model=loaded is None)


def _bias_rows(bias: Any, n_new: int, source_rows: list[int]) -> Any:
    """MLM output bias for the computed rows: the mean over the source tokens (copied rows keep theirs)."""
    import torch

    src = bias.detach()[torch.tensor(source_rows, dtype=torch.long)].float()
    return src.mean().expand(n_new).clone().to(bias.dtype)


def _save_tokenizer(plan: _Plan, dst: Path) -> None:
    if plan.tokenizer_dir is not None and plan.tokenizer_dir.is_dir():
        copy_tokenizer_files(plan.tokenizer_dir, dst)
    else:  # e.g. a GGUF or a tokenizer given by a file: write it through transformers
        plan.target_hf.save_pretrained(str(dst))


def _header_layout(config: InitConfig) -> tuple[Any, Any] | None:
    """(view, EmbeddingLayout) of a decoder :mod:`~vocabshift.surgery.row_prune` edits from its headers, or
    None for the meta-model path (other models, or a head whose storage and ``tie_word_embeddings``
    disagree). The view has ``.header`` and ``.config`` (config.json's fields with the class's default
    special ids, as attributes: what the planner asks), and needs no transformers config class."""
    from types import SimpleNamespace

    from vocabshift.safe_loading import refuse_remote_code
    from vocabshift.surgery import row_prune
    from vocabshift.surgery.layout import EmbeddingLayout

    header = row_prune.header_layout(config.model)
    if header is None:
        return None
    refuse_remote_code(config.model)  # as a transformers load would
    tie = header.config_ties
    if tie == header.has_head:
        return None
    view = SimpleNamespace(header=header, config=SimpleNamespace(**header.config_fields()))
    return view, EmbeddingLayout(input_embeddings=row_prune.EMBED.removesuffix(".weight"),
                                 output_embeddings=row_prune.HEAD.removesuffix(".weight"), tied=header.tied,
                                 output_bias=None, vocab_size=header.vocab_size, shares_weight=header.tied,
                                 config_tied=tie)


@writes_output
def init_model(config: InitConfig) -> InitOutput:
    """Run ``config.method`` and write a loadable model with the target vocabulary to ``config.out``."""
    from vocabshift.init.registry import get_init_method, run_init_method

    out = check_output_path(config.out, config.force)
    method = get_init_method(config.method)
    method_config = from_dict(method.config, dict(config.options), "options")
    copy_overlap = method.copy_overlap if config.copy_overlap is None else config.copy_overlap
    t_start = time.perf_counter()
    needs_teacher = REQUIRES_TEACHER in method.requires
    if needs_teacher:  # before any weights load
        from vocabshift.init.contexts import require_corpus

        require_corpus(method.name, config.corpus)

    # FOCUS's token vectors need only the config: trained on a thread (fastText in its own process) while
    # torch is imported and the plan is made, so started before both
    early = start_focus_token_vectors(config, method_config) \
        if REQUIRES_TARGET_TOKEN in method.requires and REQUIRES_ALIGNED not in method.requires else None
    try:
        import torch

        from vocabshift.init._common import take_rows
        from vocabshift.surgery import row_prune
        from vocabshift.surgery.checkpoint import load_model, parameter_count, save_model
        from vocabshift.surgery.layout import locate
        from vocabshift.surgery.lazy import can_stream, meta_model, read_vocab_tensors, remap_checkpoint
        from vocabshift.surgery.resize import remap_vocab

        device = resolve_device(config.device)
        # Lean: plan on a meta-device model, read only the vocabulary-sized tensors, stream the rest at the end.
        # A 7B bf16 checkpoint then needs memory for its embedding matrices, not 28 GB of fp32 weights.
        # A model-aware method loads the model for itself (_teacher) and frees it before the writing.
        lean = not config.in_memory and can_stream(config.model)
        # A supported decoder needs no model at all: its headers and configs say where the rows are.
        header = _header_layout(config) if lean else None
        if header is not None:
            model, layout = header
            tensors = row_prune.read_vocab_rows(config.model, model.header)
        elif lean:
            model = meta_model(Path(config.model))
            layout = locate(model, allow_meta=True)
            tensors = read_vocab_tensors(config.model, model)
        else:
            model = load_model(config.model)
            layout = locate(model)
            tensors = {n: model.get_parameter(n).detach()
                       for n in (layout.input_weight, layout.output_weight, layout.output_bias) if n is not None}
        plan = _plan(config, model, copy_overlap, layout.vocab_size)
        report: dict[str, Any] = {"stage": "init", "method": method.name, "reference": method.reference_url,
                                  "mode": plan.mode, "source": config.model,
                                  "target_tokenizer": str(plan.tokenizer_dir), "config": config.to_dict(),
                                  "method_config": method_config.to_dict() if hasattr(method_config, "to_dict")
                                  else to_json_data(method_config),
                                  "copy_overlap": copy_overlap, "source_vocab_size": len(plan.source_rows),
                                  "target_vocab_size": len(plan.target_surfaces),
                                  "shared_tokens": sum(1 for s in plan.shared_compact if s >= 0),
                                  "parameters_before": model.header.parameters if header is not None
                                  else parameter_count(model)}
        kw = _inputs(config, plan, method.requires, report, method_config, early)
    finally:
        if early is not None:
            early.close()  # a no-op once taken; else init failed first: stop the work, wait for it
    rows_t = torch.tensor(plan.source_rows, dtype=torch.long)
    copy_t = kw["copy"]
    compute_mask = copy_t < 0
    untied = layout.output_weight is not None and not layout.tied
    if needs_teacher:
        output = tensors[layout.output_weight].detach()[rows_t].float() if untied else None
        kw["teacher"] = _teacher(config, None if lean else model, plan, method_config, copy_t, output, device,
                                 report)

    def run(matrix: torch.Tensor, what: str) -> InitResult:
        inputs = InitInputs(source_embeddings=take_rows(matrix.detach(), rows_t).float(), seed=config.seed,
                            device=device, chunk_size=config.chunk_size, **kw)
        t0 = time.perf_counter()
        result = run_init_method(method.name, inputs, method_config)
        report.setdefault("matrices", {})[what] = {"counts": result.counts(),
                                                   "seconds": round(time.perf_counter() - t0, 3),
                                                   "info": to_json_data(result.info)}
        return result

    in_weight = tensors[layout.input_weight]
    result_in = run(in_weight, "input_embeddings")
    new_rows = result_in.rows[compute_mask].to(in_weight.dtype)
    factorized = result_in.factorized
    new_output_rows = None
    if untied:
        out_weight = tensors[layout.output_weight]
        out_rows = result_in.output_rows if result_in.output_rows is not None else run(out_weight, "lm_head").rows
        new_output_rows = out_rows[compute_mask].to(out_weight.dtype)
        del out_rows, out_weight
    # Only the new rows are written: the [V_t, d] results and the source matrix go before the writing (lean)
    del result_in, in_weight
    if needs_teacher and lean:
        del kw["teacher"]  # the model loaded for the method: freed before the output is written
        gc.collect()
    elif needs_teacher:
        model.to("cpu")
    new_bias = None
    if layout.output_bias is not None:
        new_bias = _bias_rows(tensors[layout.output_bias], int(compute_mask.sum()), plan.source_rows)
    del tensors

    # remap_vocab: rows listed in remap_id_map are copied, the -1 rows take new_rows in order. After
    # prune/extend the model already has the target size and remap_id_map is the identity on kept rows.
    remap = plan.remap_id_map
    n_new = sum(1 for r in remap if r < 0)
    if n_new != int(compute_mask.sum()):
        raise InitError(f"internal: {n_new} new rows in the remap but {int(compute_mask.sum())} computed rows")
    remap_args: dict[str, Any] = {
        "new_rows": new_rows, "new_output_rows": new_output_rows, "new_bias": new_bias,
        "pad_to_multiple_of": config.pad_to_multiple_of if plan.mode == "replace" else None,
        "special_token_ids": plan.special_token_ids or None}
    if not lean:
        remap_vocab(model, remap, **remap_args)
        report["parameters_after"] = parameter_count(model)
    report["path"] = "lean (vocabulary tensors read, the rest streamed)" if lean else "in memory (fp32)"

    with atomic_output_dir(out, force=config.force) as tmp:
        if header is not None and not remap_args["pad_to_multiple_of"]:
            report["path"] = "lean (vocabulary tensors read from the headers, no model)"
            report["parameters_after"] = row_prune.remap_from_headers(
                config.model, tmp, model.header, remap, new_rows=new_rows, new_output_rows=new_output_rows,
                special_token_ids=remap_args["special_token_ids"])["parameters_after"]
        elif lean:
            if header is not None:  # padding rows are computed: the meta model after all
                model = meta_model(Path(config.model))
            report["parameters_after"] = remap_checkpoint(config.model, tmp, remap, model=model,
                                                          **remap_args)["parameters_after"]
        else:
            save_model(model, tmp)
        report["seconds"] = round(time.perf_counter() - t_start, 3)
        _save_tokenizer(plan, tmp)
        carried = copy_sentence_transformer_files(config.model, tmp)
        if carried is not None:
            report["sentence_transformers"] = carried
        if factorized is not None:
            factorized.save(tmp / FACTORIZED_FILE)
            report["factorized"] = {"file": FACTORIZED_FILE, "rank": int(factorized.coordinates.shape[1])}
        if plan.mode == "id_map":
            data = dict(plan.id_map_data or {})
        else:
            data = {"source": str(config.model), "size": len(plan.remap_id_map),
                    "new_tokens": n_new, "id_map": plan.remap_id_map}
        data["init"] = method.name
        (tmp / ID_MAP_FILE).write_text(json.dumps(data))
        (tmp / INIT_REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    counts = report["matrices"]["input_embeddings"]["counts"]
    log.info("init %s: %s -> %s (%s) in %.1f s", method.name, config.model, out,
             ", ".join(f"{v} {k}" for k, v in counts.items()), report["seconds"])
    return InitOutput(out=out, report=report)

"""Rebuild a model's vocabulary-sized parameters from an ``id_map``.

``id_map[i]`` is the source id of new token ``i``, or ``-1`` for a token the source model does not
have. :func:`remap_vocab` applies one such map to every tensor with a row per token — input
embeddings, an untied LM head, the MLM output bias — and to the config: ``vocab_size`` and every
special-token id (``pad_token_id``, ``eos_token_id``, ...) in the config and the generation config.

Guarantees, which the later stages (pruning, extension, init, training, export) rely on:

* rows of kept tokens are bit-identical copies of the source rows (one ``index_select`` per matrix);
* new rows come from the caller (``new_rows`` / ``new_output_rows`` / ``new_bias``, ordered as the
  ``-1`` entries) or default to the mean of the source rows, as ``resize_token_embeddings`` does
  with ``mean_resizing`` (we take the mean itself, not a sample around it, so it is reproducible);
* the sharing between Parameters is kept exactly: a tied head stays the very same Parameter as the
  input embeddings, an untied one gets its own copy, and a bias known under two names stays one;
* dtype, device and ``requires_grad`` are kept, and so are the modules (hooks, subclasses);
* a special-token id whose token was dropped becomes ``None`` with a logged warning, never a stale id.

A source id may appear more than once in ``id_map`` (a token copied to two new ids, e.g. a
piece that both tokenizers have under different surface forms); special-token ids then map to
the first new id that copies them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vocabshift.errors import ConfigError, IdMapError, ModelError
from vocabshift.surgery.layout import EmbeddingLayout, describe_tie_mismatch, locate
from vocabshift.surgery.row_prune import EXTRA_ID_FIELDS, is_id_field, is_token_ids, normalize_special_ids

log = logging.getLogger(__name__)

TokenIds = int | Sequence[int] | None

# Generation-config fields that hold token ids without ending in ``_token_id(s)``.


def remap_vocab(
    model: nn.Module,
    id_map: Sequence[int] | torch.Tensor,
    *,
    new_rows: torch.Tensor | None = None,
    new_output_rows: torch.Tensor | None = None,
    new_bias: torch.Tensor | None = None,
    pad_to_multiple_of: int | None = None,
    special_token_ids: Mapping[str, TokenIds] | None = None,
    allow_meta: bool = False,
) -> EmbeddingLayout:
    """Give ``model`` the vocabulary described by ``id_map``, in place; returns the new layout.

    Args:
        model: a transformers model (or any module with ``get_input_embeddings``).
        id_map: ``id_map[i]`` = source id of new token ``i``, or ``-1`` for a new token. Source ids
            may repeat (the token is copied to each new id).
        new_rows: ``[n_new, d]`` input-embedding rows for the ``-1`` entries, in their order; the
            mean source row when ``None``. For a tied model these are the head's rows too.
        new_output_rows: ``[n_new, d]`` rows for an untied LM head; the mean head row when ``None``.
        new_bias: ``[n_new]`` output-bias entries for the new tokens; the mean bias when ``None``.
        pad_to_multiple_of: grow the matrices to a multiple of this (e.g. 64 for tensor cores) with
            mean rows; ``config.vocab_size`` becomes the padded size.
        special_token_ids: explicit ids to set instead of remapping, keyed ``"pad_token_id"`` (or
            ``"pad"``); they apply to the config and the generation config.
        allow_meta: accept a model on the meta device: shapes and configs are remapped, no data
            (how :mod:`vocabshift.surgery.lazy` plans a checkpoint edit).

    Raises:
        IdMapError: source ids out of range, rows of the wrong shape, ids outside the new vocabulary.
        ModelError: no input embeddings, inconsistent tying, or a pad id that RoBERTa-style position
            ids depend on would move.
        ConfigError: ``pad_to_multiple_of`` is not a positive integer.
    """
    layout = locate(model, allow_meta=allow_meta)
    cls = type(model).__name__
    if not layout.tie_is_consistent:
        raise ModelError(f"{cls}: {describe_tie_mismatch(layout)}")

    old_size = layout.vocab_size
    keep_pos, kept_src, new_pos, size = plan_rows(id_map, old_size, pad_to_multiple_of)
    n_ids = keep_pos.numel() + new_pos.numel()
    n_new = new_pos.numel()

    in_weight = model.get_parameter(layout.input_weight)
    out_weight = None if layout.output_weight is None else model.get_parameter(layout.output_weight)
    bias = None if layout.output_bias is None else model.get_parameter(layout.output_bias)
    if new_output_rows is not None:
        if layout.output_embeddings is None:
            raise IdMapError(f"{cls} has no LM head; new_output_rows must be None")
        if layout.tied:
            raise IdMapError(f"{cls} has tied embeddings ({layout.output_weight} is {layout.input_weight}); "
                             "new_output_rows must be None", hint="pass the rows for both as new_rows")
    if new_bias is not None and bias is None:
        raise IdMapError(f"{cls} has no vocabulary-sized output bias; new_bias must be None")
    new_rows = _check_rows(new_rows, "new_rows", n_new, in_weight)
    if out_weight is not None and not layout.tied:
        new_output_rows = _check_rows(new_output_rows, "new_output_rows", n_new, out_weight)
    if bias is not None:
        new_bias = _check_rows(new_bias, "new_bias", n_new, bias)

    # source id -> new id (the first new id that copies it); -1 for dropped tokens
    inverse = torch.full((old_size,), n_ids, dtype=torch.long)
    inverse.scatter_reduce_(0, kept_src, keep_pos, reduce="amin")
    inverse[inverse == n_ids] = -1
    config_updates, dropped_ids = _special_id_updates(model, inverse, size, special_token_ids)
    _check_position_pad(model, config_updates)
    padding_idx = _new_padding_idx(model.get_submodule(layout.input_embeddings), inverse)
    _warn_unhandled(model, layout)

    # Every Parameter with a row per token, once each, with the rows its new tokens get.
    fills: list[tuple[torch.Tensor, torch.Tensor | None]] = [(in_weight, new_rows)]
    if out_weight is not None and out_weight is not in_weight:
        fills.append((out_weight, new_output_rows))
    if bias is not None:
        fills.append((bias, new_bias))
    for path in layout.other_vocab_params:  # other names of the above, or BERT's untied cls.predictions.bias
        param = model.get_parameter(path)
        if not any(param is p for p, _ in fills):
            fills.append((param, new_bias))
    with torch.no_grad():
        rebuilt = {id(p): _remap_rows(p, keep_pos, kept_src, new_pos, fill, size) for p, fill in fills}
    # Nothing has been changed so far; from here on the model is rewritten.
    for module, attr, old in _holders(model, {id(p) for p, _ in fills}):
        setattr(module, attr, rebuilt[id(old)])

    embeddings = model.get_submodule(layout.input_embeddings)
    if hasattr(embeddings, "num_embeddings"):
        embeddings.num_embeddings = size
    if hasattr(embeddings, "padding_idx"):
        embeddings.padding_idx = padding_idx
    if layout.output_embeddings is not None:
        head = model.get_submodule(layout.output_embeddings)
        for attr in ("out_features", "num_embeddings"):
            if hasattr(head, attr):
                setattr(head, attr, size)
    _set_module_vocab_sizes(model, old_size, size)
    _apply_config(model, size, config_updates)
    for message in dropped_ids:
        log.warning(message)

    new_layout = locate(model, allow_meta=allow_meta)
    if layout.tied:
        head_weight = model.get_parameter(new_layout.output_weight)
        if not (new_layout.tied and head_weight.data_ptr() == model.get_parameter(new_layout.input_weight).data_ptr()):
            raise ModelError(f"{cls}: the LM head came out untied after surgery (a bug in vocabshift)")
    log.info("remap_vocab %s: %d -> %d tokens (%d kept, %d new, %d source tokens dropped%s)", cls, old_size,
             size, keep_pos.numel(), n_new, old_size - int((inverse >= 0).sum()),
             f", {size - n_ids} padding rows" if size > n_ids else "")
    return new_layout


def _as_id_tensor(id_map: Sequence[int] | torch.Tensor) -> torch.Tensor:
    if len(id_map) == 0:
        raise IdMapError("id_map is empty", hint="it needs one entry per token of the new vocabulary")
    try:
        src = torch.as_tensor(id_map)
    except (TypeError, ValueError, RuntimeError) as err:
        raise IdMapError(f"id_map must be a sequence of integer ids ({err})") from None
    if src.dim() != 1:
        raise IdMapError(f"id_map must be one-dimensional, got shape {tuple(src.shape)}")
    if src.dtype.is_floating_point or src.dtype.is_complex or src.dtype == torch.bool:
        raise IdMapError(f"id_map must hold integer ids, got dtype {src.dtype}")
    return src.to(device="cpu", dtype=torch.long)


def _check_range(src: torch.Tensor, old_size: int) -> None:
    bad = torch.nonzero((src < -1) | (src >= old_size)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise IdMapError(f"id_map[{i}] = {int(src[i])} is not a source id ({bad.numel()} such entries); "
                         f"the source model has {old_size} tokens, so entries must be in 0..{old_size - 1} "
                         "or -1 for a new token")


def _padded(n: int, multiple: int | None) -> int:
    if multiple is None:
        return n
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(f"pad_to_multiple_of must be a positive integer, got {multiple!r}")
    return -(-n // multiple) * multiple


def _check_rows(rows: Any, name: str, n_new: int, like: torch.Tensor) -> torch.Tensor | None:
    if rows is None:
        return None
    rows = torch.as_tensor(rows)
    expected = (n_new, *like.shape[1:])
    if tuple(rows.shape) != expected:
        raise IdMapError(f"{name} has shape {tuple(rows.shape)}, expected {expected} "
                         f"({n_new} new tokens = -1 entries in id_map"
                         + (f", {like.shape[1]} dimensions)" if like.dim() > 1 else ")"))
    if rows.dtype.is_floating_point and not bool(torch.isfinite(rows).all()):
        raise IdMapError(f"{name} contains NaN or infinite values")
    return rows.to(device=like.device, dtype=like.dtype)


def plan_rows(id_map: Sequence[int] | torch.Tensor, old_size: int,
              pad_to_multiple_of: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(keep_pos, kept_src, new_pos, size)`` of an id_map: where kept rows go, where they come from,
    which rows are new, and the (padded) new size."""
    src = _as_id_tensor(id_map)
    _check_range(src, old_size)
    size = _padded(src.numel(), pad_to_multiple_of)
    keep_pos = torch.nonzero(src >= 0).flatten()
    return keep_pos, src[keep_pos], torch.nonzero(src < 0).flatten(), size


MEAN_CHUNK_ROWS = 8192


def mean_row(read_rows: Any, n_rows: int, dtype: torch.dtype) -> torch.Tensor:
    """Mean of a vocabulary-sized tensor's rows, summed in float32 chunks of ``MEAN_CHUNK_ROWS``.

    ``read_rows(a, b)`` returns rows ``[a, b)``. The in-memory and the streamed (lean) paths both call
    this with the same chunking, so their mean rows are bit-identical.
    """
    acc = torch.promote_types(dtype, torch.float32)
    total = None
    for a in range(0, n_rows, MEAN_CHUNK_ROWS):
        part = read_rows(a, min(a + MEAN_CHUNK_ROWS, n_rows)).sum(dim=0, dtype=acc)
        total = part if total is None else total + part
    assert total is not None
    return (total / n_rows).to(dtype)


def _remap_rows(old: torch.Tensor, keep_pos: torch.Tensor, kept_src: torch.Tensor, new_pos: torch.Tensor,
                fill: torch.Tensor | None, size: int) -> nn.Parameter:
    """The new Parameter: kept rows copied bit for bit, new rows from ``fill``, the rest the mean row."""
    src = old.detach()
    plan = (keep_pos, kept_src, new_pos, size)
    data = torch.empty((size, *old.shape[1:]), dtype=old.dtype, device=old.device)
    _remap_into(data, 0, src, plan, fill, _mean_if_needed(src, plan, fill))
    return nn.Parameter(data, requires_grad=old.requires_grad)


REMAP_BLOCK_BYTES = 16 << 20  # rows of a remapped tensor a writer builds at a time (remap_row_blocks)


def remap_row_blocks(old: torch.Tensor, plan: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int],
                     fill: torch.Tensor | None = None, block_bytes: int = REMAP_BLOCK_BYTES) -> Iterator[torch.Tensor]:
    """A vocabulary-sized tensor rebuilt by a :func:`plan_rows` plan (new rows from ``fill`` in order, or the
    mean; padding rows the mean): the same rows as :func:`remap_vocab` builds in memory, ``block_bytes`` at a
    time, for writers that stream them to a file without a second vocabulary-sized tensor. Each block is a
    view of one reused buffer: write it before asking for the next."""
    src = old.detach()
    size = plan[3]
    mean = _mean_if_needed(src, plan, fill)
    rows = max(1, block_bytes // max(1, src[0].numel() * src.element_size()))
    buffer = torch.empty((min(rows, size), *src.shape[1:]), dtype=src.dtype, device=src.device)
    for a in range(0, size, rows):
        out = buffer[:min(rows, size - a)]
        _remap_into(out, a, src, plan, fill, mean)
        yield out


def _mean_if_needed(src: torch.Tensor, plan: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int],
                    fill: torch.Tensor | None) -> torch.Tensor | None:
    """The mean row when some row is neither kept nor filled (padding, or new rows without ``fill``)."""
    keep_pos, _, new_pos, size = plan
    filled = new_pos.numel() if fill is not None else 0
    if size - keep_pos.numel() - filled <= 0:
        return None
    return mean_row(lambda a, b: src[a:b], src.shape[0], src.dtype)


def _remap_into(out: torch.Tensor, start: int, src: torch.Tensor,
                plan: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int], fill: torch.Tensor | None,
                mean: torch.Tensor | None) -> None:
    """Rows ``[start, start + len(out))`` of the remapped tensor into ``out``: kept rows bit for bit, new rows
    from ``fill`` (in ``new_pos`` order), the rest ``mean``. ``keep_pos`` and ``new_pos`` are increasing."""
    keep_pos, kept_src, new_pos, _ = plan
    device = out.device
    bounds = torch.tensor([start, start + out.shape[0]])
    k0, k1 = (int(i) for i in torch.searchsorted(keep_pos, bounds))
    pos = keep_pos[k0:k1] - start
    n_kept = k1 - k0
    if n_kept and int(pos[-1]) == n_kept - 1:  # kept rows are a prefix (prune, extend): no temporary
        torch.index_select(src, 0, kept_src[k0:k1].to(device), out=out[:n_kept])
    elif n_kept:
        out[pos.to(device)] = src.index_select(0, kept_src[k0:k1].to(device))
    if n_kept == out.shape[0]:
        return
    if mean is not None:
        rest = torch.ones(out.shape[0], dtype=torch.bool)
        rest[pos] = False
        out[rest.to(device)] = mean
    if fill is not None:
        n0, n1 = (int(i) for i in torch.searchsorted(new_pos, bounds))
        if n1 > n0:
            out[(new_pos[n0:n1] - start).to(device)] = fill[n0:n1].to(device)


def _holders(model: nn.Module, wanted: set[int]) -> list[tuple[nn.Module, str, nn.Parameter]]:
    """Every (module, attribute) that holds one of the wanted Parameters, under every name."""
    found = []
    for _, module in model.named_modules(remove_duplicate=False):
        for attr, param in module.named_parameters(recurse=False, remove_duplicate=False):
            if id(param) in wanted:
                found.append((module, attr, param))
    return found


def _configs(model: nn.Module) -> list[tuple[str, Any]]:
    """(label, config) for the model config, its text config when nested, and the generation config."""
    found: list[tuple[str, Any]] = []
    config = getattr(model, "config", None)
    if config is not None:
        found.append(("config", config))
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        if text is not config:
            found.append(("config.text_config", text))
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        found.append(("generation_config", generation))
    return found


def _id_fields(config: Any) -> dict[str, Any]:
    fields = config.to_dict() if hasattr(config, "to_dict") else vars(config)
    return {name: getattr(config, name, None) for name in fields if is_id_field(name)}


def _special_id_updates(model: nn.Module, inverse: torch.Tensor, size: int, explicit: Mapping[str, TokenIds] | None,
                        ) -> tuple[list[tuple[Any, str, Any]], list[str]]:
    """(config, field, new value) for every token id in the configs, and a warning per id that becomes None.

    Nothing is set here, so that a later check can still refuse the whole remap.
    """
    explicit = normalize_special_ids(dict(explicit or {}), size)
    old_size = inverse.numel()
    dropped: list[str] = []

    def new_id(label: str, name: str, old: int) -> int | None:
        mapped = int(inverse[old]) if 0 <= old < old_size else -1
        if mapped >= 0:
            return mapped
        why = "was already outside the source vocabulary" if not 0 <= old < old_size else "is dropped by id_map"
        dropped.append(f"{label}.{name}: token {old} {why}; setting it to None")
        return None

    updates: list[tuple[Any, str, Any]] = []
    seen: set[int] = set()
    for label, config in _configs(model):
        if id(config) in seen:
            continue
        seen.add(id(config))
        fields = _id_fields(config)
        for name, value in explicit.items():
            if label != "generation_config" or hasattr(config, name):
                updates.append((config, name, list(value) if isinstance(value, (list, tuple)) else value))
        for name, value in fields.items():
            if name in explicit or not is_token_ids(value):
                continue
            if isinstance(value, int):
                updates.append((config, name, new_id(label, name, value)))
            else:
                mapped = [m for v in value if (m := new_id(label, name, v)) is not None]
                keep_empty = name in EXTRA_ID_FIELDS or not value
                updates.append((config, name, mapped if mapped or keep_empty else None))
    return updates, dropped


def _check_position_pad(model: nn.Module, updates: list[tuple[Any, str, Any]]) -> None:
    """RoBERTa-style models number positions from ``pad_token_id + 1``: the pad id must not move."""
    config = getattr(model, "config", None)
    new_pad = [v for c, name, v in updates if name == "pad_token_id" and c is config]
    if not new_pad:
        return
    for path, module in model.named_modules():
        old = getattr(module, "padding_idx", None)
        if isinstance(module, nn.Embedding) or not isinstance(old, int) or not hasattr(module, "position_embeddings"):
            continue
        if new_pad[0] != old:
            moved = "drops the pad token" if new_pad[0] is None else f"moves the pad token to {new_pad[0]}"
            raise ModelError(f"{type(model).__name__} numbers positions from pad_token_id ({path}.padding_idx = "
                             f"{old}) and the id_map {moved}, which would shift every position embedding",
                             hint=f"keep the pad token at new id {old}")


def _new_padding_idx(embeddings: nn.Module, inverse: torch.Tensor) -> int | None:
    old = getattr(embeddings, "padding_idx", None)
    if old is None:
        return None
    new = int(inverse[old]) if 0 <= old < inverse.numel() else -1
    return None if new < 0 else new


def _warn_unhandled(model: nn.Module, layout: EmbeddingLayout) -> None:
    """Name tensors that look vocabulary-sized but are not rewritten (e.g. BART's final_logits_bias buffer)."""
    handled = {layout.input_weight, layout.output_weight, layout.output_bias, *layout.other_vocab_params}
    handled_ids = {id(model.get_parameter(p)) for p in handled if p is not None}
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    odd = [name for name, t in named
           if id(t) not in handled_ids and layout.vocab_size in t.shape and layout.vocab_size > 1]
    if odd:
        log.warning("%s: %s have a dimension of the vocabulary size %d and are left as they are",
                    type(model).__name__, ", ".join(odd), layout.vocab_size)


def _set_module_vocab_sizes(model: nn.Module, old_size: int, size: int) -> None:
    """transformers models keep ``vocab_size`` on the module too (e.g. ``LlamaForCausalLM.vocab_size``)."""
    for module in model.modules():
        value = getattr(module, "vocab_size", None)
        if hasattr(module, "config") and isinstance(value, int) and value == old_size:
            module.vocab_size = size


def _apply_config(model: nn.Module, size: int, updates: list[tuple[Any, str, Any]]) -> None:
    for label, config in _configs(model):
        if label != "generation_config" and hasattr(config, "vocab_size"):
            config.vocab_size = size
    for config, name, value in updates:
        setattr(config, name, value)

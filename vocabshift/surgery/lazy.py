"""Memory-lean vocabulary surgery on safetensors checkpoints, without instantiating the model.

Pruning a 7B model should need memory on the order of its embedding matrices, not of the whole model.
The plan comes from the model built on the *meta* device (no storage): :func:`locate` names the
vocabulary-sized tensors (and their aliases: tied heads, BERT's two bias names) and
:func:`remap_vocab` rewrites the config and generation config exactly as the in-memory path does.
The weights are then streamed shard by shard, tensor by tensor: a vocabulary-sized tensor is
remapped a chunk of rows at a time (kept rows copied bit for bit, new and padding rows the mean);
every other tensor is copied as raw bytes in chunks, never materialised. Output shards keep the source sharding.

safetensors layout (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length,
a JSON header ``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}``, then the
tensor bytes; offsets are relative to the end of the header. The ``safetensors`` library has no
streaming writer, so the header and byte stream are written here and read back with it in the tests.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vocabshift.errors import ModelError
from vocabshift.surgery.layout import locate
from vocabshift.surgery.resize import mean_row, plan_rows, remap_row_blocks, remap_vocab
from vocabshift.surgery.safetensors_io import (  # noqa: F401  (re-exported: the lean path's public helpers)
    _CHUNK,
    _DAMAGED,
    _DTYPE_BITS,
    MAX_HEADER_BYTES,
    ROWS_PER_CHUNK,
    _read_exact,
    _read_header,
    _tensor_span,
    can_stream,
    check_safetensors,
    check_safetensors_file,
    safetensors_files,
)

log = logging.getLogger(__name__)

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def meta_model(directory: Path) -> Any:
    """The checkpoint's model class built on the meta device (no storage): plans edits, counts parameters."""
    from transformers import AutoConfig, GenerationConfig

    from vocabshift.safe_loading import LOAD_KWARGS, refuse_remote_code
    from vocabshift.surgery.checkpoint import model_class_for

    refuse_remote_code(directory)
    config = AutoConfig.from_pretrained(str(directory), **LOAD_KWARGS)
    cls = model_class_for(config)
    with torch.device("meta"):
        model = cls.from_config(config) if hasattr(cls, "from_config") and cls.__name__.startswith("Auto") \
            else cls(config)
    if (directory / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(str(directory), **LOAD_KWARGS)
    return model


def read_vocab_tensors(source_dir: str | Path, model: Any = None) -> dict[str, torch.Tensor]:
    """The vocabulary-sized tensors of a safetensors checkpoint (input embeddings, untied head, output
    bias), keyed by the model's parameter names (:func:`locate`'s), in the checkpoint's dtype.

    Reads only those tensors, not the model: what a method that computes new rows needs. A tensor may be
    stored under another name of the same parameter (BERT keeps ``cls.predictions.bias``, which
    ``cls.predictions.decoder.bias`` aliases). ``model``: the checkpoint's :func:`meta_model`, when the
    caller has it.
    """
    from safetensors import safe_open

    source_dir = Path(source_dir)
    model = meta_model(source_dir) if model is None else model
    layout = locate(model, allow_meta=True)
    wanted = [n for n in (layout.input_weight, layout.output_weight, layout.output_bias) if n is not None]
    if layout.tied and layout.output_weight is not None:
        wanted.remove(layout.output_weight)
    names = [n for n in (layout.input_weight, layout.output_weight, layout.output_bias, *layout.other_vocab_params)
             if n is not None]
    aliases = {w: [w] + [n for n in names if n != w and model.get_parameter(n) is model.get_parameter(w)]
               for w in wanted}
    out: dict[str, torch.Tensor] = {}
    for path in check_safetensors(source_dir):
        with safe_open(str(path), framework="pt") as f:
            stored = set(f.keys())
            for w in wanted:
                hit = next((n for n in aliases[w] if n in stored), None)
                if w not in out and hit is not None:
                    out[w] = f.get_tensor(hit)
    missing = [w for w in wanted if w not in out]
    if missing:
        raise ModelError(f"the checkpoint has no tensor named {missing[0]!r}", path=source_dir,
                         hint="re-save it with save_pretrained, or use the in-memory path")
    if layout.tied and layout.output_weight is not None:
        out[layout.output_weight] = out[layout.input_weight]
    return out


def save_configs(out_dir: Path, config: Any, generation_config: Any = None) -> None:
    """``save_pretrained`` of the config (and generation config) into ``out_dir``, each file appearing whole:
    written in a hidden folder inside ``out_dir`` and renamed into place. prune's tokenizer thread reloads
    ``out_dir`` with AutoTokenizer meanwhile, which reads config.json (a CI run once caught it half written
    on the header path, where :func:`~vocabshift.surgery.row_prune.prune_rows` writes its dicts with
    :func:`~vocabshift.outputs.write_text_atomic`). save_pretrained itself writes in place, hence the folder."""
    import tempfile

    out_dir = Path(out_dir)
    scratch = Path(tempfile.mkdtemp(prefix=".configs-", dir=out_dir))
    try:
        for item in (config, generation_config):
            if item is not None:
                item.save_pretrained(str(scratch))
        for written in sorted(scratch.iterdir()):
            written.replace(out_dir / written.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remap_checkpoint(source_dir: str | Path, out_dir: str | Path, id_map: Sequence[int],
                     pad_to_multiple_of: int | None = None, *, new_rows: torch.Tensor | None = None,
                     new_output_rows: torch.Tensor | None = None, new_bias: torch.Tensor | None = None,
                     special_token_ids: dict[str, Any] | None = None, model: Any = None) -> dict[str, Any]:
    """Write ``source_dir``'s checkpoint with the vocabulary of ``id_map`` into ``out_dir`` (which exists).

    ``new_rows`` / ``new_output_rows`` / ``new_bias`` and ``special_token_ids`` mean what they mean for
    :func:`remap_vocab` (the rows of the ``-1`` entries, in order; the mean when not given); tensors that
    get computed rows are remapped whole in memory (the same code as the in-memory path, so the same
    bytes), in the checkpoint's dtype. ``model``: the checkpoint's :func:`meta_model` when the caller built
    one already (it is remapped in place). Returns a small report (class, tie status, sizes). Raises
    :class:`ModelError` when the checkpoint has no safetensors weights or its tensor names do not match
    the model's parameters.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    files = check_safetensors(source_dir)  # every shard, before anything is written
    if not files:
        raise ModelError("no safetensors weights to edit lazily", path=source_dir,
                         hint="the in-memory path handles .bin and GGUF checkpoints")
    model = meta_model(source_dir) if model is None else model
    before = locate(model, allow_meta=True)
    vocab_names = {before.input_weight, before.output_weight, before.output_bias, *before.other_vocab_params}
    vocab_names.discard(None)
    parameters_before = sum(p.numel() for p in model.parameters())
    _check_vocab_rows(files, model, vocab_names, source_dir)
    # The fill of every vocabulary-sized name (aliases share their Parameter on the meta model too).
    fill_of: dict[int, torch.Tensor | None] = {id(model.get_parameter(before.input_weight)): new_rows}
    if before.output_weight is not None and not before.tied:
        fill_of[id(model.get_parameter(before.output_weight))] = new_output_rows
    if before.output_bias is not None:
        fill_of[id(model.get_parameter(before.output_bias))] = new_bias
    fills = {name: fill_of.get(id(model.get_parameter(name)), new_bias) for name in vocab_names}
    # Config and shapes; also validates the given rows' shapes (on the meta copies it makes).
    remap_vocab(model, id_map, pad_to_multiple_of=pad_to_multiple_of, allow_meta=True, new_rows=new_rows,
                new_output_rows=new_output_rows, new_bias=new_bias, special_token_ids=special_token_ids)
    plan = plan_rows(id_map, before.vocab_size, pad_to_multiple_of)

    found: set[str] = set()
    total = 0
    for path in files:
        total += _rewrite_file(path, out_dir / path.name, vocab_names, plan, found,
                               {n: f for n, f in fills.items() if f is not None})
    if before.input_weight not in found:
        raise ModelError(f"the checkpoint has no tensor named {before.input_weight!r}, which "
                         f"{type(model).__name__} keeps its input embeddings in", path=source_dir,
                         hint="re-save it with save_pretrained, or use the in-memory path")
    index = source_dir / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total
        (out_dir / index.name).write_text(json.dumps(data, indent=2))
    save_configs(out_dir, model.config,
                 model.generation_config if (source_dir / "generation_config.json").exists() else None)
    for extra in ("README.md",):
        if (source_dir / extra).exists():
            shutil.copy2(source_dir / extra, out_dir / extra)
    after = locate(model, allow_meta=True)
    return {"class": type(model).__name__, "tied": after.tied, "vocab_size": after.vocab_size,
            "parameters_before": parameters_before, "parameters_after": sum(p.numel() for p in model.parameters()),
            "tensors_rewritten": sorted(found)}


def _check_vocab_rows(files: list[Path], model: Any, vocab_names: set[str], source_dir: Path) -> None:
    """Refuse vocabulary tensors whose rows disagree with the model config (``vocab_size``), before writing.

    The in-memory path refuses such a checkpoint when it loads it; streaming it would write a model
    whose config and weights disagree.
    """
    for path in files:
        header, _ = _read_header(path)
        for name in sorted(vocab_names & header.keys()):
            shape = header[name].get("shape") or [None]
            expected = model.get_parameter(name).shape[0]
            if shape[0] != expected:
                raise ModelError(f"{name} has {shape[0]} rows but config.json (vocab_size) makes it {expected}",
                                 path=source_dir, hint="set vocab_size in config.json to the number of embedding "
                                 "rows (or re-save the model with save_pretrained)")


def _rewrite_file(src: Path, dst: Path, vocab_names: set[str], plan: Any, found: set[str],
                  fills: dict[str, torch.Tensor] | None = None) -> int:
    """Stream one shard; returns the bytes of tensor data written. ``fills``: computed new rows by name."""
    fills = fills or {}
    header, data_start = _read_header(src)
    metadata = header.pop("__metadata__", None)
    names = sorted(header, key=lambda n: header[n]["data_offsets"][0])  # keep the source's byte order
    size = plan[3]
    new_header: dict[str, Any] = {} if metadata is None else {"__metadata__": metadata}
    offset = 0
    for name in names:
        info = header[name]
        begin, end = info["data_offsets"]
        if name in vocab_names:
            nbytes = (end - begin) // info["shape"][0] * size
            new_header[name] = {"dtype": info["dtype"], "shape": [size, *info["shape"][1:]],
                                "data_offsets": [offset, offset + nbytes]}
            found.add(name)
        else:
            nbytes = end - begin
            new_header[name] = {**info, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(new_header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(struct.pack("<Q", len(blob)))
        fout.write(blob)
        for name in names:
            info = header[name]
            begin, end = info["data_offsets"]
            if name in fills:
                _write_filled_tensor(fin, data_start + begin, info, plan, fills[name], fout)
            elif name in vocab_names:
                _write_vocab_tensor(fin, data_start + begin, info, plan, fout)
            else:
                fin.seek(data_start + begin)
                for start in range(begin, end, _CHUNK):
                    fout.write(_read_exact(fin, min(_CHUNK, end - start)))
    return offset


def _write_bytes(fout: Any, t: torch.Tensor) -> None:
    fout.write(memoryview(t.contiguous().view(torch.uint8).numpy()))


def _write_filled_tensor(fin: Any, base: int, info: dict[str, Any], plan: Any, fill: torch.Tensor,
                         fout: Any) -> None:
    """Write a vocabulary-sized tensor whose new rows are ``fill``: read whole, remapped as in memory, written a
    block at a time."""
    dtype = _DTYPES[info["dtype"]]
    fin.seek(base)
    old = torch.frombuffer(bytearray(_read_exact(fin, info["data_offsets"][1] - info["data_offsets"][0])),
                           dtype=dtype).reshape(info["shape"])
    for block in remap_row_blocks(old, plan, fill.to(dtype)):
        _write_bytes(fout, block)


def _write_vocab_tensor(fin: Any, base: int, info: dict[str, Any], plan: Any, fout: Any) -> None:
    """Write a vocabulary-sized tensor remapped by ``plan``, reading its rows in chunks from the file.

    Peak memory is a chunk of rows, not the matrix: ``ROWS_PER_CHUNK`` output rows at a time, read as
    one span of source rows when the chunk is dense, else as runs of consecutive rows; new and padding rows are the mean row, computed in
    a first streamed pass with the same chunking as the in-memory path.
    """
    keep_pos, kept_src, new_pos, size = plan
    dtype = _DTYPES[info["dtype"]]
    n_rows, row_shape = info["shape"][0], info["shape"][1:]
    row_bytes = (info["data_offsets"][1] - info["data_offsets"][0]) // n_rows

    def read_rows(a: int, b: int) -> torch.Tensor:
        fin.seek(base + a * row_bytes)
        return torch.frombuffer(bytearray(_read_exact(fin, (b - a) * row_bytes)), dtype=dtype).reshape(b - a, *row_shape)

    n_kept = keep_pos.numel()
    if n_kept and int(keep_pos[-1]) != n_kept - 1:  # kept rows not a prefix: rare, do it whole
        for block in remap_row_blocks(read_rows(0, n_rows), plan):
            _write_bytes(fout, block)
        return
    src = kept_src.numpy()
    for a in range(0, n_kept, ROWS_PER_CHUNK):
        ids = src[a:a + ROWS_PER_CHUNK]
        lo, hi = int(ids.min()), int(ids.max()) + 1
        if hi - lo <= 2 * len(ids):  # dense (pruning keeps most rows): one read, then select
            _write_bytes(fout, read_rows(lo, hi).index_select(0, torch.from_numpy(ids - lo)))
        else:  # sparse: read the runs of consecutive source rows
            runs = np.split(ids, np.flatnonzero(np.diff(ids) != 1) + 1)
            _write_bytes(fout, torch.cat([read_rows(int(r[0]), int(r[-1]) + 1) for r in runs]))
    if size > n_kept:
        mean = mean_row(read_rows, n_rows, dtype)
        for a in range(n_kept, size, ROWS_PER_CHUNK):
            _write_bytes(fout, mean.expand(min(ROWS_PER_CHUNK, size - a), *row_shape))

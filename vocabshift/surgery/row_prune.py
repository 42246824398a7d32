"""Pruning a decoder checkpoint from its safetensors headers and config files, without torch.

Pruning only selects rows: every vocabulary-sized tensor keeps the rows of the kept ids, in order, and
nothing is computed. For the decoder families in :data:`SUPPORTED` the vocabulary-sized tensors are
``model.embed_tokens.weight`` and, untied, ``lm_head.weight``, so the plan needs no model: the
headers name the tensors, ``config.json`` and ``generation_config.json`` hold the ids to renumber.
:func:`vocabshift.vocabulary.prune` then imports neither torch nor transformers' modeling code (about
5 s of CPU on a 2-core machine, most of a 262k-token Gemma-3 prune) and copies rows as bytes, so any
dtype stays bit-identical; tensors that do not change are copied by the kernel (``copy_file_range``).

Everything else takes the general path (:func:`vocabshift.surgery.lazy.remap_checkpoint`, the model on
the meta device): another architecture, a nested text config, another tensor with a vocabulary-sized
dimension, padding to a multiple, new rows. :func:`plan` says which, and why, in the log. The output
is the general path's: the same tensor bytes and header, and configs that load to the same values (a
test compares both paths on every supported family).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocabshift.errors import IdMapError
from vocabshift.outputs import write_text_atomic
from vocabshift.surgery.safetensors_io import _read_header, check_safetensors

log = logging.getLogger(__name__)

EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"
# Decoder classes whose only vocabulary-sized parameters are EMBED and HEAD, with the special-token ids
# their config classes default to when config.json leaves them out (tests/test_row_prune.py checks these
# against transformers' own defaults, so that a change there fails a test, not a user's model).
SUPPORTED: dict[str, dict[str, int | None]] = {
    "LlamaForCausalLM": {"pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2},
    "MistralForCausalLM": {"pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2},
    "Qwen2ForCausalLM": {"pad_token_id": None, "bos_token_id": None, "eos_token_id": None},
    "Qwen3ForCausalLM": {"pad_token_id": None, "bos_token_id": None, "eos_token_id": None},
    "GemmaForCausalLM": {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1},
    "Gemma2ForCausalLM": {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1},
    "Gemma3ForCausalLM": {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1},
}
# Their config classes' tie_word_embeddings default (tested against transformers too)
TIED_BY_DEFAULT = {"LlamaForCausalLM": False, "MistralForCausalLM": False, "Qwen2ForCausalLM": False,
                   "Qwen3ForCausalLM": False, "GemmaForCausalLM": True, "Gemma2ForCausalLM": True,
                   "Gemma3ForCausalLM": True}
# The token-id attributes every GenerationConfig has (None unless set): an explicit id is set on these even
# when generation_config.json leaves them out, as on the model path
GENERATION_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
# Config fields that hold token ids besides *_token_id(s); resize.remap_vocab renumbers the same fields
EXTRA_ID_FIELDS = ("suppress_tokens", "begin_suppress_tokens")
_COPY_CHUNK = 1 << 30  # bytes per copy_file_range call
# Bytes of kept rows selected per read. Large: on its thread every read or write gives the GIL back to
# the tokenizer work, and getting it again can take a switch interval (5 ms), so fewer calls go faster.
CHUNK_BYTES = 64 << 20


@dataclass
class RowPrunePlan:
    """What :func:`prune_rows` writes: the kept rows, the shards and the configs with renumbered ids."""

    architecture: str
    id_map: list[int]
    old_size: int
    files: list[Path]
    parameters: int  # elements of every stored tensor of the source (HeaderLayout.parameters)
    config: dict[str, Any]  # config.json, vocab_size and ids renumbered
    generation_config: dict[str, Any] | None  # generation_config.json, ids renumbered (None: the source has none)
    dropped: list[str]  # special ids whose token is dropped (set to None), as warnings


def is_id_field(name: str) -> bool:
    """Whether a config field holds token ids (both surgery paths renumber these)."""
    return name.endswith(("_token_id", "_token_ids")) or name in EXTRA_ID_FIELDS


def is_token_ids(value: Any) -> bool:
    """An id or a list of ids (not a bool, not None)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def normalize_special_ids(explicit: dict[str, Any] | None, size: int) -> dict[str, Any]:
    """``special_token_ids`` with names as config fields (``pad`` -> ``pad_token_id``), each value checked
    to be None, an id or a list of ids of the new vocabulary; raises :class:`IdMapError` otherwise."""
    out = {name if is_id_field(name) else f"{name}_token_id": value for name, value in (explicit or {}).items()}
    for name, value in out.items():
        values = [] if value is None else [value] if isinstance(value, int) else list(value)
        if not all(isinstance(v, int) and 0 <= v < size for v in values):
            raise IdMapError(f"special_token_ids[{name!r}] = {value!r} is not an id of the new vocabulary "
                             f"(0..{size - 1})")
    return out


def _renumber(label: str, data: dict[str, Any], inverse: dict[int, int], old_size: int,
              dropped: list[str], skip: Sequence[str] = ()) -> dict[str, Any]:
    """``data`` with every token-id field renumbered as :func:`~vocabshift.surgery.resize.remap_vocab`
    does: a dropped token's id becomes None (a list drops it; an emptied list becomes None). Fields in
    ``skip`` (set explicitly by the caller) are left as they are."""

    def new_id(name: str, old: int) -> int | None:
        if old in inverse:
            return inverse[old]
        why = "was already outside the source vocabulary" if not 0 <= old < old_size else "is dropped by id_map"
        dropped.append(f"{label}.{name}: token {old} {why}; setting it to None")
        return None

    out = dict(data)
    for name, value in data.items():
        if not is_id_field(name) or not is_token_ids(value) or name in skip:
            continue
        if isinstance(value, int):
            out[name] = new_id(name, value)
        else:
            mapped = [m for v in value if (m := new_id(name, v)) is not None]
            out[name] = mapped if mapped or name in EXTRA_ID_FIELDS or not value else None
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class HeaderLayout:
    """A supported decoder's vocabulary tensors, read from its headers and config.json alone."""

    architecture: str
    vocab_size: int
    files: list[Path]
    config: dict[str, Any]  # config.json as written
    has_head: bool  # lm_head.weight is stored (untied); else the head is the input embeddings
    parameters: int  # elements of every stored tensor

    @property
    def tied(self) -> bool:
        return not self.has_head

    @property
    def config_ties(self) -> bool:
        """``tie_word_embeddings`` as transformers reads it (the class default when config.json has none)."""
        return bool(self.config.get("tie_word_embeddings", TIED_BY_DEFAULT[self.architecture]))

    def config_fields(self) -> dict[str, Any]:
        """config.json with the class's default special-token ids where it leaves them out."""
        defaults = {k: v for k, v in SUPPORTED[self.architecture].items() if k not in self.config}
        return {**self.config, **defaults}


def header_layout(source_dir: str | Path) -> HeaderLayout | None:
    """The :class:`HeaderLayout` of ``source_dir``, or None (with the reason logged) when the checkpoint
    needs the general path: another architecture, a nested text config, custom code, or a tensor with a
    vocabulary-sized dimension other than the embeddings and the head."""
    source_dir = Path(source_dir)

    def general(why: str) -> None:
        log.debug("%s: the general (meta-model) path: %s", source_dir, why)

    config = _read_json(source_dir / "config.json")
    architectures = (config or {}).get("architectures")
    if config is None or not isinstance(architectures, list) or len(architectures) != 1 \
            or architectures[0] not in SUPPORTED:
        return general(f"architecture {architectures!r} is not one of {', '.join(SUPPORTED)}")
    if "text_config" in config or config.get("auto_map") or config.get("trust_remote_code"):
        return general("a nested text config or custom code")
    size = config.get("vocab_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return general("config.json has no vocab_size")
    files = check_safetensors(source_dir)
    if not files:
        return general("no safetensors weights")
    vocab_sized: set[str] = set()
    parameters = 0
    for path in files:
        header, _ = _read_header(path)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            parameters += math.prod(info["shape"])
            if size not in info["shape"]:
                continue
            if name not in (EMBED, HEAD) or len(info["shape"]) != 2 or info["shape"][0] != size:
                return general(f"tensor {name!r} {info['shape']} has a dimension of the vocabulary size")
            vocab_sized.add(name)
    if EMBED not in vocab_sized:
        return general(f"no {EMBED} of {size} rows")
    if (source_dir / "generation_config.json").exists() and _read_json(source_dir / "generation_config.json") is None:
        return general("generation_config.json is not a JSON object")
    return HeaderLayout(architecture=architectures[0], vocab_size=size, files=files, config=config,
                        has_head=HEAD in vocab_sized, parameters=parameters)


def plan(source_dir: str | Path, id_map: Sequence[int], pad_to_multiple_of: int | None = None) -> RowPrunePlan | None:
    """The plan for pruning ``source_dir`` to ``id_map`` without a model, or None (with the reason logged)
    when the checkpoint needs the general path. ``id_map``: kept source ids, increasing, no ``-1``."""
    source_dir = Path(source_dir)
    ids = list(id_map)
    if pad_to_multiple_of is not None or not ids or ids[0] < 0 \
            or any(b <= a for a, b in zip(ids, ids[1:], strict=False)):
        log.debug("%s: the general (meta-model) path: padding, or not increasing kept ids", source_dir)
        return None
    layout = header_layout(source_dir)
    if layout is None or ids[-1] >= layout.vocab_size:
        return None
    old_size = layout.vocab_size
    inverse = {old: new for new, old in enumerate(ids)}
    dropped: list[str] = []
    new_config = _renumber("config", layout.config_fields(), inverse, old_size, dropped)
    new_config["vocab_size"] = len(ids)
    generation = _read_json(source_dir / "generation_config.json")
    new_generation = None if generation is None else _renumber("generation_config", generation, inverse, old_size,
                                                               dropped)
    return RowPrunePlan(architecture=layout.architecture, id_map=ids, old_size=old_size, files=layout.files,
                        parameters=layout.parameters, config=new_config, generation_config=new_generation, dropped=dropped)


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _copy_range(src: int, dst: int, offset: int, length: int) -> None:
    """``length`` bytes of ``src`` from ``offset`` appended to ``dst``: in the kernel where it can."""
    while length > 0:
        try:
            n = os.copy_file_range(src, dst, min(length, _COPY_CHUNK), offset)
        except (AttributeError, OSError):  # no copy_file_range here (another OS, filesystem or kernel)
            n = 0
        if n <= 0:
            data = os.pread(src, min(length, 64 << 20), offset)
            if not data:
                raise OSError(f"unexpected end of file at byte {offset}")
            _write_all(dst, data)
            n = len(data)
        offset += n
        length -= n


def _read_into(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            raise OSError(f"unexpected end of file at byte {offset}")
        view, offset = view[n:], offset + n


def _writev_all(fd: int, views: list[memoryview]) -> None:
    limit = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
    for a in range(0, len(views), limit):
        batch = views[a:a + limit]
        written = os.writev(fd, batch)
        if written < sum(len(v) for v in batch):  # a short write: the rest, one view at a time
            for v in batch:
                part = v[min(written, len(v)):]
                written = max(0, written - len(v))
                _write_all(fd, part)


def _copy_rows(src: int, dst: int, base: int, row_bytes: int, ids: Any) -> None:
    """The rows ``ids`` (increasing) of a matrix at ``base`` of ``src``, appended to ``dst`` as bytes.

    Each run of consecutive kept rows is one slice of a block read into a reused buffer, and a block's
    slices go out in one ``writev``: no copy in Python, and the GIL is held only to list the slices.
    """
    import numpy as np

    cuts = np.flatnonzero(np.diff(ids) != 1) + 1
    starts = np.concatenate(([0], cuts)) if len(ids) else np.zeros(0, dtype=np.int64)
    run_first = ids[starts].tolist()
    run_len = np.diff(np.append(starts, len(ids))).tolist()
    rows_per_block = max(1, CHUNK_BYTES // max(1, row_bytes))
    span = int(ids[-1]) - int(ids[0]) + 1 if len(ids) else 1
    buffer = memoryview(bytearray(min(rows_per_block, span) * row_bytes))
    i = 0
    while i < len(run_first):
        lo = run_first[i]
        views_rows: list[tuple[int, int]] = []
        while i < len(run_first) and run_first[i] - lo < rows_per_block:
            n = min(run_len[i], lo + rows_per_block - run_first[i])  # a run that crosses the block is cut
            views_rows.append((run_first[i] - lo, n))
            if n < run_len[i]:
                run_first[i] += n
                run_len[i] -= n
                break
            i += 1
        hi = views_rows[-1][0] + views_rows[-1][1]
        _read_into(src, buffer[:hi * row_bytes], base + lo * row_bytes)
        _writev_all(dst, [buffer[a * row_bytes:(a + n) * row_bytes] for a, n in views_rows])


VocabWriter = Callable[[str, int, int, int, dict[str, Any]], None]  # (name, src fd, dst fd, data start, header entry)


def _rewrite_shards(source_dir: Path, out_dir: Path, files: list[Path], size: int,
                    write_vocab: VocabWriter) -> tuple[int, set[str]]:
    """Every shard with EMBED/HEAD resized to ``size`` rows by ``write_vocab`` and the rest copied; the
    index too. The header is built as the general path builds it (same bytes). Returns (parameters
    after, vocabulary tensors found)."""
    after, total = 0, 0
    found: set[str] = set()
    for path in files:
        header, data_start = _read_header(path)
        metadata = header.pop("__metadata__", None)
        names = sorted(header, key=lambda n: header[n]["data_offsets"][0])  # the source's byte order
        new_header: dict[str, Any] = {} if metadata is None else {"__metadata__": metadata}
        offset = 0
        for name in names:
            info = header[name]
            begin, end = info["data_offsets"]
            if name in (EMBED, HEAD):
                nbytes = (end - begin) // info["shape"][0] * size
                new_header[name] = {"dtype": info["dtype"], "shape": [size, *info["shape"][1:]],
                                    "data_offsets": [offset, offset + nbytes]}
                found.add(name)
                after += math.prod(info["shape"][1:]) * size
            else:
                nbytes = end - begin
                new_header[name] = {**info, "data_offsets": [offset, offset + nbytes]}
                after += math.prod(info["shape"])
            offset += nbytes
        total += offset
        blob = json.dumps(new_header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment
        src = os.open(path, os.O_RDONLY)
        try:
            dst = os.open(out_dir / path.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                _write_all(dst, struct.pack("<Q", len(blob)) + blob)
                run: list[int] = []  # the byte span of consecutive unchanged tensors: copied in one call
                for name in [*names, None]:
                    if name is not None and name not in (EMBED, HEAD):
                        begin, end = header[name]["data_offsets"]
                        run = [run[0] if run else begin, end]
                        continue
                    if run:
                        _copy_range(src, dst, data_start + run[0], run[1] - run[0])
                        run = []
                    if name is not None:
                        write_vocab(name, src, dst, data_start, header[name])
            finally:
                os.close(dst)
        finally:
            os.close(src)
    index = source_dir / "model.safetensors.index.json"
    if index.exists():
        data = json.loads(index.read_text())
        data.setdefault("metadata", {})["total_size"] = total
        (out_dir / index.name).write_text(json.dumps(data, indent=2))
    if (source_dir / "README.md").exists():
        shutil.copy2(source_dir / "README.md", out_dir / "README.md")
    return after, found


def _write_configs(out_dir: Path, config: dict[str, Any], generation: dict[str, Any] | None) -> None:
    # Written whole (a hidden file renamed into place): prune's tokenizer thread reloads the output folder
    # with AutoTokenizer meanwhile, which reads config.json.
    write_text_atomic(out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    if generation is not None:
        write_text_atomic(out_dir / "generation_config.json", json.dumps(generation, indent=2, sort_keys=True) + "\n")


def prune_rows(source_dir: str | Path, out_dir: str | Path, row_plan: RowPrunePlan) -> dict[str, Any]:
    """Write the pruned checkpoint of ``row_plan`` into ``out_dir`` (which exists); returns the report that
    :func:`~vocabshift.surgery.lazy.remap_checkpoint` returns."""
    import numpy as np

    source_dir, out_dir = Path(source_dir), Path(out_dir)
    ids = np.asarray(row_plan.id_map, dtype=np.int64)

    def write_vocab(name: str, src: int, dst: int, data_start: int, info: dict[str, Any]) -> None:
        begin, end = info["data_offsets"]
        _copy_rows(src, dst, data_start + begin, (end - begin) // info["shape"][0], ids)

    after, found = _rewrite_shards(source_dir, out_dir, row_plan.files, len(ids), write_vocab)
    _write_configs(out_dir, row_plan.config, row_plan.generation_config)
    for message in row_plan.dropped:
        log.warning("%s", message)
    log.info("pruned %s's rows without a model: %d -> %d tokens (%s)", row_plan.architecture, row_plan.old_size,
             len(ids), ", ".join(sorted(found)))
    return {"class": row_plan.architecture, "tied": HEAD not in found, "vocab_size": len(ids),
            "parameters_before": row_plan.parameters, "parameters_after": after, "tensors_rewritten": sorted(found)}


def read_vocab_rows(source_dir: str | Path, layout: HeaderLayout) -> dict[str, Any]:
    """EMBED (and HEAD when stored) as torch tensors in the checkpoint's dtype."""
    from safetensors import safe_open

    out: dict[str, Any] = {}
    for path in layout.files:
        with safe_open(str(path), framework="pt") as f:
            for name in (EMBED, HEAD):
                if name in f.keys():  # noqa: SIM118  (safe_open has keys(), not __contains__)
                    out[name] = f.get_tensor(name)
    return out


def remap_from_headers(source_dir: str | Path, out_dir: str | Path, layout: HeaderLayout, id_map: Sequence[int], *,
                       new_rows: Any = None, new_output_rows: Any = None,
                       special_token_ids: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`~vocabshift.surgery.lazy.remap_checkpoint` for a :class:`HeaderLayout` checkpoint without the
    meta model or transformers' config classes: the same tensor bytes (rows by
    :func:`~vocabshift.surgery.resize.remap_row_blocks`, the code every path shares) and configs that load to the
    same values (renumbered on the JSON, as :func:`plan` does; explicit ``special_token_ids`` set as
    :func:`~vocabshift.surgery.resize.remap_vocab` sets them). No padding: callers that pad take the general
    path."""
    import torch

    from vocabshift.surgery.lazy import _DTYPES
    from vocabshift.surgery.resize import plan_rows, remap_row_blocks

    source_dir, out_dir = Path(source_dir), Path(out_dir)
    old_size = layout.vocab_size
    row_plan = plan_rows(id_map, old_size, None)
    _, _, new_pos, size = row_plan
    explicit = normalize_special_ids(special_token_ids, size)
    inverse: dict[int, int] = {}  # as remap_vocab: the first new id of each source id
    for new, old in enumerate(id_map):
        if old >= 0:
            inverse.setdefault(old, new)
    dropped: list[str] = []
    config = _renumber("config", layout.config_fields(), inverse, old_size, dropped, skip=tuple(explicit))
    config["vocab_size"] = size
    generation = _read_json(source_dir / "generation_config.json")
    if generation is not None:
        generation = _renumber("generation_config", generation, inverse, old_size, dropped, skip=tuple(explicit))
    for name, value in explicit.items():
        value = list(value) if isinstance(value, (list, tuple)) else value
        config[name] = value
        if generation is not None and (name in generation or name in GENERATION_ID_FIELDS):
            generation[name] = value
    fills = {EMBED: new_rows, HEAD: new_output_rows if layout.has_head else None}

    def write_vocab(name: str, src: int, dst: int, data_start: int, info: dict[str, Any]) -> None:
        begin, end = info["data_offsets"]
        data = bytearray(end - begin)
        _read_into(src, memoryview(data), data_start + begin)
        dtype = _DTYPES[info["dtype"]]
        old = torch.frombuffer(data, dtype=dtype).reshape(info["shape"])
        fill = fills[name]
        for block in remap_row_blocks(old, row_plan, None if fill is None else fill.to(dtype)):
            _write_all(dst, block.view(torch.uint8).numpy())

    after, found = _rewrite_shards(source_dir, out_dir, layout.files, size, write_vocab)
    for message in dropped:
        log.warning(message)
    _write_configs(out_dir, config, generation)
    log.info("remapped %s from its headers: %d -> %d tokens (%d new)", layout.architecture, old_size, size,
             new_pos.numel())
    return {"class": layout.architecture, "tied": layout.tied, "vocab_size": size,
            "parameters_before": layout.parameters, "parameters_after": after, "tensors_rewritten": sorted(found)}

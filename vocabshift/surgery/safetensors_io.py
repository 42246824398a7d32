"""safetensors files read without torch: shards of a checkpoint, headers checked against the file.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length, a JSON
header ``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}``, then the tensor
bytes; offsets are relative to the end of the header. Every size is checked before it is used, so a
damaged file fails with one :class:`ModelError` naming it. Torch-free: the lean pruning path
(:mod:`vocabshift.surgery.row_prune`) uses it without importing torch.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from vocabshift.errors import ModelError

_CHUNK = 64 << 20  # bytes copied per read for tensors that do not change
ROWS_PER_CHUNK = 8192  # vocabulary rows remapped per step
# Bits per element of every dtype the format names (what a header's sizes are checked against).
_DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
               "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "I64": 64, "U64": 64,
               "F64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses larger headers too
_DAMAGED = "the file is damaged or incomplete: download or save the model again"


def safetensors_files(directory: Path) -> list[Path]:
    """The checkpoint's safetensors shards (from the index when sharded); every shard the index names exists."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ModelError(f"not a safetensors index (no readable weight_map: {type(err).__name__}: {err})",
                             path=index, hint=_DAMAGED) from err
        for name in names:  # a shard is a file in this directory, nothing else
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise ModelError(f"the weight_map names {name!r}, which is not a file name in this directory",
                                 path=index, hint=_DAMAGED)
        missing = [name for name in names if not (directory / name).is_file()]
        if missing:
            raise ModelError(f"the weight_map names {len(missing)} shard(s) that are missing: "
                             f"{', '.join(missing[:3])}", path=index, hint=_DAMAGED)
        return [directory / name for name in names]
    single = directory / "model.safetensors"
    return [single] if single.exists() else []


def check_safetensors(directory: str | Path) -> list[Path]:
    """Check every safetensors file of a model directory (index, shards, headers, sizes) before any tensor
    is read; returns the shards. Raises :class:`ModelError` naming the file at fault."""
    files = safetensors_files(Path(directory))
    for path in files:
        _read_header(path)
    return files


def check_safetensors_file(path: Path) -> None:
    """Check one safetensors file (a training checkpoint's tensors) as :func:`check_safetensors` does."""
    if not Path(path).is_file():
        raise ModelError("missing", path=path, hint=_DAMAGED)
    _read_header(Path(path))


def can_stream(source: str | Path) -> bool:
    """Whether ``source`` is a model directory with safetensors weights: what the lean path edits."""
    return Path(source).is_dir() and bool(safetensors_files(Path(source)))


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and where its data starts, checked against the file.

    Every size is checked before it is used to read: the header length against the file and
    :data:`MAX_HEADER_BYTES`, each tensor's dtype, shape and ``data_offsets`` (contiguous, no holes, as
    the format requires), and the file's size against ``8 + header + data``. So a truncated, padded or
    random file fails here with one :class:`ModelError` naming it, not later in a read loop.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size < 8:
                raise ModelError(f"truncated: expected at least 8 bytes (the header length), found {size}",
                                 path=path, hint=_DAMAGED)
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES:
                raise ModelError(f"not a safetensors file: its header length field says {n} bytes (more than "
                                 f"{MAX_HEADER_BYTES})", path=path, hint=_DAMAGED)
            if 8 + n > size:
                raise ModelError(f"truncated: expected at least {8 + n} bytes (the header), found {size}",
                                 path=path, hint=_DAMAGED)
            raw = f.read(n)
    except OSError as err:
        raise ModelError(f"cannot read it ({err.strerror or err})", path=path) from err
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise ModelError(f"not a safetensors file: its header is not JSON ({err})"[:300], path=path,
                         hint=_DAMAGED) from err
    if not isinstance(header, dict):
        raise ModelError("not a safetensors file: its header is not a JSON object", path=path, hint=_DAMAGED)
    spans = sorted((_tensor_span(path, name, info), name) for name, info in header.items() if name != "__metadata__")
    end = 0
    for (begin, stop), name in spans:
        if begin != end:  # the format has no holes and no overlaps
            raise ModelError(f"tensor {name!r} starts at byte {begin} of the data, expected {end}", path=path,
                             hint=_DAMAGED)
        end = stop
    if size != 8 + n + end:
        problem = "truncated" if size < 8 + n + end else "size mismatch"
        raise ModelError(f"{problem}: expected {8 + n + end} bytes, found {size}", path=path, hint=_DAMAGED)
    return header, 8 + n


def _tensor_span(path: Path, name: str, info: Any) -> tuple[int, int]:
    """``data_offsets`` of one header entry, after checking them against its dtype and shape."""
    ok = (isinstance(info, dict) and info.get("dtype") in _DTYPE_BITS and isinstance(info.get("shape"), list)
          and all(type(d) is int and d >= 0 for d in info["shape"])
          and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
          and all(type(o) is int and o >= 0 for o in info["data_offsets"]))
    if not ok:
        raise ModelError(f"tensor {name!r} has no valid dtype, shape and data_offsets in the header "
                         f"({json.dumps(info)[:120]})", path=path, hint=_DAMAGED)
    begin, end = info["data_offsets"]
    bits = math.prod(info["shape"]) * _DTYPE_BITS[info["dtype"]]
    if end < begin or (end - begin) * 8 != bits:
        raise ModelError(f"tensor {name!r} ({info['dtype']} {info['shape']}) needs {bits / 8:g} bytes, its "
                         f"data_offsets {info['data_offsets']} span {end - begin}", path=path, hint=_DAMAGED)
    return begin, end


def _read_exact(fin: Any, n: int) -> bytes:
    """``n`` bytes from ``fin``'s position; a short read (the file shrank after its header was checked)
    raises instead of being read again forever."""
    data = fin.read(n)
    if len(data) != n:
        at = fin.tell()
        raise ModelError(f"truncated: expected at least {at - len(data) + n} bytes, found "
                         f"{os.fstat(fin.fileno()).st_size}", path=fin.name, hint=_DAMAGED)
    return data

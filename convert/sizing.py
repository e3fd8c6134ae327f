"""The HAT config around a Llama: the byte modules' sizes (presets, the `auto` rule) and parameter counts.

    PRESETS, RELEASE_8B_SIZES                        # `release-8b`: the 8B release's byte modules
    auto_sizes(backbone, ...)                        # `auto`: new modules ~3% of the parameters
    parameter_counts(config)                         # per top-level module, on the meta device
    hat_config_from_llama(llama_config, preset="auto", **sizes)   # the HAT config around a Llama

No weights and no files here (ARCHITECTURE.md §6).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import LlamaConfig

from hat.causal_lm import HATForCausalLM
from hat.config import HATConfig, release_sub_configs
from hat.model.parts import new_modules

from .table import BACKBONE, ConversionError

PRESETS = ("auto", "release-8b")
# Llama-3.1-8B-TFree-HAT (ARCHITECTURE.md §6). Keys are `release_sub_configs` arguments and the CLI's overrides.
RELEASE_8B_SIZES = dict(
    hidden_size=1024, encoder_layers=6, decoder_layers=4, num_heads=8, intermediate_size=2816, sliding_window=768
)
# In the 8B release the new modules are 213M of 7.19B parameters: 2.96%.
AUTO_NEW_FRACTION = 0.03
# ... but never narrower than this: on SmolLM2 (width 576), byte modules of width 256 beat the 3% rule's 128 by
# 0.16-0.24 held-out bits per byte at 100 teacher-guided steps (BENCHMARKS.md, "Conversion ablations"; single-run
# noise ~0.1): at small widths the byte modules are capacity-bound.
AUTO_MIN_WIDTH = 256


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
        _check_llama_sizes(config, where)
        try:
            config = LlamaConfig.from_dict({k: v for k, v in config.items() if k != "quantization_config"})
        except (ValueError, TypeError, ZeroDivisionError) as e:
            raise ConversionError(f"{where}: not a valid Llama config ({type(e).__name__}: {e})") from e
    if not isinstance(config, LlamaConfig):
        raise ConversionError(f"{where}: expected a LlamaConfig, got {type(config).__name__}")
    _check_llama_sizes(config.to_dict(), where)
    if getattr(config, "attention_bias", False):
        raise ConversionError(f"{where}: attention_bias=True is not representable in the HAT checkpoint schema")
    return config


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_llama_sizes(config: dict[str, Any], where: str) -> None:
    """The sizes a Llama's blocks need: positive integers, attention heads that divide the width and are a multiple
    of the key/value heads."""
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        if not _positive_int(config.get(key)):
            raise ConversionError(f"{where}: {key} is {config.get(key)!r}; a Llama needs a positive integer")
    for key in ("num_key_value_heads", "head_dim", "max_position_embeddings"):
        if config.get(key) is not None and not _positive_int(config[key]):
            raise ConversionError(f"{where}: {key} is {config[key]!r}; a Llama needs a positive integer (or none)")
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    if heads % kv_heads:
        raise ConversionError(f"{where}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads "
                              f"({kv_heads})")
    if config.get("head_dim") is None and config["hidden_size"] % heads:
        raise ConversionError(f"{where}: hidden_size ({config['hidden_size']}) is not a multiple of "
                              f"num_attention_heads ({heads}) and no head_dim is given")


def _check_byte_sizes(sizes: dict[str, Any]) -> None:
    """The byte encoder/decoder sizes: positive integers; heads that divide the width into even head sizes (RoPE)."""
    for key, value in sizes.items():
        if not _positive_int(value):
            raise ConversionError(f"--{key.replace('_', '-')} {value!r}: the byte sizes must be positive integers")
    width, heads = sizes.get("hidden_size"), sizes.get("num_heads")
    if width is not None and heads is not None and (width % heads or (width // heads) % 2):
        raise ConversionError(f"--hidden-size {width} / --num-heads {heads}: the byte width must split into heads "
                              "of one even size (RoPE rotates pairs)")


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
    """Parameters per on-disk top-level module (`backbone` plus `hat.model.parts.NEW_PARTS`), counted on the meta device
    (with one backbone layer, multiplied out, so that the `auto` search stays fast for 70B)."""
    shallow = copy.deepcopy(config)
    shallow.backbone_config.num_hidden_layers = 1
    with torch.device("meta"):
        model = HATForCausalLM(shallow)
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in new_modules(model).items()}
    layer = sum(p.numel() for p in model.get_submodule(BACKBONE.memory).layers[0].parameters())
    return {BACKBONE.disk: layer * config.backbone_config.num_hidden_layers, **counts}


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
    (the 8B release's own ratio is 2.96%), and at least `AUTO_MIN_WIDTH` (256, or the backbone's width if that
    is smaller), as measured on SmolLM2. Llama-3.1-8B gets the release's 1024; SmolLM2-135M (width 576, head size
    64) gets 256 (4 heads; the 3% rule alone gives 128). Any size given explicitly is kept and the others follow.
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
        new = sum(v for name, v in counts.items() if name != BACKBONE.disk)
        return new / (new + counts[BACKBONE.disk])

    # The fraction grows with the width: bisect for the first multiple at or above the target, then take
    # whichever of it and the one below is nearer.
    lo, hi = 1, max(1, backbone["hidden_size"] // head_dim)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if fraction(mid) < AUTO_NEW_FRACTION else (lo, mid)
    if lo > 1 and abs(fraction(lo - 1) - AUTO_NEW_FRACTION) < abs(fraction(lo) - AUTO_NEW_FRACTION):
        lo -= 1
    floor = min(-(-AUTO_MIN_WIDTH // head_dim), max(1, backbone["hidden_size"] // head_dim))  # in heads
    return sizes(max(lo, floor) * head_dim)


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
    _check_byte_sizes(sizes)
    if preset not in PRESETS:
        raise ConversionError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    try:
        sizes = {**RELEASE_8B_SIZES, **sizes} if preset == "release-8b" else auto_sizes(backbone, **sizes)
        _check_byte_sizes(sizes)
        config = HATConfig(**release_sub_configs(backbone, **sizes), sliding_window=sizes["sliding_window"])
    except ConversionError:
        raise
    except ValueError as e:
        raise ConversionError(
            f"byte sizes {sizes} (preset {preset!r}) do not fit a backbone of width {backbone['hidden_size']}: {e}"
        ) from e
    positions = config.encoder_config.max_position_embeddings
    if sizes["sliding_window"] > positions:
        raise ConversionError(f"--sliding-window {sizes['sliding_window']} is longer than the byte stacks' "
                              f"max_position_embeddings ({positions})")
    config.architectures = ["HATForCausalLM"]
    return config

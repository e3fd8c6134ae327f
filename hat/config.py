"""`HATConfig`: the configuration of a hierarchical autoregressive transformer (ARCHITECTURE.md §4).

The layout is that of the released Llama-3.1-8B/70B-TFree-HAT `config.json`:

    {
      "model_type": "hierarchical_autoregressive_transformer",
      "encoder_config":  {Llama-like fields, "cross_attention_config": {...}},   # bytes -> words
      "backbone_config": {Llama 3.1 fields, "vocab_size": 0},                    # words -> words
      "decoder_config":  {Llama-like fields, "cross_attention_config": {...},
                          "cross_attn_every_layer": true},                       # words -> bytes
      "special_token_dict": {"<|eot_id|>": 192}, "max_word_size": 100,
      "sliding_window": 768, "max_position_embeddings": ...
    }

In memory each sub-config is a real `LlamaConfig` (so transformers' Llama layers and rotary embeddings take
them as they are); `to_dict` writes the release's field names (`rope_scaling` / `rope_theta`, the eight
`cross_attention_config` keys) so that the release's own loader reads our checkpoints too.

Every check runs when the config is built and raises a `ValueError` naming the values. Fields written in two
places agree: the top-level `sliding_window` (what the release's vLLM fork reads) is the encoder's and decoder's
window. Release options this toolkit does not implement are refused, not ignored: QK-norm in the self-attention
layers (`key_query_norm` of a sub-config), interleaved RoPE (`is_neox_style: false`), a backbone sliding window and
pooling over more than one word (`word_window_size` other than 1).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from transformers import LlamaConfig, PreTrainedConfig

from .remote_code import CONFIG_AUTO_MAP, write_code_files
from .special_tokens import BYTE_VOCAB_SIZE, DEFAULT_SPECIAL_TOKEN_DICT, EOT_TOKEN, validate_special_token_dict
from .splitter import DEFAULT_MAX_WORD_SIZE

MODEL_TYPE = "hierarchical_autoregressive_transformer"
SUB_CONFIGS = ("encoder_config", "backbone_config", "decoder_config")

# Fields of a sub-config as the release writes them, in its order.
_RELEASE_SUBCONFIG_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "rms_norm_eps", "intermediate_size", "max_position_embeddings", "rope_scaling", "rope_theta",
    "mlp_bias", "use_cache", "sliding_window", "key_query_norm", "key_query_norm_per_head",
    "is_neox_style", "hidden_act", "head_dim",
)
# Sizes a sub-config must give (the release's loader requires them too); all must be ints >= 1.
_REQUIRED_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")
# Top-level sizes that transformers' utilities read, derived from the sub-configs (not written to config.json).
_DERIVED = {
    "vocab_size": "the byte vocabulary (decoder_config.vocab_size)",
    "hidden_size": "backbone_config.hidden_size",
    "num_hidden_layers": "backbone_config.num_hidden_layers",
}


def _check_positive(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be an int >= 1, got {value!r}")


@dataclass
class CrossAttentionConfig:
    """Sizes of a cross-attention block (encoder connector or decoder); key names are the release's.

    `hidden_size` is the attention width (heads x head_dim); queries come from `hidden_size_q` and keys/values
    from `hidden_size_kv`; the output projects back to `hidden_size_q`. `word_window_size` is how many words' bytes
    a word's query pools over: 1 (its own), the only value implemented (and the release's). `key_query_norm`
    (RMSNorm on queries and keys, over each head if `key_query_norm_per_head`) is implemented.
    """

    hidden_size: int
    hidden_size_q: int
    hidden_size_kv: int
    num_attention_heads: int
    attention_num_kv_heads: int
    word_window_size: int = 1
    key_query_norm: bool = False
    key_query_norm_per_head: bool = False

    @classmethod
    def from_any(cls, value: CrossAttentionConfig | dict[str, Any]) -> CrossAttentionConfig:
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"cross_attention_config must be a dict, got {type(value).__name__} {value!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"cross_attention_config has unknown keys {sorted(unknown)}; expected {sorted(known)}")
        missing = [f.name for f in fields(cls)[:5] if f.name not in value]
        if missing:
            raise ValueError(f"cross_attention_config has no {missing}; got {dict(value)}")
        return cls(**value)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self, where: str) -> None:
        where = f"{where}.cross_attention_config"
        for name in ("hidden_size", "hidden_size_q", "hidden_size_kv", "num_attention_heads", "attention_num_kv_heads"):
            _check_positive(f"{where}.{name}", getattr(self, name))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"{where}: hidden_size ({self.hidden_size}) is not a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_attention_heads % self.attention_num_kv_heads:
            raise ValueError(
                f"{where}: num_attention_heads ({self.num_attention_heads}) is not a "
                f"multiple of attention_num_kv_heads ({self.attention_num_kv_heads})"
            )
        if self.word_window_size != 1 or isinstance(self.word_window_size, bool):
            raise ValueError(
                f"{where}.word_window_size is {self.word_window_size!r}: only 1 is implemented (each word's query "
                "attends to its own bytes, as in the release)"
            )
        for name in ("key_query_norm", "key_query_norm_per_head"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{where}.{name} must be true or false, got {getattr(self, name)!r}")

    to_dict = asdict


def _check_sub_config(get: Callable[[str], Any], where: str) -> None:
    """Checks on a sub-config's raw values (`get(key)`, None when absent), before `LlamaConfig` sees them."""
    for key in _REQUIRED_SIZES:
        if get(key) is None:
            raise ValueError(f"{where} has no {key}")
        _check_positive(f"{where}.{key}", get(key))
    if get("head_dim") is not None:
        _check_positive(f"{where}.head_dim", get("head_dim"))
    # Flags of the release's self-attention layers that these layers (transformers' LlamaDecoderLayer) do not have.
    if get("key_query_norm"):
        raise ValueError(
            f"{where}.key_query_norm is {get('key_query_norm')!r}: QK-norm in the self-attention layers is not "
            "implemented (it is only in the cross-attention, cross_attention_config.key_query_norm)"
        )
    if get("is_neox_style") is not None and get("is_neox_style") is not True:
        raise ValueError(
            f"{where}.is_neox_style is {get('is_neox_style')!r}: only true (Llama's rotate-half RoPE) is "
            "implemented, not interleaved (GPT-J style) RoPE"
        )


def _llama_kwargs(d: dict[str, Any]) -> dict[str, Any]:
    """A release sub-config dict -> `LlamaConfig` kwargs (the HAT-only keys are handled by the caller)."""
    d = {k: v for k, v in d.items() if k not in ("cross_attention_config", "cross_attn_every_layer", "transformers_version")}
    # The release writes `rope_scaling` (null for plain RoPE) next to `rope_theta`; transformers 5 folds both
    # into `rope_parameters`.
    if "rope_parameters" not in d:
        rope = dict(d.pop("rope_scaling", None) or {"rope_type": "default"})
        rope.setdefault("rope_type", rope.pop("type", "default"))
        rope["rope_theta"] = d.pop("rope_theta", 500000.0)
        d["rope_parameters"] = rope
    else:
        d.pop("rope_scaling", None), d.pop("rope_theta", None)
    d.pop("is_neox_style", None)  # checked to be True: Llama's RoPE
    return d


def make_sub_config(d: dict[str, Any] | LlamaConfig, *, role: str) -> LlamaConfig:
    """Build the `LlamaConfig` for one component (`role` is "encoder", "backbone" or "decoder").

    Raises:
        `ValueError`: for a missing or non-positive size, or a release option that is not implemented.
    """
    where = f"{role}_config"
    if isinstance(d, LlamaConfig):
        _check_sub_config(lambda key: getattr(d, key, None), where)
        return d
    if not isinstance(d, Mapping):
        raise ValueError(f"{where} must be a dict or a LlamaConfig, got {type(d).__name__} {d!r}")
    d = dict(d)
    _check_sub_config(d.get, where)
    cross = d.get("cross_attention_config")
    if role == "backbone":
        d.setdefault("vocab_size", 0)  # no token embedding (a non-zero value is refused in `validate_hat`)
    # Token ids belong to the HAT config; sub-configs have none (Llama's defaults would not fit vocab_size 0).
    cfg = LlamaConfig(**{"bos_token_id": None, "eos_token_id": None, "pad_token_id": None, **_llama_kwargs(d)})
    cfg.key_query_norm = bool(d.get("key_query_norm", False))
    cfg.key_query_norm_per_head = bool(d.get("key_query_norm_per_head", False))  # only read with key_query_norm
    if role in ("encoder", "decoder"):
        if cross is None:
            raise ValueError(f"{role}_config needs a cross_attention_config")
        cfg.cross_attention_config = CrossAttentionConfig.from_any(cross)
    if role == "decoder":
        cfg.cross_attn_every_layer = bool(d.get("cross_attn_every_layer", True))
    return cfg


def sub_config_to_release_dict(cfg: LlamaConfig) -> dict[str, Any]:
    """The inverse of `make_sub_config`: a dict in the release's schema."""
    rope = dict(cfg.rope_parameters or {})
    rope_theta = rope.pop("rope_theta", 500000.0)
    rope_scaling = rope if rope.get("rope_type", "default") != "default" else None
    out = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "rms_norm_eps": cfg.rms_norm_eps,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_scaling": rope_scaling,
        "rope_theta": rope_theta,
        "mlp_bias": cfg.mlp_bias,
        "use_cache": cfg.use_cache,
        "sliding_window": getattr(cfg, "sliding_window", None),
        "key_query_norm": getattr(cfg, "key_query_norm", False),
        "key_query_norm_per_head": getattr(cfg, "key_query_norm_per_head", False),
        "is_neox_style": True,  # the only value accepted
        "hidden_act": cfg.hidden_act,
        "head_dim": cfg.head_dim,
    }
    assert tuple(out) == _RELEASE_SUBCONFIG_KEYS
    if hasattr(cfg, "cross_attention_config"):
        out["cross_attention_config"] = cfg.cross_attention_config.to_dict()
    if hasattr(cfg, "cross_attn_every_layer"):
        out["cross_attn_every_layer"] = cfg.cross_attn_every_layer
    return out


class HATConfig(PreTrainedConfig):
    r"""Configuration of [`HATForCausalLM`].

    Args:
        encoder_config (`dict` or `LlamaConfig`): byte encoder (Llama layers over bytes, sliding window) and,
            in its `cross_attention_config`, the encoder connector that pools each word's bytes.
        backbone_config (`dict` or `LlamaConfig`): the Llama 3.1 blocks, run over words (`vocab_size` 0).
        decoder_config (`dict` or `LlamaConfig`): byte decoder; its `cross_attention_config` conditions each
            word's bytes on the backbone's prediction for that word.
        special_token_dict (`dict[str, int]`): special strings and the byte value each one takes (the rule:
            `hat.special_tokens.validate_special_token_dict`). Defaults to `{"<|eot_id|>": 192}`.
        max_word_size (`int`): words longer than this many bytes are cut into chunks.
        sliding_window (`int`, *optional*): byte attention window of encoder and decoder. Derived from their
            sub-configs (which must agree) when not given; checked against them when given.
        sliding_window_extra_key (`bool`): a byte attends to itself and the `sliding_window` bytes before it
            (W + 1 keys), as the release's HF code computes on transformers 4.46's flash-attention path; by default
            (`False`) to itself and the `sliding_window - 1` before it (W keys), as the release's vLLM fork and
            transformers' own masks do (ARCHITECTURE.md §3.2). Written to `config.json` only when true.
        max_position_embeddings (`int`): longest byte sequence.
        eos_token_id (`int` or `list[int]`, *optional*): defaults to the byte of `<|eot_id|>`; must be special bytes.
        pad_token_id (`int`, *optional*): a byte value.

    The three sub-configs come together: give all of them, or none, in which case `HATConfig()` is
    `HATConfig.tiny()` (for code that builds a config without arguments); a partial set is refused. `vocab_size`
    (256 bytes), `hidden_size` and `num_hidden_layers` (the backbone's) are read-only, derived from the
    sub-configs, for transformers' and DeepSpeed's utilities; they are not written to `config.json`.

    Raises:
        `ValueError`: naming the inconsistent or unsupported values.
    """

    model_type = MODEL_TYPE
    sub_configs = {"encoder_config": LlamaConfig, "backbone_config": LlamaConfig, "decoder_config": LlamaConfig}

    def __init__(
        self,
        encoder_config: dict | LlamaConfig | None = None,
        backbone_config: dict | LlamaConfig | None = None,
        decoder_config: dict | LlamaConfig | None = None,
        special_token_dict: dict[str, int] | None = None,
        max_word_size: int = DEFAULT_MAX_WORD_SIZE,
        sliding_window: int | None = None,
        sliding_window_extra_key: bool = False,
        max_position_embeddings: int = 262144,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        **kwargs,
    ):
        given = {"encoder_config": encoder_config, "backbone_config": backbone_config, "decoder_config": decoder_config}
        if all(c is None for c in given.values()):
            given = _tiny_sub_configs()
        missing = [name for name, c in given.items() if c is None]
        if missing:
            raise ValueError(
                f"HATConfig needs all of {list(SUB_CONFIGS)}; {missing} missing (a full config comes from "
                "HATConfig.release_8b(), HATConfig.tiny(), hat.config.release_sub_configs or convert-llama)"
            )
        self.encoder_config = make_sub_config(given["encoder_config"], role="encoder")
        self.backbone_config = make_sub_config(given["backbone_config"], role="backbone")
        self.decoder_config = make_sub_config(given["decoder_config"], role="decoder")
        self.special_token_dict = validate_special_token_dict(
            DEFAULT_SPECIAL_TOKEN_DICT if special_token_dict is None else special_token_dict
        )
        self.max_word_size = max_word_size
        self.sliding_window = self.encoder_config.sliding_window if sliding_window is None else sliding_window
        self.sliding_window_extra_key = sliding_window_extra_key
        self.max_position_embeddings = max_position_embeddings
        if eos_token_id is None:
            eos_token_id = self.special_token_dict[EOT_TOKEN]
        # Sizes derived from the sub-configs (properties below): a value given too must agree.
        for name in ("vocab_size", "hidden_size", "num_hidden_layers"):
            value = kwargs.pop(name, None)
            if value is not None and value != getattr(self, name):
                raise ValueError(f"{name} ({value!r}) must be {getattr(self, name)}, {_DERIVED[name]}")
        # The release's `auto_map` names its own code files (config.py, model.py), `torch_dtype` is for its vLLM fork.
        for key in ("auto_map", "torch_dtype"):
            kwargs.pop(key, None)
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)
        # Ours: the code files every save writes (`hat.remote_code`), for `trust_remote_code=True` without `hat`.
        self.auto_map = dict(CONFIG_AUTO_MAP)
        self.validate_hat()

    # ------------------------------------------------------------------ derived sizes
    @property
    def vocab_size(self) -> int:
        """`int`: 256, the byte vocabulary (the decoder's `lm_head` output)."""
        return self.decoder_config.vocab_size

    @property
    def hidden_size(self) -> int:
        """`int`: the backbone's width (the model's size; DeepSpeed's "auto" bucket sizes read it)."""
        return self.backbone_config.hidden_size

    @property
    def num_hidden_layers(self) -> int:
        """`int`: the backbone's layers (encoder and decoder have their own, in their sub-configs)."""
        return self.backbone_config.num_hidden_layers

    @property
    def special_byte_values(self) -> frozenset[int]:
        return frozenset(self.special_token_dict.values())

    # ------------------------------------------------------------------ checks
    def validate_hat(self) -> None:
        """Raise a `ValueError` naming the first inconsistent value (also run before saving)."""
        enc, bb, dec = self.encoder_config, self.backbone_config, self.decoder_config
        for name, cfg in (("encoder_config", enc), ("backbone_config", bb), ("decoder_config", dec)):
            _check_sub_config(lambda key: getattr(cfg, key, None), name)
        for name, cfg in (("encoder_config", enc), ("decoder_config", dec)):
            if cfg.vocab_size != BYTE_VOCAB_SIZE:
                raise ValueError(f"{name}.vocab_size must be {BYTE_VOCAB_SIZE} (bytes), got {cfg.vocab_size}")
            if isinstance(cfg.sliding_window, bool) or not isinstance(cfg.sliding_window, int) or cfg.sliding_window < 1:
                raise ValueError(f"{name}.sliding_window must be a positive int, got {cfg.sliding_window}")
            cfg.cross_attention_config.validate(name)
        if bb.vocab_size != 0:
            raise ValueError(f"backbone_config.vocab_size must be 0 (the backbone reads words), got {bb.vocab_size}")
        if getattr(bb, "sliding_window", None) is not None:
            raise ValueError(
                f"backbone_config.sliding_window is {bb.sliding_window}: a sliding window over words is not "
                "implemented (the backbone attends to every earlier word); use null"
            )
        if enc.sliding_window != dec.sliding_window:
            raise ValueError(
                f"encoder_config.sliding_window ({enc.sliding_window}) and decoder_config.sliding_window "
                f"({dec.sliding_window}) must be equal: the release's vLLM fork reads one top-level sliding_window"
            )
        if not isinstance(self.sliding_window_extra_key, bool):
            raise ValueError(f"sliding_window_extra_key must be true or false, got {self.sliding_window_extra_key!r}")
        if self.sliding_window != enc.sliding_window:
            raise ValueError(
                f"sliding_window ({self.sliding_window!r}) must equal encoder_config.sliding_window and "
                f"decoder_config.sliding_window ({enc.sliding_window}); leave it out to derive it"
            )
        for name, cfg in (("encoder_config", enc), ("backbone_config", bb), ("decoder_config", dec)):
            if cfg.num_attention_heads % cfg.num_key_value_heads:
                raise ValueError(
                    f"{name}: num_attention_heads ({cfg.num_attention_heads}) is not a multiple of "
                    f"num_key_value_heads ({cfg.num_key_value_heads})"
                )
        ec, dc = enc.cross_attention_config, dec.cross_attention_config
        checks = [
            ("encoder_config.cross_attention_config.hidden_size_q", ec.hidden_size_q, "backbone hidden_size", bb.hidden_size),
            ("encoder_config.cross_attention_config.hidden_size_kv", ec.hidden_size_kv, "encoder hidden_size", enc.hidden_size),
            ("decoder_config.cross_attention_config.hidden_size_q", dc.hidden_size_q, "decoder hidden_size", dec.hidden_size),
            ("decoder_config.cross_attention_config.hidden_size_kv", dc.hidden_size_kv, "backbone hidden_size", bb.hidden_size),
            ("decoder_config.hidden_size", dec.hidden_size, "encoder hidden_size", enc.hidden_size),
        ]
        for name, value, other, expected in checks:
            if value != expected:
                raise ValueError(f"{name} ({value}) must equal the {other} ({expected})")
        if ec.head_dim % 2 or dc.head_dim % 2:
            raise ValueError(f"cross-attention head_dim must be even for RoPE, got {ec.head_dim} and {dc.head_dim}")
        _check_positive("max_word_size", self.max_word_size)
        _check_positive("max_position_embeddings", self.max_position_embeddings)
        validate_special_token_dict(self.special_token_dict)
        eos = self.eos_token_id if isinstance(self.eos_token_id, (list, tuple)) else [self.eos_token_id]
        if not eos or any(e not in self.special_byte_values or isinstance(e, bool) for e in eos):
            raise ValueError(
                f"eos_token_id ({self.eos_token_id!r}) must be the byte value(s) of special tokens "
                f"{self.special_token_dict}"
            )
        if self.pad_token_id is not None and (
            isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < 256
        ):
            raise ValueError(f"pad_token_id must be a byte value (0-255) or None, got {self.pad_token_id!r}")

    # ------------------------------------------------------------- (de)serialise
    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        self.validate_hat()  # what we write agrees with itself (e.g. after a sub-config was changed in place)
        write_code_files(save_directory)  # what `auto_map` names, written first so that a push uploads it too
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["encoder_config"] = sub_config_to_release_dict(self.encoder_config)
        out["backbone_config"] = sub_config_to_release_dict(self.backbone_config)
        out["decoder_config"] = sub_config_to_release_dict(self.decoder_config)
        out["model_type"] = MODEL_TYPE
        out["auto_map"] = dict(CONFIG_AUTO_MAP)
        if not out.get("sliding_window_extra_key"):  # the default: config.json keeps the release's keys
            out.pop("sliding_window_extra_key", None)
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        # The release's loader needs every field, so we always write the full dict.
        return self.to_dict()

    # --------------------------------------------------------------- presets
    @classmethod
    def release_8b(cls, **kwargs) -> HATConfig:
        """The sizes of Llama-3.1-8B-TFree-HAT (7,192,495,104 parameters)."""
        backbone = dict(
            vocab_size=0, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
            intermediate_size=14336, rms_norm_eps=1e-5, max_position_embeddings=131072, rope_theta=500000.0,
            rope_scaling=_LLAMA31_ROPE_SCALING, mlp_bias=False,
        )
        return cls(**release_sub_configs(backbone), **kwargs)

    @classmethod
    def tiny(cls, **kwargs) -> HATConfig:
        """A few-thousand-parameter model for tests: every code path, Llama 3.1 shapes (GQA, llama3 RoPE)."""
        return cls(**_tiny_sub_configs(), **kwargs)


_LLAMA31_ROPE_SCALING = {
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def release_sub_configs(
    backbone: dict[str, Any],
    *,
    hidden_size: int = 1024,
    encoder_layers: int = 6,
    decoder_layers: int = 4,
    num_heads: int = 8,
    intermediate_size: int = 2816,
    sliding_window: int = 768,
    max_position_embeddings: int = 262144,
    rms_norm_eps: float = 1e-5,
) -> dict[str, dict[str, Any]]:
    """Encoder and decoder sub-configs around a given backbone, in the release's layout.

    The defaults are the 8B release's sizes. The encoder connector attends with the backbone's head size
    (`backbone.hidden_size / backbone heads` heads), the decoder's cross-attention with the byte width.
    """
    for name, value in (("hidden_size", hidden_size), ("encoder_layers", encoder_layers),
                        ("decoder_layers", decoder_layers), ("num_heads", num_heads),
                        ("intermediate_size", intermediate_size), ("sliding_window", sliding_window)):
        _check_positive(name, value)
    _check_positive("backbone hidden_size", backbone.get("hidden_size"))
    bb_width = backbone["hidden_size"]
    head_dim = hidden_size // num_heads
    common = dict(
        vocab_size=BYTE_VOCAB_SIZE, hidden_size=hidden_size, num_attention_heads=num_heads,
        num_key_value_heads=num_heads, intermediate_size=intermediate_size, rms_norm_eps=rms_norm_eps,
        max_position_embeddings=max_position_embeddings, rope_theta=500000.0, rope_scaling=None, mlp_bias=False,
        sliding_window=sliding_window, head_dim=head_dim,
    )
    if bb_width % head_dim:
        raise ValueError(f"backbone hidden_size ({bb_width}) must be a multiple of the byte head_dim ({head_dim})")
    encoder = dict(
        common, num_hidden_layers=encoder_layers,
        cross_attention_config=dict(
            hidden_size=bb_width, hidden_size_q=bb_width, hidden_size_kv=hidden_size,
            num_attention_heads=bb_width // head_dim, attention_num_kv_heads=bb_width // head_dim,
        ),
    )
    decoder = dict(
        common, num_hidden_layers=decoder_layers, cross_attn_every_layer=True,
        cross_attention_config=dict(
            hidden_size=hidden_size, hidden_size_q=hidden_size, hidden_size_kv=bb_width,
            num_attention_heads=num_heads, attention_num_kv_heads=num_heads,
        ),
    )
    backbone = dict(backbone, vocab_size=0)
    return {"encoder_config": encoder, "backbone_config": backbone, "decoder_config": decoder}


def _tiny_sub_configs() -> dict[str, dict[str, Any]]:
    backbone = dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, intermediate_size=128,
        rms_norm_eps=1e-5, max_position_embeddings=131072, rope_theta=500000.0,
        rope_scaling=copy.deepcopy(_LLAMA31_ROPE_SCALING), mlp_bias=False,
    )
    return release_sub_configs(
        backbone, hidden_size=32, encoder_layers=2, decoder_layers=2, num_heads=2, intermediate_size=64,
        sliding_window=16, max_position_embeddings=4096,
    )

"""The key table of the conversion: Llama's tensor names -> HAT's on-disk names (ARCHITECTURE.md §6).

    LLAMA_TO_HAT         source key with `{}` for the layer index -> HAT on-disk key
    DROPPED              the source tensors a byte model has no use for
    hat_key(llama_key)   one key through the table; an unknown key is an error, never skipped

A strict loop over a checkpoint calls `hat_key` on every tensor: each is either renamed or explicitly dropped.
"""

from __future__ import annotations

import re

from hat.model.parts import PARTS


class ConversionError(ValueError):
    """Bad input to a conversion. The message names the file or value and the problem; nothing was written."""


# The one part a conversion takes from the Llama (`hat.model.parts`); every kept tensor lands under its name.
BACKBONE = next(part for part in PARTS if part.from_llama)

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

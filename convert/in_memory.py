"""Llama -> HAT in memory: `hat_from_llama(llama)` holds both models at once (tests, evals, small models).

Large checkpoints stream instead (`hat.convert.checkpoint`); both use the same table, sizes and init.
"""

from __future__ import annotations

import torch
from transformers import LlamaForCausalLM

from hat.causal_lm import HATForCausalLM
from hat.model.parts import disk_name, is_backbone

from .init import embedding_rms_of, init_new_modules
from .sizing import hat_config_from_llama
from .table import ConversionError, hat_key


@torch.no_grad()
def hat_from_llama(llama: LlamaForCausalLM, preset: str = "auto", seed: int = 0, **overrides) -> HATForCausalLM:
    """Convert a `LlamaForCausalLM` in memory (same dtype); the new modules get `init_new_modules(model, seed,
    embedding_rms_of(llama's token embedding))`.

    Holds both models at once: for tests, evals and small models. Large checkpoints: `hat.convert.checkpoint.convert_checkpoint`.
    """
    from transformers.initialization import no_init_weights

    config = hat_config_from_llama(llama.config, preset, **overrides)
    with no_init_weights():  # every parameter is written below
        model = HATForCausalLM(config)
    dtype = llama.model.layers[0].self_attn.q_proj.weight.dtype
    model.to(dtype)
    init_new_modules(model, seed, embedding_rms_of(llama.model.embed_tokens.weight))
    config.dtype = dtype
    state = model.state_dict()
    targets = {disk_name(k): v for k, v in state.items()}
    expected = {disk_name(k) for k in state if is_backbone(k)}
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

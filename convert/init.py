"""The new modules' initial weights: everything a conversion creates (`hat.model.parts.NEW_PARTS`), seeded.

    init_new_modules(model, seed)              # in place, on a built `HATForCausalLM`
    build_new_modules(config, dtype, seed)     # the same tensors by on-disk name, without building the backbone

One rule for every conversion (in memory and streaming): the same seed gives the same weights (ARCHITECTURE.md §6).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from hat.causal_lm import HATForCausalLM
from hat.config import HATConfig
from hat.model.decoder import HATDecoderConnector
from hat.model.parts import new_modules
from hat.model.pooling import HATEncoderConnector


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


def build_new_modules(config: HATConfig, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
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

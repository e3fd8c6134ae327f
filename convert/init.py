"""The new modules' initial weights: everything a conversion creates (`hat.model.parts.NEW_PARTS`), seeded.

    init_new_modules(model, seed, embedding_rms)              # in place, on a built `HATForCausalLM`
    build_new_modules(config, dtype, seed, embedding_rms)     # the same tensors by on-disk name, no backbone

One rule for every conversion (in memory and streaming): the same seed gives the same weights (ARCHITECTURE.md §6.2).
The word embeddings the pooling makes are scaled to the RMS of the source's token embeddings (`embedding_rms`,
`embedding_rms_of`): the frozen blocks then receive inputs of the size they were trained on from the first step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding

from hat.causal_lm import HATForCausalLM
from hat.config import HATConfig
from hat.model.decoder import HATDecoderConnector
from hat.model.parts import new_modules
from hat.model.pooling import HATEncoderConnector
from hat.splitter import word_lengths_batch

# What the dummy forward of `match_embedding_rms` pools: English and German prose, numbers, code, an emoji.
SAMPLE_TEXT = (
    "The river that runs through the old town is quiet in the early morning, and the bridges are empty. "
    "Der Fluss, der durch die Altstadt fließt, ist am frühen Morgen still, und die Brücken sind leer. "
    "In 2024, 3.5% of the 1,200 tests failed: def f(x): return x**2 # 😀"
)


@torch.no_grad()
def init_new_modules(model: HATForCausalLM, seed: int, embedding_rms: float | None = None) -> None:
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
    Then, with `embedding_rms` (the source's token embeddings' RMS), `match_embedding_rms`.
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
    if embedding_rms is not None:
        match_embedding_rms(model, embedding_rms)


@torch.no_grad()
def match_embedding_rms(model: HATForCausalLM, embedding_rms: float) -> float:
    """Scale the pooling's output projection so that the word embeddings of `SAMPLE_TEXT` have RMS `embedding_rms`.

    A dummy forward of the encoder and the pooling alone (the backbone may be on the meta device). With Llama's
    0.02 init the pooled vectors come out about ten times smaller than a Llama's token embeddings (0.009 against
    0.117 for SmolLM2), and the frozen blocks would start from inputs they never saw. Returns the factor applied.
    """
    hat = model.model
    data = SAMPLE_TEXT.encode("utf-8")
    ids = torch.tensor([list(data)])  # (1, T)
    mask = torch.ones_like(ids)
    lengths = word_lengths_batch([data], model.config.special_byte_values, model.config.max_word_size)
    layout = hat.layout(ids, mask, lengths)
    # In float32, whatever the model's dtype: the factor is then the same for weights that are the same
    encoder, pooling = copy.deepcopy(hat.encoder).float(), copy.deepcopy(hat.encoder_connector).float()
    byte_states = encoder(ids, layout.byte_mask(model.config.encoder_config.sliding_window, torch.float32),
                          layout.byte_positions)  # (1, T, E)
    words = pooling(byte_states, layout.byte_positions, layout.word_bytes, layout.word_bytes_valid,
                    layout.word_positions)  # (1, W, D)
    rms = float(words.pow(2).mean().sqrt())
    factor = embedding_rms / rms
    hat.encoder_connector.cross_attention_encoder_connector.o_proj.weight.mul_(factor)
    return factor


def embedding_rms_of(embedding, dtype: torch.dtype | None = None, chunk_rows: int = 4096) -> float:
    """The RMS of a token embedding table (V, D) as it is in `dtype` (default: its own), summed in float64, a block
    of rows at a time.

    `embedding`: a tensor, or a safetensors slice (`safe_open(...).get_slice(name)`), which reads only the rows asked
    for, so that the table is never in memory whole.
    """
    shape = tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else tuple(embedding.get_shape())
    total = 0.0
    for start in range(0, shape[0], chunk_rows):
        rows = embedding[start : start + chunk_rows]
        rows = rows.detach() if isinstance(rows, torch.Tensor) else rows
        total += float((rows if dtype is None else rows.to(dtype)).double().pow(2).sum())
    return (total / (shape[0] * shape[1])) ** 0.5


def build_new_modules(config: HATConfig, dtype: torch.dtype, seed: int, embedding_rms: float | None = None
                      ) -> dict[str, torch.Tensor]:
    """The new modules' tensors by on-disk name, initialised by `init_new_modules`, without building the backbone:
    the HAT model is made on the meta device and only its new modules are materialised (in `dtype`)."""
    with torch.device("meta"):
        model = HATForCausalLM(config)
    model.to(dtype)
    for module in new_modules(model).values():
        module.to_empty(device="cpu")
        for rotary in (m for m in module.modules() if isinstance(m, LlamaRotaryEmbedding)):
            # `to_empty` leaves buffers unset; RoPE's are computed, not stored (the rescale's dummy forward uses them)
            fresh = LlamaRotaryEmbedding(rotary.config)
            rotary.inv_freq.copy_(fresh.inv_freq)
            rotary.original_inv_freq.copy_(fresh.original_inv_freq)
    init_new_modules(model, seed, embedding_rms)
    tensors = {}
    for prefix, module in new_modules(model).items():
        tensors.update(module.state_dict(prefix=f"{prefix}."))
    return tensors

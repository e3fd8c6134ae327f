"""The backbone (`backbone.layers.N.*`, ARCHITECTURE.md §3.4): the Llama 3.1 blocks over words, without token
embedding, LM head and final norm."""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from .attention import run_layers


class HATBackbone(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.rotary_emb = LlamaRotaryEmbedding(config)

    def forward(
        self, word_embeds, attention_mask, positions, past_key_values: Cache | None = None, num_layers: int | None = None,
        first_layer: int = 0,
    ) -> torch.Tensor:
        """word_embeds (B, W, D), attention_mask (B, 1, W, K), positions (B, W) -> word_states (B, W, D).

        Optional: run only the blocks `first_layer` .. `num_layers - 1` (`word_embeds` is then the output of block
        `first_layer - 1`), e.g. the first k blocks, and then the rest from where they stopped.
        """
        hidden_states = word_embeds
        position_embeddings = self.rotary_emb(hidden_states, positions)
        layers = self.layers[first_layer:num_layers]
        return run_layers(layers, hidden_states, attention_mask, positions, position_embeddings, past_key_values)

"""The byte encoder (`encoder.*`, ARCHITECTURE.md §3.2): a byte embedding and sliding-window Llama layers over
the byte stream."""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from .attention import LayerStack, run_layers


class HATEncoder(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embedding_layer = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.sliding_window = config.sliding_window

    def forward(
        self, input_ids, attention_mask, positions, past_key_values: Cache | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, layer_stack: LayerStack | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T), attention_mask (B, 1, T, K), positions (B, T) -> byte_states (B, T, E).

        Optional: `position_embeddings` (cos, sin), `self.rotary_emb(., positions)` computed beforehand;
        `layer_stack`, what runs `self.layers` instead of the modules themselves (see `LayerStack`).
        """
        hidden_states = self.embedding_layer(input_ids)  # (B, T, E)
        if position_embeddings is None:
            position_embeddings = self.rotary_emb(hidden_states, positions)
        if layer_stack is not None:
            return layer_stack(hidden_states, attention_mask, position_embeddings, past_key_values)
        return run_layers(self.layers, hidden_states, attention_mask, positions, position_embeddings, past_key_values)

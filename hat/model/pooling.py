"""Word pooling (`encoder_connector.*`, ARCHITECTURE.md §3.3): a learned query per word attends to that word's
bytes; the result is the word embedding the backbone reads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig

from .attention import HATCrossAttention
from .layout import gather_words


class HATEncoderConnector(nn.Module):
    """Word embedding = a learned query (at the word's position) attending to the word's own bytes."""

    def __init__(self, encoder_config: LlamaConfig, backbone_hidden_size: int):
        super().__init__()
        self.latent_query = nn.Parameter(torch.empty(1, 1, backbone_hidden_size))
        self.cross_attention_encoder_connector = HATCrossAttention(encoder_config, encoder_config.cross_attention_config)

    def forward(
        self, byte_states: torch.Tensor, byte_positions: torch.Tensor, word_bytes: torch.Tensor,
        word_bytes_valid: torch.Tensor, word_positions: torch.Tensor,
    ) -> torch.Tensor:
        """byte_states (B, T, E) -> word_embeds (B, W, D).

        `word_bytes` (B, W, L) are the byte columns of each word, `word_positions` (B, W) the word indices.
        """
        attn = self.cross_attention_encoder_connector
        B, W, L = word_bytes.shape
        query = self.latent_query.expand(B, W, -1)  # (B, W, D)
        q = attn.project_query(query, word_positions)  # (B, W, H, hd)
        k, v = attn.project_key_value(byte_states, byte_positions)  # (B, T, Hkv, hd)
        k, v = gather_words(k, word_bytes), gather_words(v, word_bytes)  # (B, W, L, Hkv, hd)
        # One attention problem per word: (B*W, H, 1, hd) against (B*W, H, L, hd).
        q = q.reshape(B * W, attn.num_heads, 1, attn.head_dim)
        k = k.reshape(B * W, L, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        v = v.reshape(B * W, L, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        valid = word_bytes_valid.reshape(B * W, L).clone()
        valid[:, 0] = True  # empty (padding) word slots attend to one dummy byte instead of nothing
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=valid[:, None, None, :], enable_gqa=attn.num_heads != attn.num_kv_heads
        )  # (B*W, H, 1, hd)
        return attn.o_proj(out.reshape(B, W, attn.num_heads * attn.head_dim))  # (B, W, D)

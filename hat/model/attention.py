"""Building blocks shared by the byte stacks and the backbone: Llama layers in sequence, and the cross-attention
of the pooling and the decoder (RoPE on queries and keys; queries from one stream, keys from another)."""

from __future__ import annotations

import copy
import inspect
from typing import Protocol, Sequence

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from ..config import CrossAttentionConfig


class LayerStack(Protocol):
    """What may run a byte stack's Llama layers in place of the modules: the same math over the same parameters, with
    the term `adds[i]` (broadcastable to (B, N, E), or None) added before layer i. Cached generation passes a fused copy
    of the layers (`hat.generation.fused.FusedStack`)."""

    def __call__(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor], past_key_values,
        adds: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor: ...


# The name of `LlamaDecoderLayer.forward`'s KV cache argument: `cache` from transformers 5.24 (where the old name
# `past_key_values` warns that it goes in 5.40), `past_key_values` in 5.23, which pyproject.toml also allows.
_CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaDecoderLayer.forward).parameters else "past_key_values"


def run_llama_layer(layer: LlamaDecoderLayer, hidden_states, attention_mask, positions, position_embeddings, cache=None):
    """One Llama decoder layer over (B, N, D) states; it updates `cache` (a KV cache) when one is given."""
    return layer(
        hidden_states, attention_mask=attention_mask, position_ids=positions, use_cache=cache is not None,
        position_embeddings=position_embeddings, **{_CACHE_ARG: cache},
    )


def run_layers(layers, hidden_states, attention_mask, positions, position_embeddings, past_key_values=None):
    """Llama decoder layers in sequence over (B, N, D) states; each updates `past_key_values` when one is given."""
    for layer in layers:
        hidden_states = run_llama_layer(layer, hidden_states, attention_mask, positions, position_embeddings,
                                        past_key_values)
    return hidden_states


def _cross_rope_config(owner: LlamaConfig, cross: CrossAttentionConfig) -> LlamaConfig:
    cfg = copy.deepcopy(owner)
    cfg.head_dim = cross.head_dim
    return cfg


class HATCrossAttention(nn.Module):
    """Multi-head cross-attention with RoPE on queries and keys; queries from one stream, keys from another."""

    def __init__(self, owner: LlamaConfig, cross: CrossAttentionConfig):
        super().__init__()
        self.num_heads = cross.num_attention_heads
        self.num_kv_heads = cross.attention_num_kv_heads
        self.head_dim = cross.head_dim
        self.key_query_norm = cross.key_query_norm
        self.key_query_norm_per_head = cross.key_query_norm_per_head
        kv_width = self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(cross.hidden_size_q, cross.hidden_size, bias=False)
        self.k_proj = nn.Linear(cross.hidden_size_kv, kv_width, bias=False)
        self.v_proj = nn.Linear(cross.hidden_size_kv, kv_width, bias=False)
        self.o_proj = nn.Linear(cross.hidden_size, cross.hidden_size_q, bias=False)
        if self.key_query_norm:
            q_dim, k_dim = (self.head_dim, self.head_dim) if self.key_query_norm_per_head else (cross.hidden_size, kv_width)
            self.norm_query = LlamaRMSNorm(q_dim, eps=owner.rms_norm_eps)
            self.norm_key = LlamaRMSNorm(k_dim, eps=owner.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(_cross_rope_config(owner, cross))

    def _heads(self, x: torch.Tensor, n: int, norm: nn.Module | None) -> torch.Tensor:
        """(..., n*hd) -> (..., n, hd), with the optional query/key norm."""
        if norm is not None and not self.key_query_norm_per_head:
            x = norm(x)
        x = x.unflatten(-1, (n, self.head_dim))
        if norm is not None and self.key_query_norm_per_head:
            x = norm(x)
        return x

    def project_query(self, q_in: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """q_in (B, N, Dq), positions (B, N) -> rotated queries (B, N, H, hd)."""
        q = self._heads(self.q_proj(q_in), self.num_heads, getattr(self, "norm_query", None))
        cos, sin = self.rotary_emb(q, positions)
        q, _ = apply_rotary_pos_emb(q, q, cos, sin, unsqueeze_dim=2)
        return q

    def project_key_value(self, kv_in: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """kv_in (B, N, Dkv), positions (B, N) -> rotated keys and values, each (B, N, Hkv, hd)."""
        k = self._heads(self.k_proj(kv_in), self.num_kv_heads, getattr(self, "norm_key", None))
        v = self.v_proj(kv_in).unflatten(-1, (self.num_kv_heads, self.head_dim))
        cos, sin = self.rotary_emb(k, positions)
        _, k = apply_rotary_pos_emb(k, k, cos, sin, unsqueeze_dim=2)
        return k, v

    def single_key(self, kv_in: torch.Tensor) -> torch.Tensor:
        """Cross-attention to exactly one key: softmax is 1, so the output is `o_proj(v)` (queries and RoPE drop out).

        kv_in (..., Dkv) -> (..., Dq)
        """
        v = self.v_proj(kv_in).unflatten(-1, (self.num_kv_heads, self.head_dim))  # (..., Hkv, hd)
        v = v.repeat_interleave(self.num_heads // self.num_kv_heads, dim=-2)  # (..., H, hd)
        return self.o_proj(v.flatten(-2))

"""The word-to-byte decoder (`decoder_connector.*`, `decoder.decoder_layers.N.*`, ARCHITECTURE.md §3.5): the
backbone's predictions shifted right by one word, added to every byte of their word, then sliding-window Llama
layers over the bytes."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

from .attention import HATCrossAttention, LayerStack, run_llama_layer
from .layout import gather_words
from .parts import freeze_inert


class HATDecoderConnector(nn.Module):
    def __init__(self, backbone_hidden_size: int):
        super().__init__()
        self.first_word_embedding = nn.Parameter(torch.empty(1, 1, backbone_hidden_size))

    def forward(self, word_states: torch.Tensor, first_words: torch.Tensor | None = None) -> torch.Tensor:
        """word_states (B, W, D) -> word_preds (B, W, D): slot i holds the backbone's prediction for word i.

        `first_words` (B, W) bool, optional: the words that get the learned first-word vector instead of the word
        before them (the first word of each packed document); default: word 0.
        """
        first = self.first_word_embedding.expand(word_states.shape[0], 1, -1).to(word_states.dtype)  # (B, 1, D)
        word_preds = torch.cat([first, word_states[:, :-1]], dim=1)  # (B, W, D)
        if first_words is not None:
            word_preds = torch.where(first_words[..., None], first, word_preds)
        return word_preds


class HATDecoderBlock(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int, add_cross_attention: bool):
        super().__init__()
        cross = config.cross_attention_config
        self.add_cross_attention = add_cross_attention
        self.query_norm = LlamaRMSNorm(cross.hidden_size_q, eps=config.rms_norm_eps)
        self.kv_norm = LlamaRMSNorm(cross.hidden_size_kv, eps=config.rms_norm_eps)
        if add_cross_attention:
            self.cross_attention = HATCrossAttention(config, cross)
        self.llama_layer = LlamaDecoderLayer(config, layer_idx)
        # query_norm and the cross-attention's query side never change the output: each byte attends to exactly one
        # key. They stay for checkpoint compatibility, frozen for good.
        freeze_inert(self)

    def word_conditioning(self, word_preds: torch.Tensor) -> torch.Tensor:
        """word_preds (B, W, D) -> the term each byte of word i adds, (B, W, E)."""
        return self.cross_attention.single_key(self.kv_norm(word_preds))


class HATDecoder(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.decoder_layers = nn.ModuleList(
            HATDecoderBlock(config, i, config.cross_attn_every_layer or i == 0) for i in range(config.num_hidden_layers)
        )
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.sliding_window = config.sliding_window

    def word_conditioning(self, word_preds: torch.Tensor) -> list[torch.Tensor | None]:
        """word_preds (B, W, D) -> per block the term each byte of word i adds, (B, W, E) (None: the block has no
        cross-attention)."""
        return [block.word_conditioning(word_preds) if block.add_cross_attention else None
                for block in self.decoder_layers]

    def forward(
        self, byte_states, word_conditioning: Sequence[torch.Tensor | None], byte_word: torch.Tensor | None,
        attention_mask, positions, past_key_values: Cache | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, layer_stack: LayerStack | None = None,
    ) -> torch.Tensor:
        """byte_states (B, T, E), word_conditioning (per block (B, W, E) or None), byte_word (B, T) -> (B, T, E).

        `byte_word` None: W is 1, and every byte of a row adds its row's one term. Optional: `position_embeddings`
        (cos, sin), `self.rotary_emb(., positions)` computed beforehand; `layer_stack`, what runs the blocks' Llama
        layers instead of the modules themselves (see `LayerStack`).
        """
        hidden_states = byte_states
        if position_embeddings is None:
            position_embeddings = self.rotary_emb(hidden_states, positions)
        if layer_stack is not None:
            adds = [term if term is None or byte_word is None else gather_words(term, byte_word)
                    for term in word_conditioning]  # per block (B, T, E), (B, 1, E) or None
            return layer_stack(hidden_states, attention_mask, position_embeddings, past_key_values, adds)
        for term, block in zip(word_conditioning, self.decoder_layers, strict=True):
            # Word conditioning: every byte of word i gets the prediction for word i.
            if term is not None:
                hidden_states = hidden_states + (term if byte_word is None else gather_words(term, byte_word))
            hidden_states = run_llama_layer(block.llama_layer, hidden_states, attention_mask, positions,
                                            position_embeddings, past_key_values)
        return hidden_states

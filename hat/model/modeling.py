"""`HATModel`: the byte-level stack (encoder -> pooling -> backbone -> decoder), without the head.

In memory the byte-level stack lives in `HATModel` (`model.model`) so that `model.model(...).last_hidden_state`
times `model.lm_head.weight` are the logits (TRL's fused LM head relies on it); see ARCHITECTURE.md §3.7.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ModelOutput
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from ..config import HATConfig
from .backbone import HATBackbone
from .decoder import HATDecoder, HATDecoderConnector
from .encoder import HATEncoder
from .layout import additive_mask, build_layout, causal_mask
from .pooling import HATEncoderConnector


@dataclass
class HATModelOutput(ModelOutput):
    """Output of [`HATModel`].

    Args:
        last_hidden_state (`torch.Tensor` of shape `(B, T, E)`): byte states after the final norm.
        word_hidden_states (`torch.Tensor` of shape `(B, W, D)`): backbone outputs (prediction for the next word).
        word_lengths (`list[list[int]]`): the word segmentation used.
    """

    last_hidden_state: torch.Tensor | None = None
    word_hidden_states: torch.Tensor | None = None
    word_lengths: list[list[int]] | None = None


class HATPreTrainedModel(PreTrainedModel):
    config_class = HATConfig
    config: HATConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "HATDecoderBlock"]
    _supports_sdpa = True
    _supports_attention_backend = False

    def __init__(self, config: HATConfig, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        # The Llama layers read the attention implementation from their own sub-config.
        for key in config.sub_configs:
            getattr(config, key)._attn_implementation_internal = config._attn_implementation

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.backbone_config.initializer_range
        if isinstance(module, HATEncoderConnector):
            nn.init.normal_(module.latent_query, std=std)
        elif isinstance(module, HATDecoderConnector):
            nn.init.normal_(module.first_word_embedding, std=std)


class HATModel(HATPreTrainedModel):
    """The byte-level stack without the head: `last_hidden_state` are the decoder's normalised byte states."""

    def __init__(self, config: HATConfig):
        super().__init__(config)
        self.encoder = HATEncoder(config.encoder_config)
        self.encoder_connector = HATEncoderConnector(config.encoder_config, config.backbone_config.hidden_size)
        self.backbone = HATBackbone(config.backbone_config)
        self.decoder_connector = HATDecoderConnector(config.backbone_config.hidden_size)
        self.decoder = HATDecoder(config.decoder_config)
        self.layer_norm = LlamaRMSNorm(config.decoder_config.hidden_size, eps=config.decoder_config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embedding_layer

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder.embedding_layer = value

    def word_lengths(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
        """Split each row's real bytes into words with the model's splitting rule."""
        from ..splitter import word_lengths_batch

        ids = input_ids.cpu().numpy()
        mask = attention_mask.bool().cpu().numpy()
        rows = [ids[b][mask[b]].tolist() for b in range(ids.shape[0])]
        return word_lengths_batch(rows, self.config.special_byte_values, self.config.max_word_size)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        word_lengths: Sequence[Sequence[int]] | None = None,
        **kwargs,
    ) -> HATModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(B, T)`): byte values 0-255.
            attention_mask (`torch.Tensor` of shape `(B, T)`, *optional*): 1 for real bytes; left or right padding.
            word_lengths (`list[list[int]]`, *optional*): bytes per word for each row; computed with the
                splitter when omitted.

        Raises:
            ValueError: ids outside 0-255, or word lengths that do not match the bytes.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, bytes), got shape {tuple(input_ids.shape)}")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) > 255):
            raise ValueError(f"input_ids must be byte values 0-255, got range [{int(input_ids.min())}, {int(input_ids.max())}]")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if word_lengths is None:
            word_lengths = self.word_lengths(input_ids, attention_mask)
        layout = build_layout(word_lengths, attention_mask)
        B, W = layout.word_valid.shape

        # Encoder: bytes -> byte states
        dtype = self.encoder.embedding_layer.weight.dtype
        byte_mask = additive_mask(causal_mask(layout.byte_valid, self.config.encoder_config.sliding_window), dtype)
        byte_states = self.encoder(input_ids, byte_mask, layout.byte_positions)  # (B, T, E); mask (B, 1, T, T)

        # Encoder connector: each word's bytes -> one word embedding
        word_positions = torch.arange(W, device=input_ids.device).expand(B, W)  # (B, W)
        word_embeds = self.encoder_connector(
            byte_states, layout.byte_positions, layout.word_bytes, layout.word_bytes_valid, word_positions
        )  # (B, W, D)

        # Backbone: words -> prediction of the next word
        word_mask = additive_mask(causal_mask(layout.word_valid), dtype)  # (B, 1, W, W)
        word_states = self.backbone(word_embeds, word_mask, word_positions)  # (B, W, D)

        # Decoder: bytes of word i, conditioned on the prediction for word i -> next-byte states
        word_preds = self.decoder_connector(word_states)  # (B, W, D)
        if self.config.decoder_config.sliding_window != self.config.encoder_config.sliding_window:
            byte_mask = additive_mask(causal_mask(layout.byte_valid, self.config.decoder_config.sliding_window), dtype)
        byte_states = self.decoder(byte_states, word_preds, layout.byte_word, byte_mask, layout.byte_positions)
        byte_states = self.layer_norm(byte_states)  # (B, T, E)
        return HATModelOutput(last_hidden_state=byte_states, word_hidden_states=word_states, word_lengths=list(word_lengths))

"""`HATModel`: the byte-level stack (encoder -> pooling -> backbone -> decoder), without the head.

In memory the byte-level stack lives in `HATModel` (`model.model`) so that `model.model(...).last_hidden_state`
times `model.lm_head.weight` are the logits (TRL's fused LM head relies on it); see ARCHITECTURE.md §3.7.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ModelOutput
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from ..config import HATConfig
from .attention import LayerStack
from .backbone import HATBackbone
from .decoder import HATDecoder, HATDecoderConnector
from .encoder import HATEncoder
from .layout import WordLayout, build_layout, document_lengths, packed_documents, packed_word_lengths
from .pooling import HATEncoderConnector


@dataclass
class HATModelOutput(ModelOutput):
    """Output of [`HATModel`].

    Args:
        last_hidden_state (`torch.Tensor` of shape `(B, T, E)`): byte states after the decoder and the final norm.
        word_hidden_states (`torch.Tensor` of shape `(B, W, D)`): backbone outputs (prediction for the next word).
        word_lengths (`torch.LongTensor` of shape `(B, W)`): the word segmentation used, right-padded with 0.
        encoder_hidden_state (`torch.Tensor` of shape `(B, T, E)`): the encoder's byte states (the decoder's input).
    """

    last_hidden_state: torch.Tensor | None = None
    word_hidden_states: torch.Tensor | None = None
    word_lengths: torch.LongTensor | None = None
    encoder_hidden_state: torch.Tensor | None = None


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
    """The byte-level stack without the head: `last_hidden_state` are the decoder's normalised byte states.

    `forward` is the composition of the step methods, which cached generation (`hat.generation`) and training code
    also call one at a time: `layout` -> `encode` -> `pool` -> `run_backbone` -> `predict_words` ->
    `word_conditioning` -> `decode`. B rows, T bytes, W words, L bytes per word; E the byte width, D the backbone's.
    """

    # A HATForCausalLM checkpoint loads into the bare model (`AutoModel`) without its head.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

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

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        word_lengths: Sequence[Sequence[int]] | torch.LongTensor | None = None,
        past_key_values: HATCaches | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> HATModelOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(B, T)`): byte values 0-255.
            attention_mask (`torch.Tensor` of shape `(B, T)`, *optional*): 1 for real bytes; left or right padding.
            word_lengths (`list[list[int]]` or `torch.LongTensor` of shape `(B, W)`, *optional*): bytes per word for
                each row (a tensor right-padded with 0); computed with the splitter when omitted.
            past_key_values (`HATCaches`, *optional*): caches for the encoder, the backbone and the decoder, filled
                with the whole batch (cached generation's prefill).
            position_ids (`torch.LongTensor` of shape `(B, T)`, *optional*): only where they restart, read as the
                starts of packed documents (TRL's padding-free batches); so are `cu_seq_lens_q` and `seq_idx` in
                `kwargs` (see `hat.model.layout.packed_documents`). Each document is then scored as if alone.
                Byte and word positions are always counted from each document's start.

        Raises:
            ValueError: ids outside 0-255, word lengths that do not match the bytes or that cross documents.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, bytes), got shape {tuple(input_ids.shape)}")
        if ((input_ids < 0) | (input_ids > 255)).any():
            raise ValueError(f"input_ids must be byte values 0-255, got range [{int(input_ids.min())}, {int(input_ids.max())}]")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        documents = packed_documents(input_ids.shape, position_ids, kwargs.get("cu_seq_lens_q"), kwargs.get("seq_idx"))
        if documents is not None and past_key_values is not None:
            raise ValueError("packed documents (position_ids, cu_seq_lens_q, seq_idx) cannot fill generation caches")
        layout = self.layout(input_ids, attention_mask, word_lengths, documents)
        limit = min(self.config.encoder_config.max_position_embeddings, self.config.decoder_config.max_position_embeddings)
        if past_key_values is None and input_ids.shape[1] > limit:  # (generation warns about its prompt itself)
            warnings.warn(f"rows of {input_ids.shape[1]} bytes, more than the byte stacks' max_position_embeddings "
                          f"({limit}): the model was not trained on positions this large", UserWarning, stacklevel=2)
        encoder_cache, word_cache, decoder_cache = (None, None, None) if past_key_values is None else (
            past_key_values.encoder, past_key_values.backbone, past_key_values.decoder)
        dtype = self.encoder.embedding_layer.weight.dtype
        windows = self.byte_windows

        # Encoder: bytes -> byte states
        encoder_mask = layout.byte_mask(windows[0], dtype)  # (B, 1, T, T)
        byte_states = self.encode(input_ids, encoder_mask, layout.byte_positions, encoder_cache)  # (B, T, E)

        # Pooling: each word's bytes -> one word embedding
        word_embeds = self.pool(
            byte_states, layout.byte_positions, layout.word_bytes, layout.word_bytes_valid, layout.word_positions
        )  # (B, W, D)

        # Backbone: words -> prediction of the next word
        word_states = self.run_backbone(word_embeds, layout.word_mask(dtype), layout.word_positions, word_cache)

        # Decoder: bytes of word i, conditioned on the prediction for word i -> next-byte states
        word_preds = self.predict_words(word_states, layout.first_words)  # (B, W, D)
        decoder_mask = encoder_mask if windows[1] == windows[0] else layout.byte_mask(windows[1], dtype)
        last_hidden_state = self.decode(
            byte_states, self.word_conditioning(word_preds), layout.byte_word, decoder_mask, layout.byte_positions,
            decoder_cache,
        )  # (B, T, E)
        return HATModelOutput(last_hidden_state=last_hidden_state, word_hidden_states=word_states,
                              word_lengths=layout.word_lengths, encoder_hidden_state=byte_states)

    # ------------------------------------------------------------------------------------------ the steps
    def word_lengths(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, documents: torch.Tensor | None = None
    ) -> list[list[int]]:
        """Split each row's real bytes into words with the model's splitting rule (on the CPU); with `documents`
        (B, T), each packed document on its own."""
        from ..splitter import word_lengths_batch

        ids = input_ids.cpu().numpy()
        mask = attention_mask.bool().cpu().numpy()
        rows = [ids[b][mask[b]].tolist() for b in range(ids.shape[0])]
        split = functools.partial(word_lengths_batch, special_byte_values=self.config.special_byte_values,
                                  max_word_size=self.config.max_word_size)
        if documents is None:
            return split(rows)
        return packed_word_lengths(rows, document_lengths(documents, attention_mask), split)

    def layout(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        word_lengths: Sequence[Sequence[int]] | torch.LongTensor | None = None, documents: torch.Tensor | None = None,
    ) -> WordLayout:
        """input_ids, attention_mask (B, T) -> where every byte and word sits (`hat.model.layout.WordLayout`).

        `word_lengths` (list of lists, or (B, W) right-padded with 0), optional: the words are split when omitted.
        `documents` (B, T), optional: the document of each byte of packed rows (`hat.model.layout.packed_documents`).
        """
        if word_lengths is None:
            word_lengths = self.word_lengths(input_ids, attention_mask, documents)
        return build_layout(word_lengths, attention_mask, documents)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
        past_key_values=None, position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        layer_stack: LayerStack | None = None,
    ) -> torch.Tensor:
        """input_ids (B, N), additive attention_mask (B, 1, N, K), byte positions (B, N) -> byte_states (B, N, E).

        Optional: the encoder's KV cache; RoPE `position_embeddings` (cos, sin) (B, N, hd) computed beforehand
        (`byte_position_embeddings`); a `layer_stack` that runs the encoder's layers (`byte_layers()[0]`).
        """
        return self.encoder(input_ids, attention_mask, positions, past_key_values, position_embeddings, layer_stack)

    def pool(
        self, byte_states: torch.Tensor, byte_positions: torch.Tensor, word_bytes: torch.Tensor,
        word_bytes_valid: torch.Tensor, word_positions: torch.Tensor,
    ) -> torch.Tensor:
        """byte_states (B, N, E), byte_positions (B, N) -> word_embeds (B, W, D).

        `word_bytes` (B, W, L) are the columns (in N) of each word's bytes, `word_bytes_valid` (B, W, L) which are
        real, `word_positions` (B, W) the word indices.
        """
        return self.encoder_connector(byte_states, byte_positions, word_bytes, word_bytes_valid, word_positions)

    def run_backbone(
        self, word_embeds: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, past_key_values=None,
        num_layers: int | None = None, first_layer: int = 0,
    ) -> torch.Tensor:
        """word_embeds (B, W, D), additive attention_mask (B, 1, W, K), word positions (B, W) -> word_states (B, W, D).

        Optional: the backbone's KV cache; `num_layers` / `first_layer`, to run only the Llama blocks
        `first_layer .. num_layers - 1` (teacher-guided training matches the first k blocks' output, §7.2).
        """
        return self.backbone(word_embeds, attention_mask, positions, past_key_values, num_layers, first_layer)

    def predict_words(self, word_states: torch.Tensor, first_words: torch.Tensor | None = None) -> torch.Tensor:
        """word_states (B, W, D) -> word_preds (B, W, D): the prediction for word i (from word i-1; a learned one
        for word 0, or for each word marked in `first_words` (B, W), the first words of packed documents)."""
        return self.decoder_connector(word_states, first_words)

    def word_conditioning(self, word_preds: torch.Tensor) -> list[torch.Tensor | None]:
        """word_preds (B, W, D) -> per decoder block the term each byte of word i adds, (B, W, E) (None: none)."""
        return self.decoder.word_conditioning(word_preds)

    def decode(
        self, byte_states: torch.Tensor, word_conditioning: Sequence[torch.Tensor | None],
        byte_word: torch.Tensor | None, attention_mask: torch.Tensor | None, positions: torch.Tensor,
        past_key_values=None, position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        layer_stack: LayerStack | None = None,
    ) -> torch.Tensor:
        """byte_states (B, N, E) from the encoder, `word_conditioning(word_preds)`, byte_word (B, N) the word of
        each byte, additive attention_mask (B, 1, N, K), byte positions (B, N) -> normalised byte states (B, N, E).

        `byte_word` None: each row has one word's terms (B, 1, E), added to all its bytes. Optional as in `encode`
        (the decoder's cache, RoPE, a `layer_stack` for `byte_layers()[1]`).
        """
        byte_states = self.decoder(byte_states, word_conditioning, byte_word, attention_mask, positions,
                                   past_key_values, position_embeddings, layer_stack)
        return self.layer_norm(byte_states)

    # ---------------------------------------------------------------- what cached decoding also needs
    @property
    def byte_windows(self) -> tuple[int, int]:
        """How many keys a byte attends to in the encoder and in the decoder: itself and the `sliding_window - 1`
        bytes before it, one more with `config.sliding_window_extra_key` (ARCHITECTURE.md §3.2)."""
        extra = int(self.config.sliding_window_extra_key)
        return self.config.encoder_config.sliding_window + extra, self.config.decoder_config.sliding_window + extra

    def byte_layers(self) -> tuple[list[nn.Module], list[nn.Module]]:
        """The Llama layers of the encoder and of the decoder, in order (what a `layer_stack` runs)."""
        return list(self.encoder.layers), [block.llama_layer for block in self.decoder.decoder_layers]

    def byte_position_embeddings(self, positions: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """byte positions (B, N) -> RoPE (cos, sin), each (B, N, hd), of the encoder and of the decoder."""
        like = self.encoder.embedding_layer.weight[:1]  # the dtype and device
        return self.encoder.rotary_emb(like, positions), self.decoder.rotary_emb(like, positions)


class HATCaches(Protocol):
    """The KV caches `HATModel.forward` fills, one per stack (`hat.generation.caches.ModelCaches`)."""

    encoder: object
    backbone: object
    decoder: object

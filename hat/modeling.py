"""`HATForCausalLM`: byte encoder -> word pooling -> Llama 3.1 backbone -> word-to-byte decoder.

    input_ids (B, T) bytes
      -> encoder: byte embedding + sliding-window Llama layers over bytes          byte_states (B, T, E)
      -> encoder connector: a learned query per word cross-attends to its bytes    word_embeds (B, W, D)
      -> backbone: Llama 3.1 blocks over words (no embedding / final norm / head)  word_states (B, W, D)
      -> decoder connector: shift right by one word, learned first-word vector     word_preds  (B, W, D)
      -> decoder: per layer, add word_preds[word of byte] (cross-attention with one key), then a
         sliding-window Llama layer over bytes; final RMSNorm                      byte_states (B, T, E)
      -> lm_head                                                                   byte_logits (B, T, 256)

Word boundaries come from the splitter (`hat.splitter.word_lengths_from_bytes`) when the caller does not pass
`word_lengths`, so TRL's trainers, which pass only `input_ids` / `attention_mask`, train the model as it is.

In memory the byte-level stack lives in `HATModel` (`model.model`) so that `model.model(...).last_hidden_state`
times `model.lm_head.weight` are the logits (TRL's fused LM head relies on it). On disk the keys are the
release's (`encoder.*`, `backbone.layers.N.*`, `decoder.decoder_layers.N.*`, `lm_head.weight`, ...): a
registered `WeightRenaming` adds the `model.` prefix on load and removes it on save.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, LlamaConfig, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast, ModelOutput
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from .config import MODEL_TYPE, CrossAttentionConfig, HATConfig

# Top-level modules of the release's checkpoint; in memory they live under `model.`.
RELEASE_TOP_MODULES = ("encoder", "encoder_connector", "backbone", "decoder_connector", "decoder", "layer_norm")


# ----------------------------------------------------------------------------------------------------------
# Byte/word layout: pure functions from word lengths to the index tensors every module needs.
# ----------------------------------------------------------------------------------------------------------
@dataclass
class WordLayout:
    """Where every byte and word of a padded batch sits. B rows, T byte columns, W word slots, L bytes/word.

    Real bytes of a row are contiguous (left or right padding). Words are packed to the left of the word axis.
    """

    byte_valid: torch.Tensor  # (B, T) bool
    byte_positions: torch.Tensor  # (B, T) long, 0.. over the real bytes of a row
    byte_word: torch.Tensor  # (B, T) long, word slot of each byte (0 for padding)
    word_valid: torch.Tensor  # (B, W) bool
    word_bytes: torch.Tensor  # (B, W, L) long, byte column of each byte of each word (0 for padding)
    word_bytes_valid: torch.Tensor  # (B, W, L) bool

    @property
    def num_words(self) -> torch.Tensor:  # (B,)
        return self.word_valid.sum(-1)


def build_layout(word_lengths: Sequence[Sequence[int]], attention_mask: torch.Tensor) -> WordLayout:
    """Index tensors for a batch whose row b holds `sum(word_lengths[b])` real bytes.

    Args:
        word_lengths (`list[list[int]]`): bytes per word, per row.
        attention_mask (`torch.Tensor` of shape `(B, T)`): 1 for real bytes, contiguous in each row.

    Raises:
        ValueError: the word lengths do not add up to a row's real bytes, or a row's real bytes are not contiguous.
    """
    device = attention_mask.device
    mask = attention_mask.bool().cpu().numpy()
    B, T = mask.shape
    n_real = mask.sum(1)
    starts = mask.argmax(1)
    for b in range(B):
        if sum(word_lengths[b]) != n_real[b]:
            raise ValueError(f"row {b}: word lengths add up to {sum(word_lengths[b])} bytes, the row has {n_real[b]}")
        if n_real[b] and not mask[b, starts[b] : starts[b] + n_real[b]].all():
            raise ValueError(f"row {b}: attention_mask must be one contiguous run of ones (left or right padding)")
    W = max(1, max(len(w) for w in word_lengths))
    L = max(1, max((max(w) for w in word_lengths if len(w)), default=1))

    byte_word = np.zeros((B, T), dtype=np.int64)
    word_valid = np.zeros((B, W), dtype=bool)
    word_bytes = np.zeros((B, W, L), dtype=np.int64)
    word_bytes_valid = np.zeros((B, W, L), dtype=bool)
    ar = np.arange(L)
    for b, lengths in enumerate(word_lengths):
        if not len(lengths):
            continue
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(lengths)
        word_start = starts[b] + np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (n,) column of each word's first byte
        byte_word[b, starts[b] : starts[b] + n_real[b]] = np.repeat(np.arange(n), lengths)
        word_valid[b, :n] = True
        valid = ar[None, :] < lengths[:, None]  # (n, L)
        word_bytes[b, :n] = np.where(valid, word_start[:, None] + ar[None, :], 0)
        word_bytes_valid[b, :n] = valid

    byte_valid = torch.from_numpy(mask)
    positions = (byte_valid.long().cumsum(-1) - 1).clamp(min=0)
    return WordLayout(
        byte_valid=byte_valid.to(device),
        byte_positions=positions.to(device),
        byte_word=torch.from_numpy(byte_word).to(device),
        word_valid=torch.from_numpy(word_valid).to(device),
        word_bytes=torch.from_numpy(word_bytes).to(device),
        word_bytes_valid=torch.from_numpy(word_bytes_valid).to(device),
    )


def causal_mask(key_valid: torch.Tensor, window: int | None = None, q_len: int | None = None) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, Q, K): causal, optionally within `window`, never attending to invalid keys.

    The last `Q` of the `K` columns are the queries. A query with no valid key (a padding row) attends to
    itself so that softmax never sees an empty row.
    """
    B, K = key_valid.shape
    Q = K if q_len is None else q_len
    q_idx = torch.arange(K - Q, K, device=key_valid.device)[:, None]  # (Q, 1)
    k_idx = torch.arange(K, device=key_valid.device)[None, :]  # (1, K)
    allowed = k_idx <= q_idx
    if window is not None:
        allowed = allowed & (q_idx - k_idx < window)
    allowed = allowed[None] & key_valid[:, None, :]  # (B, Q, K)
    allowed = allowed | (k_idx == q_idx)[None]
    return allowed[:, None]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask -> additive float mask (0 / most negative), which eager and SDPA attention both honour."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def gather_words(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) gathered at index (B, ...) along dim 1."""
    B = x.shape[0]
    flat = index.reshape(B, -1)  # (B, N)
    out = x[torch.arange(B, device=x.device)[:, None], flat]  # (B, N, ...)
    return out.reshape(*index.shape, *x.shape[2:])


# ----------------------------------------------------------------------------------------------------------
# Modules (names are the release's)
# ----------------------------------------------------------------------------------------------------------
def run_layers(layers, hidden_states, attention_mask, positions, position_embeddings, past_key_values=None):
    """Llama decoder layers in sequence over (B, N, D) states; each updates `past_key_values` when one is given."""
    for layer in layers:
        hidden_states = layer(
            hidden_states, attention_mask=attention_mask, position_ids=positions,
            past_key_values=past_key_values, use_cache=past_key_values is not None,
            position_embeddings=position_embeddings,
        )
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


class HATEncoder(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embedding_layer = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.rotary_emb = LlamaRotaryEmbedding(config)
        self.sliding_window = config.sliding_window

    def forward(
        self, input_ids, attention_mask, positions, past_key_values: Cache | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """input_ids (B, T), attention_mask (B, 1, T, K) bool, positions (B, T) -> byte_states (B, T, E).

        `position_embeddings` (cos, sin), optional: `self.rotary_emb(., positions)` computed beforehand.
        """
        hidden_states = self.embedding_layer(input_ids)  # (B, T, E)
        if position_embeddings is None:
            position_embeddings = self.rotary_emb(hidden_states, positions)
        return run_layers(self.layers, hidden_states, attention_mask, positions, position_embeddings, past_key_values)


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


class HATBackbone(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.rotary_emb = LlamaRotaryEmbedding(config)

    def forward(self, word_embeds, attention_mask, positions, past_key_values: Cache | None = None) -> torch.Tensor:
        """word_embeds (B, W, D), attention_mask (B, 1, W, K), positions (B, W) -> word_states (B, W, D)."""
        hidden_states = word_embeds
        position_embeddings = self.rotary_emb(hidden_states, positions)
        return run_layers(self.layers, hidden_states, attention_mask, positions, position_embeddings, past_key_values)


class HATDecoderConnector(nn.Module):
    def __init__(self, backbone_hidden_size: int):
        super().__init__()
        self.first_word_embedding = nn.Parameter(torch.empty(1, 1, backbone_hidden_size))

    def forward(self, word_states: torch.Tensor) -> torch.Tensor:
        """word_states (B, W, D) -> word_preds (B, W, D): slot i holds the backbone's prediction for word i."""
        first = self.first_word_embedding.expand(word_states.shape[0], 1, -1).to(word_states.dtype)
        return torch.cat([first, word_states[:, :-1]], dim=1)


class HATDecoderBlock(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int, add_cross_attention: bool):
        super().__init__()
        cross = config.cross_attention_config
        self.add_cross_attention = add_cross_attention
        # query_norm (and the cross-attention's q/k projections) never change the output: each byte attends to
        # exactly one key. They stay for checkpoint compatibility and are frozen (see `INERT_PARAMETERS`).
        self.query_norm = LlamaRMSNorm(cross.hidden_size_q, eps=config.rms_norm_eps)
        self.kv_norm = LlamaRMSNorm(cross.hidden_size_kv, eps=config.rms_norm_eps)
        if add_cross_attention:
            self.cross_attention = HATCrossAttention(config, cross)
        self.llama_layer = LlamaDecoderLayer(config, layer_idx)

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

    def forward(
        self, byte_states, word_preds, byte_word, attention_mask, positions, past_key_values: Cache | None = None,
        word_conditioning: Sequence[torch.Tensor | None] | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """byte_states (B, T, E), word_preds (B, W, D), byte_word (B, T) -> byte_states (B, T, E).

        Optional, for cached generation: `word_conditioning` (one tensor broadcastable to (B, T, E) per block) is the
        per-block term `gather_words(block.word_conditioning(word_preds), byte_word)` computed beforehand (it changes
        only when a word ends; `word_preds` and `byte_word` are then unused); `position_embeddings` (cos, sin) is
        `self.rotary_emb(., positions)` computed beforehand.
        """
        hidden_states = byte_states
        if position_embeddings is None:
            position_embeddings = self.rotary_emb(hidden_states, positions)
        for i, block in enumerate(self.decoder_layers):
            # Word conditioning: every byte of word i gets the prediction for word i.
            if block.add_cross_attention:
                if word_conditioning is not None:
                    hidden_states = hidden_states + word_conditioning[i]
                else:
                    hidden_states = hidden_states + gather_words(block.word_conditioning(word_preds), byte_word)
            hidden_states = block.llama_layer(
                hidden_states, attention_mask=attention_mask, position_ids=positions,
                past_key_values=past_key_values, use_cache=past_key_values is not None,
                position_embeddings=position_embeddings,
            )
        return hidden_states


# ----------------------------------------------------------------------------------------------------------
# Pretrained models
# ----------------------------------------------------------------------------------------------------------
# Parameters that cannot influence the output (see HATDecoderBlock); kept frozen so DDP / ZeRO never wait on them.
INERT_PARAMETERS = ("query_norm.weight", "cross_attention.q_proj.weight", "cross_attention.k_proj.weight",
                    "cross_attention.norm_query.weight", "cross_attention.norm_key.weight")


def freeze_inert_parameters(model: nn.Module) -> None:
    """Freeze the decoder's query-side cross-attention weights, which get no gradient by construction."""
    for name, param in model.named_parameters():
        if ".decoder_layers." in name and name.endswith(INERT_PARAMETERS):
            param.requires_grad_(False)


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

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        freeze_inert_parameters(loaded[0] if isinstance(loaded, tuple) else loaded)  # loading makes new parameters
        return loaded

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
        freeze_inert_parameters(self)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embedding_layer

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder.embedding_layer = value

    def word_lengths(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
        """Split each row's real bytes into words with the model's splitting rule."""
        from .splitter import word_lengths_batch

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


class HATForCausalLM(HATPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {}

    def __init__(self, config: HATConfig):
        super().__init__(config)
        self.model = HATModel(config)
        self.lm_head = nn.Linear(config.decoder_config.hidden_size, config.decoder_config.vocab_size, bias=False)
        self.post_init()
        freeze_inert_parameters(self)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.encoder.embedding_layer

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.encoder.embedding_layer = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """`nn.Module.load_state_dict`, also for the release's key names as they are on disk: `Trainer` reads a
        checkpoint's safetensors with those names when it resumes a run without DeepSpeed."""
        on_disk = re.compile(rf"^({'|'.join(RELEASE_TOP_MODULES)})\.")
        state_dict = {on_disk.sub(r"model.\1.", key): value for key, value in state_dict.items()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        word_lengths: Sequence[Sequence[int]] | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(B, T)`): byte values.
            attention_mask (`torch.Tensor` of shape `(B, T)`, *optional*): 1 for real bytes.
            labels (`torch.LongTensor` of shape `(B, T)`, *optional*): next-byte targets, shifted inside as in every
                HF causal LM; -100 (and padding) is ignored.
            word_lengths (`list[list[int]]`, *optional*): word segmentation; computed when omitted.
            logits_to_keep (`int`, *optional*): only compute the last `logits_to_keep` positions' logits (0: all).
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(input_ids, attention_mask=attention_mask, word_lengths=word_lengths)
        hidden = outputs.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)  # (B, T, 256)

        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask == 0, -100)
            loss = self.loss_function(logits, labels, vocab_size=logits.shape[-1], num_items_in_batch=num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=(outputs.word_hidden_states,))

    @torch.no_grad()
    def generate(
        self, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None,
        prefix_allowed_tokens_fn=None, synced_gpus=None, assistant_model=None, streamer=None, **kwargs,
    ):
        """HF's `generate` arguments, byte by byte: batched, with byte- and word-level KV caches (`hat.generation`)."""
        from .generation import generate

        return generate(
            self, inputs, generation_config, logits_processor, stopping_criteria,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, streamer=streamer, assistant_model=assistant_model,
            **kwargs,
        )


# ----------------------------------------------------------------------------------------------------------
# Registration: Auto classes and the on-disk key names of the release.
# ----------------------------------------------------------------------------------------------------------
def _register() -> None:
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    AutoConfig.register(MODEL_TYPE, HATConfig, exist_ok=True)
    AutoModelForCausalLM.register(HATConfig, HATForCausalLM, exist_ok=True)
    if get_checkpoint_conversion_mapping("HATForCausalLM") is None:
        # One pattern, longest names first: the reversed pattern (used on save) is a regex in which `decoder.`
        # would also match `decoder_connector`.
        names = "|".join(sorted(RELEASE_TOP_MODULES, key=len, reverse=True))
        register_checkpoint_conversion_mapping("HATForCausalLM", [WeightRenaming(rf"^({names})\.", r"model.\1.")])


_register()

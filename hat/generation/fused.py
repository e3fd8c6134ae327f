"""The byte stacks' decoding step in few tensor ops: the per-byte hot path of generation.

During generation the encoder and decoder run ten Llama layers of width ~128 for every byte. At that size a layer's
arithmetic is nothing; its cost is the number of tensor ops (on a CPU a few microseconds of dispatch each, on a GPU
a kernel launch), and HF's `LlamaDecoderLayer` spends ~50 per call: RMSNorm in six, three projections,
`rotate_half` (two slices and a cat) for queries and keys, separate residual adds, a cache update per tensor.
`FusedStack` runs a stack of them with the same math in about 19 ops per layer:

- RMSNorm: its weight is folded into the matmul that follows (`W diag(w)`); in float32 the normalisation is
  `x * rsqrt(|x|^2 / E + eps)` in four cheap ops (`F.rms_norm` is a slow composite on CPU); other dtypes keep HF's
  order (normalise in float32, cast, scale by the weight);
- one matmul for queries, keys and values; RoPE in three ops over all heads at once:
  `[q k v] * cos' + swap_halves([q k v]) * sin'`, where `sin'` carries `rotate_half`'s sign and `cos'` = 1,
  `sin'` = 0 on the value heads (values pass through exactly); keys and values come out side by side and are
  stored in the byte cache with one `index_copy_` (`caches.ByteKVCache.update_packed`);
- one SDPA call (grouped-query heads via `enable_gqa`);
- output projection plus residual in one `addmm`; gate and up projections in one matmul; down projection plus
  residual in one `addmm`.

A `FusedStack` is a `hat.model.attention.LayerStack`: `HATModel.encode` / `decode` run it in place of the layers. The
fused weights are built from the layers' own parameters and rebuilt whenever a parameter changed (`fused_stack` keys
them on each parameter's version counter), so generation after training or `load_state_dict` sees the new
weights. Inference only (no autograd); attention is SDPA whatever `_attn_implementation` says. Tests compare it with
`LlamaDecoderLayer` on prefill, single-step and multi-position decoding, in float32 and bfloat16.
"""

from __future__ import annotations

import weakref
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer


def supports(layer: nn.Module) -> bool:
    """Whether `layer` is a `LlamaDecoderLayer` that `FusedLayer` computes: no projection biases, and parameters that
    hold their values (not DeepSpeed ZeRO-3 partitions, which only its forward hooks gather)."""
    if not isinstance(layer, LlamaDecoderLayer):
        return False
    attn, mlp = layer.self_attn, layer.mlp
    projections = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    materialised = all(not hasattr(p, "ds_id") and not p.is_meta for p in layer.parameters())
    return materialised and all(p.bias is None for p in projections)


class FusedLayer:
    """One `LlamaDecoderLayer`'s weights, fused for `FusedStack` (a snapshot: built from the current parameters)."""

    @torch.no_grad()
    def __init__(self, layer: LlamaDecoderLayer):
        if not supports(layer):
            raise ValueError("FusedLayer needs a LlamaDecoderLayer without projection biases")
        attn, mlp = layer.self_attn, layer.mlp
        self.layer_idx = attn.layer_idx
        self.num_heads, self.num_kv_heads = attn.config.num_attention_heads, attn.config.num_key_value_heads
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.act_fn = mlp.act_fn
        norms = (layer.input_layernorm, layer.post_attention_layernorm)
        self.fold = norms[0].weight.dtype == torch.float32  # fold the norm weights into the next matmul
        self.eps = [norm.variance_epsilon for norm in norms]
        self.eps_tensors = [torch.tensor(eps, dtype=torch.float32, device=norm.weight.device)
                            for eps, norm in zip(self.eps, norms)]
        self.norm_weights = [None if self.fold else norm.weight.detach() for norm in norms]
        w_in, w_post = (norm.weight if self.fold else torch.ones_like(norm.weight) for norm in norms)
        w_qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]) * w_in
        self.w_qkv = w_qkv.t().contiguous()  # (E, (H + 2 Hkv) hd): `x @ W` is the fastest form for a few rows
        self.w_o = attn.o_proj.weight.t().contiguous()  # (H hd, E)
        self.w_gate_up = (torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]) * w_post).t().contiguous()  # (E, 2I)
        self.w_down = mlp.down_proj.weight.t().contiguous()  # (I, E)

    def normalize(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """x (N, E) -> RMSNorm i of x; without its weight (folded into the next matmul) in float32."""
        if self.fold:
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # (N, 1)
            return x * torch.rsqrt(torch.addcmul(self.eps_tensors[i], norm, norm, value=1 / x.shape[-1]))
        return self.norm_weights[i] * F.rms_norm(x.float(), x.shape[-1:], None, self.eps[i]).to(x.dtype)

    def __call__(self, x, B, Q, attention_mask, cos, sin, cache) -> torch.Tensor:
        """x (B*Q, E) -> (B*Q, E); cos, sin (B, Q, H + 2 Hkv, hd) from `FusedStack.rotary`."""
        H, Hkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = (self.normalize(x, 0) @ self.w_qkv).view(B, Q, H + 2 * Hkv, 2, hd // 2)
        swapped = qkv.flip(3).view(B, Q, H + 2 * Hkv, hd)  # (x2, x1) per head: rotate_half without its sign
        qkv = torch.addcmul(qkv.view(swapped.shape) * cos, swapped, sin)  # (B, Q, H + 2 Hkv, hd), rotated
        k, v = cache.update_packed(qkv[:, :, H:], self.layer_idx)  # each (B, Hkv, K, hd)
        out = F.scaled_dot_product_attention(
            qkv[:, :, :H].transpose(1, 2), k, v, attn_mask=attention_mask, scale=self.scaling, enable_gqa=H != Hkv,
            is_causal=attention_mask is None and Q > 1,
        )  # (B, H, Q, hd)
        x = torch.addmm(x, out.transpose(1, 2).reshape(B * Q, H * hd), self.w_o)
        gate, up = (self.normalize(x, 1) @ self.w_gate_up).chunk(2, dim=-1)
        return torch.addmm(x, self.act_fn(gate) * up, self.w_down)


class FusedStack:
    """A sequence of `LlamaDecoderLayer`s (one head layout) as `FusedLayer`s, run over a cache with `update_packed`."""

    def __init__(self, layers: Sequence[LlamaDecoderLayer]):
        self.layers = [FusedLayer(layer) for layer in layers]
        shapes = {(f.num_heads, f.num_kv_heads, f.head_dim) for f in self.layers}
        if len(shapes) != 1:
            raise ValueError(f"FusedStack needs one head layout for all layers, got {sorted(shapes)}")
        self.num_heads, self.num_kv_heads, self.head_dim = shapes.pop()

    def rotary(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (B, Q, hd) -> cos', sin' (B, Q, H + 2 Hkv, hd) for `FusedLayer`: per head, `sin'` with
        rotate_half's sign (-sin on the first half), and cos' 1, sin' 0 on the value heads."""
        B, Q, hd = cos.shape
        rotated, values = (B, Q, self.num_heads + self.num_kv_heads, hd), (B, Q, self.num_kv_heads, hd)
        sin = torch.cat([-sin[..., : hd // 2], sin[..., hd // 2 :]], dim=-1)
        return (torch.cat([cos[:, :, None].expand(rotated), cos.new_ones(1, 1, 1, 1).expand(values)], dim=2),
                torch.cat([sin[:, :, None].expand(rotated), sin.new_zeros(1, 1, 1, 1).expand(values)], dim=2))

    def __call__(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, position_embeddings, cache,
        adds: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """hidden_states (B, Q, E), additive attention_mask (B, 1, Q, K) or None, position_embeddings (cos, sin) each
        (B, Q, hd) -> (B, Q, E), storing each layer's keys and values in `cache`. `adds[i]`, optional, is added to the
        states before layer i (broadcastable to (B, Q, E))."""
        B, Q, E = hidden_states.shape
        cos, sin = self.rotary(*position_embeddings)
        x = hidden_states.reshape(B * Q, E)
        for i, layer in enumerate(self.layers):
            if adds is not None and adds[i] is not None:
                x = (x.view(B, Q, E) + adds[i]).view(B * Q, E)
            x = layer(x, B, Q, attention_mask, cos, sin, cache)
        return x.view(B, Q, E)


_STACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fused_stack(layers: Sequence[nn.Module]) -> FusedStack | None:
    """The `FusedStack` of `layers` (None if a layer is not supported), cached on the first layer until a parameter
    changes.

    A parameter's version counter moves with every in-place update (optimizer steps, `load_state_dict`, `copy_`), so
    a stale snapshot is never used.
    """
    layers = list(layers)
    if not layers or not all(supports(layer) for layer in layers):
        return None
    key = tuple((p.data_ptr(), p._version) for layer in layers for p in layer.parameters())
    cached = _STACKS.get(layers[0])
    if cached is None or cached[0] != key:
        cached = (key, FusedStack(layers))
        _STACKS[layers[0]] = cached
    return cached[1]

"""hat.generation.fused: the byte stacks' fused decoding layers compute what transformers' LlamaDecoderLayer computes."""

import copy

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

from hat.generation.caches import ByteKVCache
from hat.generation.fused import FusedStack, fused_stack, supports
from hat.model.attention import run_layers
from hat.model.layout import additive_mask, causal_mask

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


def llama_layers(heads: int, kv_heads: int, n: int = 3, dtype=torch.float32, **extra) -> list[LlamaDecoderLayer]:
    cfg = LlamaConfig(hidden_size=64, num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=16,
                      intermediate_size=96, num_hidden_layers=n, rope_scaling=LLAMA3_ROPE, rope_theta=500000.0,
                      max_position_embeddings=256, **extra)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    layers = [LlamaDecoderLayer(cfg, i).eval() for i in range(n)]
    for layer in layers:
        for name, p in layer.named_parameters():
            torch.nn.init.normal_(p, mean=1.0 if "norm" in name else 0.0, std=0.2)
    return [layer.to(dtype) for layer in layers]


def run_all(layers, reference, x, mask, positions, caches, begin=None):
    """The same states through the HF layers, the fused stack and (in float32) the reference layers, each with its own
    ByteKVCache."""
    rope = LlamaRotaryEmbedding(layers[0].self_attn.config)
    cos, sin = rope(x.float(), positions)
    if begin is not None:
        for cache in caches:
            cache.begin_step(*begin)
    with torch.no_grad():
        hf = run_layers(layers, x, mask, positions, (cos.to(x.dtype), sin.to(x.dtype)), caches[0])
        fused = FusedStack(layers)(x, mask, (cos.to(x.dtype), sin.to(x.dtype)), caches[1])
        ref = run_layers(reference, x.float(), mask.float(), positions, (cos, sin), caches[2])
    return fused, hf, ref


def assert_as_accurate(fused, hf, ref, dtype, msg=""):
    """float32: fused == HF up to rounding. Lower precision: the fused stack's error against the float32 reference is
    no larger than HF's own (up to a margin for rounding noise)."""
    scale = ref.abs().max().item()
    if dtype == torch.float32:
        torch.testing.assert_close(fused, hf, rtol=1e-5, atol=1e-5 * scale, msg=msg or None)
        return
    err_fused, err_hf = ((t.float() - ref).abs().max().item() for t in (fused, hf))
    assert err_fused <= 1.5 * err_hf + 1e-2 * scale, f"{msg}: fused error {err_fused}, HF error {err_hf}"


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_stack_matches_llama_layers_on_prefill_and_steps(heads, kv_heads, dtype):
    layers = llama_layers(heads, kv_heads, dtype=dtype)
    reference = [copy.deepcopy(layer).float() for layer in layers]
    B, T, C = 2, 20, 32
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[1, :5] = False  # left padding in row 1
    positions = (valid.cumsum(1) - 1).clamp(min=0)
    x = torch.randn(B, T, 64).to(dtype)
    caches = ByteKVCache(C), ByteKVCache(C), ByteKVCache(C)
    out = run_all(layers, reference, x, additive_mask(causal_mask(valid), dtype), positions, caches)
    assert_as_accurate(*(t[valid] for t in out), dtype, "prefill")

    # three single-byte steps, then one step that re-writes two trailing positions (a re-decode)
    for t in range(T, T + 4):
        Q = 1 if t < T + 3 else 3
        cols = torch.arange(t - Q + 1, t + 1).expand(B, Q)
        pos = cols - (~valid).sum(1, keepdim=True)
        key_cols = torch.arange(t + 1)
        key_valid = torch.cat([valid, torch.ones(B, t + 1 - T, dtype=torch.bool)], 1)
        allowed = key_valid[:, None, :] & (key_cols[None, None, :] <= cols[:, :, None])  # (B, Q, K)
        write = None if Q == 1 else torch.ones(B, Q, 1, 1, dtype=torch.bool)
        out = run_all(layers, reference, torch.randn(B, Q, 64).to(dtype), additive_mask(allowed[:, None], dtype),
                      pos, caches, begin=(None, cols % C, write, t + 1))
        assert_as_accurate(*out, dtype, f"step {t}")
    for hf, fused, ref in zip(*(cache.kv.values() for cache in caches)):
        assert_as_accurate(fused, hf, ref, dtype, "cache")


def test_fused_stack_follows_parameter_updates():
    layers = llama_layers(4, 2)
    first = fused_stack(layers)
    assert fused_stack(layers) is first  # cached while nothing changed
    with torch.no_grad():
        layers[1].mlp.down_proj.weight.mul_(2.0)  # an in-place update, as an optimizer step makes
    second = fused_stack(layers)
    assert second is not first
    torch.testing.assert_close(second.layers[1].w_down, layers[1].mlp.down_proj.weight.t())


def test_zero3_partitioned_layers_are_not_fused():
    layers = llama_layers(4, 4)
    assert supports(layers[0])
    layers[0].mlp.up_proj.weight.ds_id = 7  # how DeepSpeed ZeRO-3 marks a partitioned parameter
    assert not supports(layers[0])
    assert fused_stack(layers) is None


def test_layers_with_biases_are_not_fused():
    layers = llama_layers(4, 4, attention_bias=True)
    assert not supports(layers[0])
    assert fused_stack(layers) is None
    with pytest.raises(ValueError, match="without projection biases"):
        FusedStack(layers)

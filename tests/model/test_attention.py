"""hat.model.attention: the cross-attention of pooling and decoder."""

import torch

from hat import HATConfig, HATModel


def test_single_key_is_the_cross_attention_output_for_one_key():
    torch.manual_seed(0)
    attn = HATModel(HATConfig.tiny()).encoder_connector.cross_attention_encoder_connector
    kv = torch.randn(4, attn.k_proj.in_features)
    q = attn.project_query(torch.randn(4, 1, attn.q_proj.in_features), torch.tensor([[3]] * 4))
    k, v = attn.project_key_value(kv[:, None], torch.tensor([[5]] * 4))  # (4, 1, Hkv, hd)
    repeat = attn.num_heads // attn.num_kv_heads
    weights = torch.softmax((q * k.repeat_interleave(repeat, 2)).sum(-1), dim=1)  # (4, 1, H): one key
    assert torch.equal(weights, torch.ones_like(weights))
    expected = attn.o_proj((weights[..., None] * v.repeat_interleave(repeat, 2)).flatten(-2))[:, 0]
    torch.testing.assert_close(attn.single_key(kv), expected, rtol=1e-5, atol=1e-6)

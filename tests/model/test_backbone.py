"""hat.model.backbone: the Llama 3.1 blocks, unchanged, over words."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hat import HATConfig, HATForCausalLM
from hat.model.layout import additive_mask, causal_mask


def llama_and_hat():
    config = HATConfig.tiny()
    bb = config.backbone_config
    llama_config = LlamaConfig(**{k: v for k, v in bb.to_dict().items() if k not in ("vocab_size",)}, vocab_size=32)
    assert llama_config.rope_parameters["rope_type"] == "llama3" and bb.num_attention_heads // bb.num_key_value_heads == 4
    torch.manual_seed(0)
    llama = LlamaForCausalLM(llama_config).eval()
    model = HATForCausalLM(config).eval()
    for ours, theirs in zip(model.model.backbone.layers, llama.model.layers, strict=True):
        ours.load_state_dict(theirs.state_dict())
    return llama, model


def test_backbone_layers_match_llama_layers():
    """The backbone is Llama 3.1's blocks: same weights, same inputs -> same outputs (llama3 RoPE, GQA 4:1)."""
    llama, model = llama_and_hat()
    W = 12
    x = torch.randn(2, W, model.config.backbone_config.hidden_size)
    expected = llama.model(inputs_embeds=x).last_hidden_state  # Llama's layers + its final norm
    positions = torch.arange(W).expand(2, W)
    mask = additive_mask(causal_mask(torch.ones(2, W, dtype=torch.bool)), x.dtype)
    got = llama.model.norm(model.model.backbone(x, mask, positions))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_first_k_layers_match_llama_hidden_states():
    """`num_layers=k` stops after k blocks: Llama's hidden state after its k-th layer (what stage-1 matches)."""
    llama, model = llama_and_hat()
    W = 9
    x = torch.randn(1, W, model.config.backbone_config.hidden_size)
    hidden = llama.model(inputs_embeds=x, output_hidden_states=True).hidden_states  # embeddings, layer 1, ...
    positions = torch.arange(W)[None]
    mask = additive_mask(causal_mask(torch.ones(1, W, dtype=torch.bool)), x.dtype)
    for k in range(1, len(model.model.backbone.layers)):
        got = model.model.run_backbone(x, mask, positions, num_layers=k)
        torch.testing.assert_close(got, hidden[k], rtol=1e-5, atol=1e-5, msg=f"{k} layers")

"""`hat_from_llama`: the backbone is the source Llama's blocks, bit for bit, and computes Llama's hidden states."""

from __future__ import annotations

import pytest
import torch
from llama_fixtures import assert_backbone_bit_identical, layer_inputs, tiny_llama, tiny_llama_config  # noqa: F401
from transformers import LlamaForCausalLM

from hat.convert.in_memory import hat_from_llama
from hat.convert.table import ConversionError


def test_backbone_bit_identical(tiny_llama):  # noqa: F811
    hat = hat_from_llama(tiny_llama).eval()
    assert_backbone_bit_identical(hat, tiny_llama)
    assert hat.config.dtype == torch.float32


def test_backbone_hidden_states_match_llama(tiny_llama):  # noqa: F811
    """The whole backbone over word embeddings, then Llama's final norm = Llama's decoder over the same embeddings
    (a HAT has no final norm on the backbone: the decoder takes the word states)."""
    hat = hat_from_llama(tiny_llama).eval()
    embeds, positions, _, mask = layer_inputs(tiny_llama.config, tiny_llama.model.rotary_emb)  # (B, W, D)
    with torch.no_grad():
        word_states = hat.model.backbone(embeds, mask, positions)  # (B, W, D)
        theirs = tiny_llama.model(inputs_embeds=embeds).last_hidden_state  # (B, W, D), after Llama's norm
        torch.testing.assert_close(tiny_llama.model.norm(word_states), theirs)


def test_source_that_does_not_fit():
    torch.manual_seed(0)
    llama = LlamaForCausalLM(tiny_llama_config())
    del llama.model.layers[1]  # the config still says 2 layers
    with pytest.raises(ConversionError, match=r"the source has no tensor for \['backbone.layers.1."):
        hat_from_llama(llama)

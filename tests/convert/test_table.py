"""The key table: every Llama key renamed or explicitly dropped, nothing else accepted."""

from __future__ import annotations

import pytest
from llama_fixtures import tiny_llama  # noqa: F401 (fixture)

from hat.convert.table import BACKBONE, DROPPED, LLAMA_TO_HAT, ConversionError, hat_key
from hat.model.parts import is_backbone, memory_name


def test_table_maps_every_llama_key(tiny_llama):  # noqa: F811
    for key in tiny_llama.state_dict():
        name = hat_key(key)
        assert (name is None) == (key in DROPPED)
        if name is not None:
            assert name.startswith("backbone.layers.") and name.split(".")[2] == key.split(".")[2]
    assert hat_key("model.layers.17.mlp.down_proj.weight") == "backbone.layers.17.mlp.down_proj.weight"
    assert all(k.count("{}") == 1 and v.count("{}") == 1 for k, v in LLAMA_TO_HAT.items())
    with pytest.raises(ConversionError, match="rotary_emb.inv_freq"):
        hat_key("model.layers.0.self_attn.rotary_emb.inv_freq")


def test_table_targets_are_the_backbone_part():
    """The table writes names of the part `hat.model.parts` takes from the Llama, and only that part."""
    assert BACKBONE.from_llama and BACKBONE.disk == "backbone"
    for target in LLAMA_TO_HAT.values():
        assert target.startswith(f"{BACKBONE.disk}.") and is_backbone(memory_name(target.format(3))), target

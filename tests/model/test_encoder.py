"""hat.model.encoder: byte embedding and sliding-window Llama layers over the bytes."""

import torch

from hat import HATConfig, HATModel
from hat.model.layout import build_layout


def test_encoder_sees_only_its_sliding_window():
    torch.manual_seed(0)
    model = HATModel(HATConfig.tiny()).eval()
    window, layers = model.config.encoder_config.sliding_window, model.config.encoder_config.num_hidden_layers
    T = window * layers + 8  # beyond the receptive field of all layers
    ids = torch.randint(0, 256, (1, T))
    layout = build_layout([[1] * T], torch.ones(1, T))
    mask = layout.byte_mask(window, torch.float32)
    ref = model.encode(ids, mask, layout.byte_positions)
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % 256
    out = model.encode(changed, mask, layout.byte_positions)
    reach = layers * (window - 1)  # the last column byte 0 can influence
    assert not torch.allclose(out[0, reach], ref[0, reach])
    torch.testing.assert_close(out[0, reach + 1 :], ref[0, reach + 1 :], rtol=0, atol=0)

"""hat.model.pooling: a learned query per word attends to that word's bytes only."""

import torch

from hat import HATConfig, HATModel
from hat.model.layout import build_layout


def pooled(model, byte_states, lengths, mask):
    layout = build_layout(lengths, mask)
    return model.pool(byte_states, layout.byte_positions, layout.word_bytes, layout.word_bytes_valid,
                      layout.word_positions)


def test_a_word_embedding_depends_on_its_own_bytes_only():
    torch.manual_seed(0)
    model = HATModel(HATConfig.tiny()).eval()
    E = model.config.encoder_config.hidden_size
    x = torch.randn(1, 7, E)
    mask = torch.ones(1, 7)
    ref = pooled(model, x, [[2, 3, 2]], mask)  # (1, 3, D)
    changed = x.clone()
    changed[0, 2:5] = torch.randn(3, E)  # the bytes of word 1
    out = pooled(model, changed, [[2, 3, 2]], mask)
    torch.testing.assert_close(out[:, [0, 2]], ref[:, [0, 2]], rtol=0, atol=0)
    assert not torch.allclose(out[:, 1], ref[:, 1])


def test_padding_and_position_in_the_batch_do_not_matter():
    """The same word at the same word index pools to the same vector wherever its bytes sit (left padding)."""
    torch.manual_seed(0)
    model = HATModel(HATConfig.tiny()).eval()
    x = torch.randn(1, 5, model.config.encoder_config.hidden_size)
    alone = pooled(model, x, [[2, 3]], torch.ones(1, 5))
    padded = torch.cat([torch.randn(1, 3, x.shape[-1]), x], 1)  # three padding columns before
    batch = pooled(model, torch.cat([padded, padded]), [[2, 3], [5]], torch.tensor([[0, 0, 0] + [1] * 5] * 2))
    torch.testing.assert_close(batch[0], alone[0], rtol=0, atol=1e-6)
    assert torch.isfinite(batch[1]).all()  # row 1's empty second word slot attends to a dummy byte, not nothing

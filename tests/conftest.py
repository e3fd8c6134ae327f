import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_model():
    """A seeded tiny HAT in float32, eval mode, with weights large enough that outputs vary with the input."""
    from hat import HATConfig, HATForCausalLM

    torch.manual_seed(0)
    model = HATForCausalLM(HATConfig.tiny()).eval()
    return model


def encode(texts: list[str], padding_side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes of `texts`, padded with 0 to the longest, and the attention mask."""
    rows = [list(t.encode("utf-8")) for t in texts]
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        sl = slice(0, len(r)) if padding_side == "right" else slice(T - len(r), T)
        ids[b, sl] = torch.tensor(r, dtype=torch.long)
        mask[b, sl] = 1
    return ids, mask

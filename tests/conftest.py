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
    from hat.eval.intrinsic import pad_rows

    return pad_rows([list(t.encode("utf-8")) for t in texts], 0, padding_side)

"""hat.eval.intrinsic: bits per byte of HAT and of a token model, compression, text files."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hat.eval.intrinsic import (
    byte_windows,
    compression,
    hat_bits_per_byte,
    read_text,
    token_bits_per_byte,
    token_byte_lengths,
)
from tests.helpers.scoring import byte_logprobs
from tests.helpers.text import UNICODE_SAMPLE


def test_hat_bits_per_byte_equals_loss(tiny_model):
    text = "Bits pro Byte: größer ist schlechter."
    ids = torch.tensor([list(text.encode())])
    with torch.no_grad():
        loss = tiny_model(ids, labels=ids).loss
    result = hat_bits_per_byte(tiny_model, text, window=4096, progress=False)
    assert result.bits_per_byte == pytest.approx(float(loss) / math.log(2), rel=1e-5)
    assert result.scored_bytes == len(text.encode()) - 1 and result.windows == 1

    # several windows: the first byte of each is context only
    data = text.encode()
    windows = byte_windows(data, 12)
    assert b"".join(windows) == data and all(not 0x80 <= w[0] < 0xC0 for w in windows)
    nll = sum(-float(byte_logprobs(tiny_model, w).sum()) for w in windows)
    result = hat_bits_per_byte(tiny_model, text, window=12, batch_size=2, progress=False)
    assert result.scored_bytes == len(data) - len(windows)
    assert result.bits_per_byte == pytest.approx(nll / math.log(2) / (len(data) - len(windows)), rel=1e-5)


def test_token_bits_per_byte_by_hand(tiny_llama, llama3_tokenizer):
    text = "Bits per byte of a token model: größer, schöner, 👨‍👩‍👧."
    ids, byte_lengths = token_byte_lengths(llama3_tokenizer, text)
    assert sum(byte_lengths) == len(text.encode())
    row = torch.tensor([[llama3_tokenizer.bos_token_id, *ids]])
    with torch.no_grad():
        logits = tiny_llama(row).logits[0]
    nll = F.cross_entropy(logits[1:-1], row[0, 2:], reduction="sum")  # tokens 1.. of the window, after BOS
    result = token_bits_per_byte(tiny_llama, llama3_tokenizer, text, window=512, progress=False)
    assert result.scored == len(ids) - 1 and result.scored_bytes == len(text.encode()) - byte_lengths[0]
    assert result.bits_per_byte == pytest.approx(float(nll) / math.log(2) / result.scored_bytes, rel=1e-5)


def test_compression_counts_match_splitter_and_tokenizer(llama3_tokenizer):
    from hat.splitter import split_words

    c = compression(UNICODE_SAMPLE, {"llama3_tokens": llama3_tokenizer}, max_word_size=100)
    n_bytes = len(UNICODE_SAMPLE.encode())
    words = len(split_words(UNICODE_SAMPLE, max_word_size=100))
    tokens = len(llama3_tokenizer(UNICODE_SAMPLE, add_special_tokens=False)["input_ids"])
    assert c["bytes"] == n_bytes
    assert c["hat_words"] == {"positions": words, "bytes_per_position": n_bytes / words}
    assert c["llama3_tokens"] == {"positions": tokens, "bytes_per_position": n_bytes / tokens}
    assert c["words_per_token"]["llama3_tokens"] == pytest.approx(words / tokens)
    # a known sentence, counted by hand: "Hello," " world!" | Hello , world !
    known = compression("Hello, world!", {"llama3_tokens": llama3_tokenizer})
    assert known["hat_words"]["positions"] == 2 and known["llama3_tokens"]["positions"] == 4


def test_read_text_refuses_empty_missing_and_binary_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        read_text(empty)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "binary.bin").write_bytes(b"ok\n\x9b\xff")
    with pytest.raises(ValueError, match="binary.bin is not valid UTF-8"):
        read_text(tmp_path / "binary.bin")

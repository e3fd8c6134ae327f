"""hat.splitter.byte_rule: word lengths of any bytes (special bytes, invalid UTF-8), input types, the batch APIs."""

import random

import numpy as np
import pytest

from hat.splitter import encode_batch, split_words, word_lengths_batch, word_lengths_from_bytes


def test_word_lengths_valid_utf8_equals_split_words(corpus):
    text = corpus[:300_000]
    for max_word_size in (100, 7):
        words = split_words(text, max_word_size)
        assert word_lengths_from_bytes(text.encode(), max_word_size=max_word_size) == [len(w) for w in words]


def test_word_lengths_with_specials(corpus):
    parts = [corpus[i : i + 997] for i in range(0, 20_000, 997)]
    data = b"\xc0".join(p.encode() for p in parts)
    expected = []
    for k, part in enumerate(parts):
        if k:
            expected.append(1)
        expected += [len(w) for w in split_words(part)]
    assert word_lengths_from_bytes(data, {192}) == expected


@pytest.mark.parametrize(
    "data, lengths",
    [
        (b"", []),
        (b"ab\xe4\xb8", [4]),  # an unfinished char stays in the word it follows
        (b"\xe4\xb8ab", [2, 2]),  # ... or is a word of its own at the start
        (b"a\x80b", [1, 1, 1]),  # a stray continuation byte is a word
        (b"\xc0", [1]),
        (b"a\xff\xfeb", [1, 1, 1, 1]),
        (b"a\xe0\x80", [2, 1]),  # E0 cannot take 80: an unfinished E0, then a stray 80
        (b"x\xc0\xe4\xb8", [1, 1, 2]),  # after a special byte: its own word
        (b"hi \xe4\xb8\xad\xe6\x96", [2, 6]),  # "hi", " 中" + the start of 文
        (b"\xf0\x9f\x98", [3]),
        (b"a \xf0\x9f\x98\x80!", [1, 6]),  # valid: " 😀!"
    ],
)
def test_word_lengths_invalid_utf8(data, lengths):
    assert word_lengths_from_bytes(data, {192}) == lengths


def test_word_lengths_random_bytes():
    rng = random.Random(4)
    for _ in range(300):
        data = bytes(rng.choice([rng.randrange(256), rng.randrange(0x80), 0xC0, 0xE4, 0xB8]) for _ in range(rng.randrange(60)))
        for max_word_size in (100, 3, 1):
            lengths = word_lengths_from_bytes(data, {192, 0xF5}, max_word_size)
            assert sum(lengths) == len(data)
            assert all(1 <= n <= max_word_size for n in lengths)
            offsets = np.cumsum([0] + lengths)
            for o in offsets[:-1]:  # special bytes are words of their own
                if data[o] in (192, 0xF5):
                    assert lengths[list(offsets).index(o)] == 1


def test_word_lengths_input_types():
    data = "Hallo Welt, grüß dich!".encode()
    expected = word_lengths_from_bytes(data)
    assert word_lengths_from_bytes(list(data)) == expected
    assert word_lengths_from_bytes(bytearray(data)) == expected
    assert word_lengths_from_bytes(np.frombuffer(data, dtype=np.uint8).astype(np.int64)) == expected
    torch = pytest.importorskip("torch")
    assert word_lengths_from_bytes(torch.tensor(list(data))) == expected
    with pytest.raises(ValueError):
        word_lengths_from_bytes([1, 256])
    with pytest.raises(ValueError):
        word_lengths_from_bytes(np.array([-1]))
    with pytest.raises(ValueError, match=r"\[65\]"):
        word_lengths_from_bytes(b"abc", {65})


def test_batch_apis(corpus):
    texts = [corpus[i * 3000 : i * 3000 + 100 * i] for i in range(12)] + ["", " ", "x" * 250]
    byte_ids, lengths, counts = encode_batch(texts)
    assert byte_ids.dtype == lengths.dtype == counts.dtype == np.int64
    assert byte_ids.tolist() == list("".join(texts).encode())
    assert counts.sum() == len(lengths) and lengths.sum() == len(byte_ids)
    words = [split_words(t) for t in texts]
    assert counts.tolist() == [len(w) for w in words]
    assert lengths.tolist() == [len(x) for w in words for x in w]
    rows = [t.encode() for t in texts]
    assert word_lengths_batch(rows, {192}, 100) == [[len(x) for x in w] for w in words]
    assert word_lengths_batch([list(r) for r in rows], {192}, 7) == [word_lengths_from_bytes(r, max_word_size=7) for r in rows]
    empty = encode_batch([])
    assert [a.shape for a in empty] == [(0,), (0,), (0,)]



"""hat.splitter.online: `WordBoundaryDetector` pushed byte by byte gives the byte rule's words."""

import pytest

from hat.splitter import Push, WordBoundaryDetector, split_words, word_lengths_from_bytes
from tests.helpers.text import mixed_text


def feed(data: bytes, specials=frozenset({192}), max_word_size=100, prefix=b"") -> list[bytes]:
    """Completed words, then the open one, from pushing `data` byte by byte."""
    det = WordBoundaryDetector(specials, max_word_size, prefix)
    words = []
    for b in data:
        words += det.push(b).completed
    last = det.finish()
    return words + ([last] if last else [])


@pytest.mark.parametrize("max_word_size, n_bytes", [(100, 120_000), (7, 30_000), (1, 3_000)])
def test_detector_matches_byte_rule(max_word_size, n_bytes):
    data = mixed_text(n_bytes, seed=5).encode()
    data = data.replace(b"\n\n", b"\n\xc0")  # some eos bytes
    words = feed(data, max_word_size=max_word_size)
    assert b"".join(words) == data
    assert [len(w) for w in words] == word_lengths_from_bytes(data, {192}, max_word_size)


def test_detector_push_semantics():
    det = WordBoundaryDetector({192}, 100)
    assert det.push(ord("a")) == Push([], 0)
    assert det.push(ord("b")) == Push([], 0)
    assert det.current_word == b"ab"
    assert det.push(0xE4) == Push([], 0)  # the start of 中 stays in "ab" for now
    assert det.push(0xB8) == Push([], 0)
    assert det.current_word == b"ab\xe4\xb8"
    assert det.push(0xAD) == Push([b"ab"], 2)  # 中 is a word of its own: 2 bytes moved
    assert det.current_word == "中".encode()
    assert det.push(ord(" ")) == Push(["中".encode()], 0)
    assert det.push(ord("x")) == Push([], 0)  # " x"
    assert det.push(192) == Push([b" x", b"\xc0"], 0)  # eos completes the word and is one
    assert det.current_word == b""
    assert det.push(192) == Push([b"\xc0"], 0)


def test_detector_prefix_and_marks():
    prompt = "Hello, wor".encode()
    det = WordBoundaryDetector(prefix=prompt)
    assert det.current_word == b" wor"
    assert feed(b"ld! ok", prefix=prompt) == [b" world!", b" ok"]
    # A mark after "_" belongs to the next letter: the detector keeps "_" as context.
    assert feed("x_\u0301a b".encode()) == [w for w in split_words("x_\u0301a b")]
    # Non-causal input: the completed word " " stands; splitting goes on after it.
    assert feed(" \t\u0301".encode()) == [b" ", "\t\u0301".encode()]
    with pytest.raises(ValueError, match="256"):
        WordBoundaryDetector().push(256)



"""Step 6 of the word rule (see `hat.splitter`), the size limit, and the text API: `split_words`,
`split_with_specials` (trusted template text with special tokens) and `encode_batch` (a batch for collation)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, count

import numpy as np

from ..special_tokens import split_special_tokens, validate_special_token_dict
from .fast import _split_str

DEFAULT_MAX_WORD_SIZE = 100


# ----------------------------------------------------------------------------------------------
# Size limit (step 6)
# ----------------------------------------------------------------------------------------------

def _check_max_word_size(max_word_size: int) -> None:
    if isinstance(max_word_size, bool) or not isinstance(max_word_size, int) or max_word_size < 1:
        raise ValueError(f"max_word_size must be an int >= 1, got {max_word_size!r}")


def _chunk(word: bytes, max_word_size: int) -> list[bytes]:
    """hat-splitter's `split_long_words` for one word: chunks of at most `max_word_size` bytes,
    each ending on a UTF-8 char boundary unless a single char is longer than the limit."""
    n = len(word)
    if n <= max_word_size:
        return [word]
    if word.isascii():
        return [word[i : i + max_word_size] for i in range(0, n, max_word_size)]
    out = []
    start = 0
    while start < n:
        end = min(start + max_word_size, n)
        cut = end
        while cut > start and cut < n and word[cut] & 0xC0 == 0x80:  # continuation byte
            cut -= 1
        if cut == start:
            cut = end
        out.append(word[start:cut])
        start = cut
    return out


def _limit(words: list[bytes], max_word_size: int) -> list[bytes]:
    if not words or max(map(len, words)) <= max_word_size:
        return words
    out: list[bytes] = []
    done = 0
    for i in compress(count(), map(max_word_size.__lt__, map(len, words))):  # the long words
        out += words[done:i]
        out += _chunk(words[i], max_word_size)
        done = i + 1
    out += words[done:]
    return out


# ----------------------------------------------------------------------------------------------
# Public API: text
# ----------------------------------------------------------------------------------------------

def split_words(text: str, max_word_size: int = DEFAULT_MAX_WORD_SIZE) -> list[bytes]:
    """Split `text` into HAT words, byte-identical to `HATSplitter().split_with_limit`.

    Args:
        text (`str`): any text; it must be encodable as UTF-8 (no lone surrogates).
        max_word_size (`int`): longest word in bytes; longer words are cut (step 6).

    Returns:
        `list[bytes]`: the words; `b"".join(words) == text.encode()`.

    Raises:
        `ValueError`: if `max_word_size` is not an int >= 1. `TypeError` if `text` is not a `str`.
        `UnicodeEncodeError` for lone surrogates.
    """
    _check_max_word_size(max_word_size)
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return _limit(list(map(str.encode, _split_str(text))), max_word_size)


def split_with_specials(
    text: str, special_token_dict: dict[str, int], max_word_size: int = DEFAULT_MAX_WORD_SIZE
) -> list[bytes]:
    """Split trusted template text in which special tokens stand for one byte each.

    Each occurrence of a key of `special_token_dict` (e.g. `"<|eot_id|>"`) becomes the one-byte
    word `bytes([value])`; the text between occurrences is split with `split_words` on its own.

    Args:
        text (`str`): chat-template text; only pass text whose special strings are meant as tokens.
        special_token_dict (`dict[str, int]`): special string -> byte value; checked with
            `hat.special_tokens.validate_special_token_dict` (overlapping strings match leftmost-longest).
        max_word_size (`int`): as in `split_words`.

    Raises:
        `ValueError`: for an invalid `special_token_dict` or `max_word_size < 1`.
    """
    _check_max_word_size(max_word_size)
    special_token_dict = validate_special_token_dict(special_token_dict)
    words: list[bytes] = []
    for piece in split_special_tokens(text, special_token_dict):
        words += [bytes([piece])] if isinstance(piece, int) else split_words(piece, max_word_size)
    return words


def _text_lengths(text: str, max_word_size: int) -> list[int]:
    """`[len(w) for w in split_words(text, max_word_size)]`, without building the words."""
    words = _split_str(text)
    if not text.isascii():
        return list(map(len, _limit(list(map(str.encode, words)), max_word_size)))
    lengths = list(map(len, words))
    if not lengths or max(lengths) <= max_word_size:
        return lengths
    out: list[int] = []
    for n in lengths:  # ASCII: chunks of exactly max_word_size bytes
        if n <= max_word_size:
            out.append(n)
        else:
            q, r = divmod(n, max_word_size)
            out += [max_word_size] * q + ([r] if r else [])
    return out


def encode_batch(
    texts: Sequence[str], max_word_size: int = DEFAULT_MAX_WORD_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a batch of texts for collation.

    Args:
        texts (`list[str]`): the texts.
        max_word_size (`int`): longest word in bytes.

    Returns:
        `(byte_ids, word_lengths, words_per_text)`, all int64: `byte_ids` (N,) the UTF-8 bytes of
        all texts, concatenated; `word_lengths` (W,) bytes per word, summing to N;
        `words_per_text` (B,) words of each text, summing to W.
    """
    _check_max_word_size(max_word_size)
    lengths: list[int] = []
    counts = np.empty(len(texts), dtype=np.int64)
    for b, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{b}] must be str, got {type(text).__name__}")
        row = _text_lengths(text, max_word_size)
        counts[b] = len(row)
        lengths += row
    byte_ids = np.frombuffer("".join(texts).encode("utf-8"), dtype=np.uint8).astype(np.int64)  # (N,)
    return byte_ids, np.array(lengths, dtype=np.int64), counts


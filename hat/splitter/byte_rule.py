"""The word rule extended to any bytes (ARCHITECTURE.md §1, "Any bytes"): model inputs hold special-token bytes
and may hold invalid UTF-8. `word_lengths_from_bytes` gives the rule; `word_lengths_batch` applies it to rows."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from ..special_tokens import DEFAULT_SPECIAL_BYTE_VALUES, check_special_byte_values
from .fast import _split_str
from .text import DEFAULT_MAX_WORD_SIZE, _check_max_word_size, _limit, _text_lengths


def _as_bytes(data: bytes | bytearray | memoryview | Sequence[int]) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (list, tuple, range)):
        try:
            return bytes(data)
        except (ValueError, TypeError) as e:
            raise ValueError(f"byte values must be ints in [0, 255]: {e}") from None
    arr = np.asarray(data)  # numpy arrays, CPU tensors
    if arr.ndim != 1 or (arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255)):
        raise ValueError(
            f"byte values must be a 1-D sequence of ints in [0, 255], got {arr.dtype} of shape {arr.shape}"
        )
    return arr.astype(np.uint8).tobytes()


# A maximal run of valid UTF-8 (what Python's decoder accepts).
_UTF8_RUN = re.compile(
    rb"(?:[\x00-\x7f]|[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2})+"
)
# The continuation bytes that may follow each lead byte (the second byte is narrower for some).
_SECOND = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}
_TEXT, _SPECIAL, _STRAY, _INCOMPLETE = range(4)


def _invalid_words(data: bytes, lo: int, hi: int, specials: frozenset[int], words: list[bytes], prev: int) -> int:
    """Append the words of `data[lo:hi]`, which holds no valid UTF-8 char; return the last unit's kind."""
    i = lo
    while i < hi:
        b = data[i]
        if b in specials:
            words.append(data[i : i + 1])
            prev = _SPECIAL
            i += 1
        elif 0xC2 <= b <= 0xF4:  # a lead byte with fewer continuation bytes than it needs
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            k = i + 1
            first_lo, first_hi = _SECOND.get(b, (0x80, 0xBF))
            while k < hi and k - i < need:
                if not (first_lo <= data[k] <= first_hi if k == i + 1 else 0x80 <= data[k] <= 0xBF):
                    break
                k += 1
            if prev in (_TEXT, _INCOMPLETE):
                words[-1] += data[i:k]  # an unfinished char stays in the word it follows
            else:
                words.append(data[i:k])
            prev = _INCOMPLETE
            i = k
        else:  # cannot start a char: 0x80-0xBF, 0xC0, 0xC1, 0xF5-0xFF
            words.append(data[i : i + 1])
            prev = _STRAY
            i += 1
    return prev


def _byte_words(data: bytes, specials: frozenset[int]) -> list[bytes]:
    """The words of `data` before the size limit (the rule of `word_lengths_from_bytes`)."""
    try:
        return list(map(str.encode, _split_str(data.decode("utf-8"))))
    except UnicodeDecodeError:
        pass
    words: list[bytes] = []
    prev = None
    pos = 0
    for m in _UTF8_RUN.finditer(data):
        if m.start() > pos:
            prev = _invalid_words(data, pos, m.start(), specials, words, prev)
        words += map(str.encode, _split_str(m.group().decode("utf-8")))
        prev = _TEXT
        pos = m.end()
    if pos < len(data):
        _invalid_words(data, pos, len(data), specials, words, prev)
    return words


def _lengths(data: bytes, specials: frozenset[int], max_word_size: int) -> list[int]:
    if data.isascii():
        return _text_lengths(data.decode("ascii"), max_word_size)
    try:
        return _text_lengths(data.decode("utf-8"), max_word_size)  # valid UTF-8 holds no special byte
    except UnicodeDecodeError:
        return list(map(len, _limit(_byte_words(data, specials), max_word_size)))


def word_lengths_from_bytes(
    data: bytes | bytearray | Sequence[int],
    special_byte_values: Iterable[int] = DEFAULT_SPECIAL_BYTE_VALUES,
    max_word_size: int = DEFAULT_MAX_WORD_SIZE,
) -> list[int]:
    """Word lengths (in bytes) of an arbitrary byte sequence, e.g. a model's `input_ids`.

    The rule:
    - a byte in `special_byte_values` is a one-byte word;
    - each maximal run of valid UTF-8 is split with `split_words`, on its own;
    - an incomplete char (a lead byte 0xC2-0xF4 followed by fewer of the continuation bytes it
      needs than required, cut short by any other byte or by the end) is appended to the
      preceding word, or is a word of its own at the start or after a special or stray byte;
    - every other byte (one that cannot start a char: 0x80-0xBF, 0xC0, 0xC1, 0xF5-0xFF) is a
      one-byte "stray" word;
    - words longer than `max_word_size` bytes are then cut as in `split_words`.
    The lengths always sum to `len(data)`. For valid UTF-8 (which holds no special byte) they are
    `[len(w) for w in split_words(data.decode(), max_word_size)]`.

    Args:
        data (`bytes` or sequence of `int` in [0, 255]): the bytes (a list, a 1-D array or tensor).
        special_byte_values (iterable of `int`): byte values of special tokens (0xC0, 0xC1, 0xF5-0xFF).
        max_word_size (`int`): longest word in bytes.

    Raises:
        `ValueError`: for values outside [0, 255], special values that occur in UTF-8, or a
        `max_word_size` below 1.
    """
    _check_max_word_size(max_word_size)
    return _lengths(_as_bytes(data), check_special_byte_values(special_byte_values), max_word_size)


def word_lengths_batch(
    rows: Sequence[bytes | Sequence[int]],
    special_byte_values: Iterable[int] = DEFAULT_SPECIAL_BYTE_VALUES,
    max_word_size: int = DEFAULT_MAX_WORD_SIZE,
) -> list[list[int]]:
    """`word_lengths_from_bytes` of each row (rows may have different lengths)."""
    _check_max_word_size(max_word_size)
    specials = check_special_byte_values(special_byte_values)
    return [_lengths(_as_bytes(row), specials, max_word_size) for row in rows]

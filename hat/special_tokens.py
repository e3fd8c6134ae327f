"""Byte values and special tokens (ARCHITECTURE.md §2): the one place that says which byte values exist, which of
them a special token may take, and what a valid `special_token_dict` is. Config, splitter, tokenizer and eval use it.

    from hat.special_tokens import DEFAULT_SPECIAL_TOKEN_DICT, split_special_tokens, validate_special_token_dict

    validate_special_token_dict({"<|eot_id|>": 192})              # {'<|eot_id|>': 192}
    split_special_tokens("hi<|eot_id|>", {"<|eot_id|>": 192})      # ['hi', 192]

The rule for a `special_token_dict` (`validate_special_token_dict`):
- it is a mapping from `str` to `int`;
- each key is a non-empty ASCII string (the tokenizer's byte-level decoder would read other characters as bytes);
- each value is an `int` (not a `bool`) that never occurs in UTF-8: 0xC0, 0xC1 or 0xF5-0xFF (192, 193, 245-255), so
  a special byte can never be confused with text;
- no value is used twice (decoding would be ambiguous);
- `<|eot_id|>` is present: it ends every chat turn and is eos.
Keys may overlap (one may contain another): text is matched leftmost-longest, as the `tokenizers` library matches
added tokens, so `{"<|x|>": 245, "<|x|>y": 246}` reads `"<|x|>yz"` as `[246, "z"]` everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

BYTE_VOCAB_SIZE = 256
# Byte values that never occur in valid UTF-8: the only ones a special token may take.
NON_UTF8_BYTE_VALUES = frozenset({0xC0, 0xC1, *range(0xF5, 0x100)})
EOT_TOKEN = "<|eot_id|>"
# The released models' setting: end of turn (and eos) is byte 192.
DEFAULT_SPECIAL_TOKEN_DICT: Mapping[str, int] = {EOT_TOKEN: 192}
DEFAULT_SPECIAL_BYTE_VALUES = frozenset(DEFAULT_SPECIAL_TOKEN_DICT.values())

_VALUES_TEXT = "0xC0, 0xC1 or 0xF5-0xFF, i.e. 192, 193 or 245-255"


def validate_special_token_dict(special_token_dict: Mapping[str, int]) -> dict[str, int]:
    """Check a `special_token_dict` against the rule in this module's docstring.

    Args:
        special_token_dict (`Mapping[str, int]`): special strings and the byte value each one takes.

    Returns:
        `dict[str, int]`: a copy of `special_token_dict`.

    Raises:
        `ValueError`: naming the first bad entry.
    """
    if not isinstance(special_token_dict, Mapping):
        raise ValueError(
            f"special_token_dict must be a dict of special strings to byte values, got "
            f"{type(special_token_dict).__name__} {special_token_dict!r}"
        )
    seen: dict[int, str] = {}
    for token, value in special_token_dict.items():
        if not isinstance(token, str) or not token or not token.isascii():
            raise ValueError(
                f"special_token_dict: {token!r} -> {value!r}: special tokens must be non-empty ASCII strings"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value not in NON_UTF8_BYTE_VALUES:
            raise ValueError(
                f"special_token_dict[{token!r}] = {value!r}: special tokens must use a byte value that never occurs "
                f"in UTF-8 ({_VALUES_TEXT})"
            )
        if value in seen:
            raise ValueError(f"special_token_dict: {token!r} and {seen[value]!r} both use byte {value}")
        seen[value] = token
    if EOT_TOKEN not in special_token_dict:
        raise ValueError(
            f"special_token_dict must contain {EOT_TOKEN!r} (end of turn, eos), got {dict(special_token_dict)}"
        )
    return dict(special_token_dict)


def check_special_byte_values(special_byte_values: Iterable[int]) -> frozenset[int]:
    """The byte values of special tokens as a `frozenset`, each checked to be one that never occurs in UTF-8.

    Raises:
        `ValueError`: naming the values that are not 0xC0, 0xC1 or 0xF5-0xFF.
    """
    values = frozenset(special_byte_values)
    bad = sorted(v for v in values if isinstance(v, bool) or v not in NON_UTF8_BYTE_VALUES)
    if bad:
        raise ValueError(f"special byte values {bad} can occur in UTF-8; use {_VALUES_TEXT}")
    return values


def special_token_regex(special_tokens: Iterable[str]) -> str:
    """A regular expression (source) matching any of `special_tokens`, longest first (leftmost-longest matching);
    one that never matches when there are none."""
    return "|".join(re.escape(token) for token in sorted(special_tokens, key=len, reverse=True)) or "(?!)"


@lru_cache(maxsize=64)
def _pattern(tokens: tuple[str, ...]) -> re.Pattern:
    return re.compile(special_token_regex(tokens))


def split_special_tokens(text: str, special_token_dict: Mapping[str, int]) -> list[str | int]:
    """Cut trusted text at its special strings: the text between them (`str`, never empty) and, for each special
    string, its byte value (`int`), in order. Only use this on text whose special strings are meant as tokens (e.g.
    what a chat template rendered), never on user input.

    Args:
        text (`str`): the text.
        special_token_dict (`Mapping[str, int]`): a valid `special_token_dict` (see `validate_special_token_dict`).
    """
    pieces: list[str | int] = []
    pos = 0
    for m in _pattern(tuple(sorted(special_token_dict))).finditer(text):
        if m.start() > pos:
            pieces.append(text[pos : m.start()])
        pieces.append(special_token_dict[m.group()])
        pos = m.end()
    if pos < len(text):
        pieces.append(text[pos:])
    return pieces


__all__ = [
    "BYTE_VOCAB_SIZE",
    "DEFAULT_SPECIAL_BYTE_VALUES",
    "DEFAULT_SPECIAL_TOKEN_DICT",
    "EOT_TOKEN",
    "NON_UTF8_BYTE_VALUES",
    "check_special_byte_values",
    "special_token_regex",
    "split_special_tokens",
    "validate_special_token_dict",
]

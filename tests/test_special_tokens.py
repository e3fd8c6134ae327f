"""hat.special_tokens: the one rule for a `special_token_dict`, and that splitter, tokenizer and config apply it (and
match overlapping special strings the same way).

    python -m pytest tests/test_special_tokens.py -q
"""

import re

import pytest

from hat import HATConfig
from hat.special_tokens import (
    DEFAULT_SPECIAL_TOKEN_DICT,
    NON_UTF8_BYTE_VALUES,
    check_special_byte_values,
    split_special_tokens,
    validate_special_token_dict,
)
from hat.splitter import split_with_specials, split_words
from hat.tokenizer import build_tokenizer

EOT = {"<|eot_id|>": 192}


def test_non_utf8_byte_values_are_exactly_the_bytes_utf8_never_uses():
    used = set()
    for c in [*range(0xD800), *range(0xE000, 0x110000)]:
        used.update(chr(c).encode("utf-8"))
    assert NON_UTF8_BYTE_VALUES == set(range(256)) - used == {0xC0, 0xC1, *range(0xF5, 0x100)}
    assert DEFAULT_SPECIAL_TOKEN_DICT == EOT


@pytest.mark.parametrize(
    "special_token_dict",
    [EOT, {"<|eot_id|>": 255, "<|start_header_id|>": 245, "<|end_header_id|>": 193}, {"<|eot_id|>": 192, "<|x|>": 245, "<|x|>y": 246}],
)
def test_valid_dicts_are_returned_as_copies(special_token_dict):
    out = validate_special_token_dict(special_token_dict)
    assert out == special_token_dict and out is not special_token_dict


@pytest.mark.parametrize(
    "special_token_dict, message",
    [
        ([("<|eot_id|>", 192)], "must be a dict of special strings to byte values, got list"),
        ({"<|eot_id|>": 65}, r"\['<\|eot_id\|>'\] = 65: special tokens must use a byte value that never occurs in UTF-8"),
        ({"<|eot_id|>": 0x80}, "= 128"),
        ({"<|eot_id|>": 256}, "= 256"),
        ({"<|eot_id|>": -1}, "= -1"),
        ({"<|eot_id|>": 192.0}, "= 192.0"),
        ({"<|eot_id|>": True}, "= True"),
        ({"<|eot_id|>": "192"}, "= '192'"),
        ({"<|eot_id|>": 192, "<|pad|>": 192}, "'<|pad|>' and '<|eot_id|>' both use byte 192"),
        ({"<|pad|>": 245}, "must contain '<|eot_id|>'"),
        ({}, "must contain '<|eot_id|>'"),
        ({"<|eot_id|>": 192, "": 245}, "'' -> 245: special tokens must be non-empty ASCII strings"),
        ({"<|eot_id|>": 192, "<|ä|>": 245}, "'<|ä|>' -> 245: special tokens must be non-empty ASCII strings"),
        ({"<|eot_id|>": 192, 7: 245}, "7 -> 245"),
    ],
)
def test_the_rule(special_token_dict, message):
    with pytest.raises(ValueError, match=message if message.startswith(r"\[") else re.escape(message)):
        validate_special_token_dict(special_token_dict)


def test_special_byte_values():
    assert check_special_byte_values([192, 245, 192]) == {192, 245}
    assert check_special_byte_values([]) == frozenset()
    with pytest.raises(ValueError, match=r"special byte values \[65, 128\] can occur in UTF-8"):
        check_special_byte_values({65, 128, 192})


def test_split_special_tokens_is_leftmost_longest():
    specials = {"<|eot_id|>": 192, "<|x|>": 245, "<|x|>y": 246, "y<|z|>": 247, "<|z|>": 248}
    assert split_special_tokens("a<|x|>yz", specials) == ["a", 246, "z"]  # the longer of two at one position
    assert split_special_tokens("<|x|>y<|z|>", specials) == [246, 248]  # the leftmost first, then what is left
    assert split_special_tokens("<|eot_id|><|eot_id|>", specials) == [192, 192]
    assert split_special_tokens("", specials) == []
    assert split_special_tokens("plain", specials) == ["plain"]


def test_every_consumer_applies_the_rule():
    bad = {"<|eot_id|>": 192, "<|pad|>": 192}
    message = "both use byte 192"
    with pytest.raises(ValueError, match=message):
        HATConfig.tiny(special_token_dict=bad)
    with pytest.raises(ValueError, match=message):
        build_tokenizer(bad)
    with pytest.raises(ValueError, match=message):
        split_with_specials("x", bad)


def test_splitter_and_tokenizer_match_overlapping_tokens_alike():
    specials = {"<|eot_id|>": 192, "<|x|>": 245, "<|x|>y": 246, "y<|z|>": 247, "<|z|>": 248}
    text = "a<|x|>yz <|x|>y<|z|>!<|eot_id|>"
    expected = []
    for piece in split_special_tokens(text, specials):
        expected += [piece] if isinstance(piece, int) else list(piece.encode())
    tok = build_tokenizer(specials)
    assert tok(text, split_special_tokens=False)["input_ids"] == expected  # the `tokenizers` backend's matching
    assert tok(text)["input_ids"] == list(text.encode())  # user text: plain bytes
    words = split_with_specials(text, specials)
    assert b"".join(words) == bytes(expected)
    assert words == [b"a", b"\xf6", *split_words("z "), b"\xf6", b"\xf8", b"!", b"\xc0"]

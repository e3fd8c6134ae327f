"""hat.splitter.fast: the pattern covers every char, the astral stand-ins, and the classes built at import."""

import random

from hat.splitter import fast, split_words
from tests.helpers.parity import probe_code_points

from .reference import reference


def test_fast_pattern_covers_every_char():
    """`_FAST` has a match for every char it can be given (all but U+2044 and U+202F, which
    `_HARD` takes, and unbuilt astral chars, which are replaced), so `findall` never skips one."""
    chars = "".join(
        chr(c) for c in [*range(0xD800), *range(0xE000, 0x10000), *range(0x1F000, 0x1FB00), *range(0xE0000, 0xE01F0), 0x20000, 0x3FFFD]
        if chr(c) not in "\u2044\u202f"
    )
    for text in (chars, chars[::-1], " ".join(chars)):
        assert sum(map(len, fast._FAST.findall(text))) == len(text)


def test_stand_ins_cover_every_property_tuple():
    """Astral chars outside the built blocks are matched through a BMP char with the same
    properties: there is one for every tuple (but Regional_Indicator's, in a built block)."""
    bmp = {fast._props(chr(c)) for c in [*range(0x20, 0xD800), *range(0xE000, 0x10000)]}
    assert bmp <= set(fast._BY_PROPS)
    for c in random.Random(8).sample(range(0x10000, 0x110000), 50_000):
        assert fast._props(chr(c)) in fast._BY_PROPS or 0x1F1E6 <= c <= 0x1F1FF
    assert all(fast._props(rep) == key for key, rep in fast._BY_PROPS.items())


def test_unicode_bmp_two_contexts():
    """Every BMP code point (matched with tables built at import) between letters and after ZWJ:
    word-break class, \\p{P}, camelCase, emoji. Astral chars are matched through BMP stand-ins."""
    code_points = list(range(0x10000)) + random.Random(6).sample(range(0x10000, 0x110000), 20_000)
    bad = probe_code_points(code_points, split_words, reference, templates=("a{c}a", "\t\u200d{c}"))
    assert bad == [], [hex(c) for c in bad[:20]]



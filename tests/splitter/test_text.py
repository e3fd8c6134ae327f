"""hat.splitter.text: `split_words` word for word against hat-splitter 0.1.10, causality, special tokens, the size
limit and bad input.

    python -m pytest tests/splitter -q
"""

import random
import re

import pytest

from hat.splitter import WordBoundaryDetector, split_with_specials, split_words, uax29, word_lengths_from_bytes
from tests.helpers.text import mixed_text, random_unicode

from .reference import assert_parity, reference

# ----------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------

ARCHITECTURE_EXAMPLES = {  # ARCHITECTURE.md §1 and the splits observed on the release
    "Hello, world!": ["Hello,", " world!"],
    "hello   world": ["hello", "   ", "world"],
    "thisIsCamel": ["this", "Is", "Camel"],
    "don't": ["don'", "t"],
    "3.14159 and 1,000": ["3.", "14159", " and", " 1,", "000"],
    "a\r\nb": ["a", "\r\n", "b"],
    "Straße über": ["Straße", " über"],
}


@pytest.mark.parametrize("text", list(ARCHITECTURE_EXAMPLES))
def test_architecture_examples(text):
    expected = [w.encode() for w in ARCHITECTURE_EXAMPLES[text]]
    assert split_words(text) == expected
    assert reference(text) == expected


TRICKY = [
    "", " ", "  ", "\t", "\n", "\r\n\r\n", " \n ", "x", "HTTPServer", "XMLHttpRequest", "iPhone", "getElementById",
    "__init__", "a_b", "snake_case_name", "\t\tx", "a\u00a0b", " \u0301a", " \u0301.", "a.\u0301b", "a.\u0301", "_\u0301a",
    "a\u200d🙂b", "a:\u200d🙂", "👨‍👩‍👧 hi", "🏳️‍🌈", "👍🏽x", "🇩🇪🇫🇷🇮", "\u200d🙂", "ℹb", "a\u200dℹb", "🙂\u200d‼\u0301",
    "l'amour", "1⁄2", "a⁄b", "x\u2044", "a\u202fb", "Bonjour\u202f!", "1\u202f000", "\u05d0'x", "\u05d0\"\u05d1",
    "צה״ל", "גימ׳\u0301ב", "  .", " .", "\t.", "a  \u0301b", "a\r\n\r\nb", "..", "a..b", "x \t\u0301", "x \t", "1٫5",
    "ア゠イ", "カタカナー", "ｶﾀｶﾅ", "中文。", "\u0301abc def", "ab \u0301\u0301 x", "\x00\x01\x7f", "e\u0301\u0301B",
    "\u00b8a", "a\u0295B", "x\U00010ED0y", "\U0001D400\U0001D401bc", "\U00012000\u200d🙂", "1\ufe0f\u20e3", "#\ufe0f\u20e3",
    "a\u200dℹZ", "🏽\u200dℹÉ", "  ;-𝐀⃣\u200dℹ𞤀あ-",  # ℹ (Ll) ends an emoji sequence: no camelCase cut after it
    "1e-5 3.14 1,000.5 -42 0xFF", "https://example.com/a?b=c#d", "max.mustermann@example.com", "\u2028\u2029\x85\x0b\x0c",
]


@pytest.mark.parametrize("text", TRICKY)
def test_parity_tricky(text):
    for max_word_size in (1, 4, 100):
        assert_parity(text, max_word_size)
    assert [w.encode() for w in uax29._split_exact(text)] == reference(text, 10**9)


@pytest.mark.parametrize("max_word_size", [100, 7, 4, 1])
def test_parity_mixed_text(corpus, max_word_size):
    """Every word of 1.2 MB of mixed text, for several size limits."""
    assert len(corpus.encode()) >= 1_000_000
    assert_parity(corpus, max_word_size)


def test_parity_dense_random_unicode():
    """Random code points from many blocks, a third of them chars around which UAX #29 is subtle."""
    rng = random.Random(1)
    text = "".join(random_unicode(rng, rng.randrange(1, 60)) + rng.choice(["", " ", "\n"]) for _ in range(6000))
    assert_parity(text)
    assert_parity(text, 7)


def test_parity_short_random_strings():
    """Many short strings over an alphabet of tricky chars (marks, ZWJ, joiners, quotes, emoji,
    astral letters), where each word boundary decision shows."""
    rng = random.Random(7)
    alphabet = list("aZ1 .,:'\"_\t\n\r-$") + [
        "\u0301", "\u200d", "\ufe0f", "🙂", "👍", "\U0001F3FD", "\u05d0", "\u30a2", "\u30fc", "🇩", "🇪", "\u00a0",
        "\u3000", "\u2044", "\u202f", "\u00ad", "\u200b", "ℹ", "中", "\u0e01", "\u0e31", "ß", "É", "\u066b", "\u05f3",
        "\u30a0", "‼", "\U0001D400", "\U00010000", "\U0001D165", "\U000E0041", "\U00011047", "\U0001E900",
    ]
    for _ in range(8000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))
        assert split_words(text) == reference(text), repr(text)
        text = random_unicode(rng, rng.randint(1, 16))
        assert split_words(text, 3) == reference(text, 3), repr(text)


# ----------------------------------------------------------------------------------------------
# Causality (ARCHITECTURE.md §1: each word of split(prefix) is a byte-prefix of the matching word of split(text))
# ----------------------------------------------------------------------------------------------

def _causal_at_every_cut(text: str) -> list[int]:
    """Char positions where split(prefix) is not word-by-word a prefix of split(text)."""
    full = split_words(text, 10**9)
    bad = []
    for i in range(1, len(text)):
        part = split_words(text[:i], 10**9)
        if len(part) > len(full) or any(not f.startswith(p) for p, f in zip(part, full)):
            bad.append(i)
        elif part[:-1] != full[: len(part) - 1]:  # all but the last word are final
            bad.append(i)
    return bad


def test_causality_on_mixed_snippets():
    rng = random.Random(3)
    text = mixed_text(400_000, seed=3)
    for _ in range(150):
        start = rng.randrange(len(text) - 200)
        snippet = text[start : start + rng.randrange(20, 200)]
        assert _causal_at_every_cut(snippet) == [], repr(snippet)


@pytest.mark.parametrize(
    "prefix, text",
    [(" \t", " \t\u0301"), (" \u00a0", " \u00a0\u0301"), ("1\u2044", "1\u20442")],
)
def test_known_non_causal_cases(prefix, text):
    """The rule looks ahead here (hat-splitter agrees): a completed word changes later."""
    assert split_words(prefix) == reference(prefix)
    assert split_words(text) == reference(text)
    part, full = split_words(prefix), split_words(text)
    assert part[:-1] != full[: len(part) - 1]


# ----------------------------------------------------------------------------------------------
# Special tokens
# ----------------------------------------------------------------------------------------------

EOT = {"<|eot_id|>": 192}


def test_split_with_specials():
    text = "<|begin_of_text|>Hi there<|eot_id|><|eot_id|> ok<|eot_id|>"
    words = split_with_specials(text, EOT)
    assert words == split_words("<|begin_of_text|>Hi there") + [b"\xc0", b"\xc0"] + split_words(" ok") + [b"\xc0"]
    assert split_with_specials("no specials", EOT) == split_words("no specials")
    assert split_with_specials("<|eot_id|>", EOT) == [b"\xc0"]
    longer = {**EOT, "<|x|>": 0xF5, "<|x|>y": 0xF6}  # the longer special wins
    assert split_with_specials("a<|x|>yz", longer) == [b"a", b"\xf6", b"z"]
    # The one rule of hat.special_tokens (tested there): here, that it is applied.
    with pytest.raises(ValueError, match="65"):
        split_with_specials("x", {"<|eot_id|>": 65})
    with pytest.raises(ValueError, match=re.escape("must contain '<|eot_id|>'")):
        split_with_specials("a<|eot_id|>b", {})


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

def test_empty_and_whitespace():
    assert split_words("") == [] == reference("")
    for text in [" ", "   ", "\t \t", "\n\n", " \r\n ", "\u3000 \u00a0", " " * 250]:
        assert_parity(text)
    assert word_lengths_from_bytes(b"") == []


def test_control_chars_and_nul():
    text = "".join(map(chr, range(32))) + "a\x00b\x7f\x85c\x9f" + " \x00 " + "x\x1cy\x1dz"
    assert_parity(text)
    assert_parity(text, 1)


@pytest.mark.parametrize("unit", ["a", "ä", "한", "\U0001D400"])  # letters of 1-4 bytes
def test_ten_megabyte_word(unit):
    """A single 10 MB word: linear time, cut into chunks of at most 100 bytes, each valid UTF-8."""
    text = unit * (10_000_000 // len(unit.encode()))
    words = split_words(text)
    assert words == reference(text)
    assert b"".join(words) == text.encode()
    step = 100 // len(unit.encode()) * len(unit.encode())
    assert {len(w) for w in words[:-1]} == {step}
    assert all(w.decode() for w in words[:3] + words[-3:])


def test_max_word_size_validation():
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match=repr(bad).replace(".", r"\.")):
            split_words("abc", bad)
        with pytest.raises(ValueError):
            word_lengths_from_bytes(b"abc", max_word_size=bad)
    with pytest.raises(ValueError):
        WordBoundaryDetector(max_word_size=0)
    with pytest.raises(TypeError):
        split_words(b"bytes")
    with pytest.raises(UnicodeEncodeError):
        split_words("lone \ud800 surrogate")
    assert split_words("\U0001F600", 2) == reference("\U0001F600", 2) == [b"\xf0\x9f", b"\x98\x80"]
    assert split_words("für", 2) == reference("für", 2) == [b"f", "ü".encode(), b"r"]



def test_public_api():
    import hat

    assert hat.split_words is split_words and hat.split_words("Hello, world!", max_word_size=100) == [b"Hello,", b" world!"]
    assert hat.split_words("x" * 5, max_word_size=2) == [b"xx", b"xx", b"x"]

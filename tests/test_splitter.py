"""hat.splitter: parity with hat-splitter 0.1.10, the byte rule, the online detector, bad input.

    python -m pytest tests/test_splitter.py -q
"""

import random

import numpy as np
import pytest

from hat import splitter
from hat.splitter import (
    Push,
    WordBoundaryDetector,
    encode_batch,
    split_with_specials,
    split_words,
    word_lengths_batch,
    word_lengths_from_bytes,
)
from tests.helpers.parity import first_mismatch, probe_code_points
from tests.helpers.text import mixed_text, random_unicode

hat_splitter = pytest.importorskip("hat_splitter")
REFERENCE = hat_splitter.HATSplitter()


def reference(text: str, max_word_size: int = 100) -> list[bytes]:
    return REFERENCE.split_with_limit(text, max_word_size)


def assert_parity(text: str, max_word_size: int = 100) -> None:
    report = first_mismatch(split_words(text, max_word_size), reference(text, max_word_size))
    assert report is None, report


@pytest.fixture(scope="module")
def corpus() -> str:
    """1.2 MB of seeded mixed text: prose (en/de), code, CJK, emoji, numbers, URLs, random Unicode."""
    return mixed_text(1_200_000, seed=0)


# ----------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------

SPEC_EXAMPLES = {
    "Hello, world!": ["Hello,", " world!"],
    "hello   world": ["hello", "   ", "world"],
    "thisIsCamel": ["this", "Is", "Camel"],
    "don't": ["don'", "t"],
    "3.14159 and 1,000": ["3.", "14159", " and", " 1,", "000"],
    "a\r\nb": ["a", "\r\n", "b"],
    "Straße über": ["Straße", " über"],
}


@pytest.mark.parametrize("text", list(SPEC_EXAMPLES))
def test_spec_examples(text):
    expected = [w.encode() for w in SPEC_EXAMPLES[text]]
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
    assert [w.encode() for w in splitter._split_exact(text)] == reference(text, 10**9)


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


def test_fast_pattern_covers_every_char():
    """`_FAST` has a match for every char it can be given (all but U+2044 and U+202F, which
    `_HARD` takes, and unbuilt astral chars, which are replaced), so `findall` never skips one."""
    chars = "".join(
        chr(c) for c in [*range(0xD800), *range(0xE000, 0x10000), *range(0x1F000, 0x1FB00), *range(0xE0000, 0xE01F0), 0x20000, 0x3FFFD]
        if chr(c) not in "\u2044\u202f"
    )
    for text in (chars, chars[::-1], " ".join(chars)):
        assert sum(map(len, splitter._FAST.findall(text))) == len(text)


def test_stand_ins_cover_every_property_tuple():
    """Astral chars outside the built blocks are matched through a BMP char with the same
    properties: there is one for every tuple (but Regional_Indicator's, in a built block)."""
    bmp = {splitter._props(chr(c)) for c in [*range(0x20, 0xD800), *range(0xE000, 0x10000)]}
    assert bmp <= set(splitter._BY_PROPS)
    for c in random.Random(8).sample(range(0x10000, 0x110000), 50_000):
        assert splitter._props(chr(c)) in splitter._BY_PROPS or 0x1F1E6 <= c <= 0x1F1FF
    assert all(splitter._props(rep) == key for key, rep in splitter._BY_PROPS.items())


def test_exact_engine_alone(corpus):
    """The fallback engine on its own is exact too (it normally sees only the rare hard regions)."""
    text = corpus[:150_000]
    words = [w.encode() for w in splitter._split_exact(text)]
    assert first_mismatch(words, reference(text, 10**9)) is None


def test_unicode_overrides():
    """The override tables: every overridden code point plus a seeded sample of all others, each
    split in 16 contexts, agree with hat-splitter."""
    overridden = {ord(c) for c in splitter._WB_OTHER_CHARS | splitter._EP_EXTRA_CHARS | splitter._P_DROP_CHARS | splitter._LL_EXTRA_CHARS}
    sample = random.Random(2).sample(range(0x110000), 12_000)
    code_points = sorted(overridden | set(sample) | set(range(0x300)))
    assert probe_code_points(code_points, split_words, reference) == []


def test_unicode_bmp_two_contexts():
    """Every BMP code point (matched with tables built at import) between letters and after ZWJ:
    word-break class, \\p{P}, camelCase, emoji. Astral chars are matched through BMP stand-ins."""
    code_points = list(range(0x10000)) + random.Random(6).sample(range(0x10000, 0x110000), 20_000)
    bad = probe_code_points(code_points, split_words, reference, templates=("a{c}a", "\t\u200d{c}"))
    assert bad == [], [hex(c) for c in bad[:20]]


# ----------------------------------------------------------------------------------------------
# Causality (SPEC §1: each word of split(prefix) is a byte-prefix of the matching word of split(text))
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
# Special tokens and bytes
# ----------------------------------------------------------------------------------------------

EOT = {"<|eot_id|>": 192}


def test_split_with_specials():
    text = "<|begin_of_text|>Hi there<|eot_id|><|eot_id|> ok<|eot_id|>"
    words = split_with_specials(text, EOT)
    assert words == split_words("<|begin_of_text|>Hi there") + [b"\xc0", b"\xc0"] + split_words(" ok") + [b"\xc0"]
    assert split_with_specials("no specials", EOT) == split_words("no specials")
    assert split_with_specials("<|eot_id|>", EOT) == [b"\xc0"]
    assert split_with_specials("a<|eot_id|>b", {}) == split_words("a<|eot_id|>b")
    longer = {"<|x|>": 0xF5, "<|x|>y": 0xF6}  # the longer special wins
    assert split_with_specials("a<|x|>yz", longer) == [b"a", b"\xf6", b"z"]
    with pytest.raises(ValueError, match="65"):
        split_with_specials("x", {"<|bad|>": 65})


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


# ----------------------------------------------------------------------------------------------
# Online detector
# ----------------------------------------------------------------------------------------------

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


r"""HAT word splitting: text and byte sequences -> words (SPEC §1).

The released TFree-HAT models were trained on the words of the Rust package `hat-splitter` 0.1.10,
`HATSplitter().split_with_limit(text, 100)`. `split_words` is byte-identical to it, in pure Python
(the standard library's `re` and the `regex` module's Unicode tables):

    from hat.splitter import split_words
    split_words("Hello, world!")          # [b'Hello,', b' world!']

The rule, as the Rust crate implements it:
1. UAX #29 word boundaries, as computed by `unicode-segmentation` 1.12: a state machine with its
   own quirks (a ZWJ followed by an Extended_Pictographic char joins them whatever came before).
2. Split after every `\p{P}` char. 3. Split a `\p{Ll}` directly followed by a `\p{Lu}`.
4. Merge consecutive `" "` pieces; classify Space (exactly `" "`), Whitespace (all `\s`),
   Punctuation (one `\p{P}` char), Word.
5. Join Space + Word, and (Space | Word | Punctuation) + Punctuation, left to right.
6. Cut words longer than `max_word_size` bytes at UTF-8 char boundaries (mid-char only when one
   char is longer than the limit).

How it is computed. Steps 2-5 only look at neighbouring pieces, so each word can be matched
directly: `" "? (token \p{P}* | \p{P}+) | whitespace`, where a token is a UAX #29 segment cut at
punctuation: a letter/digit run, a Katakana run, a regional-indicator pair, or any other char,
each with the Extend/Format/ZWJ chars that WB4 attaches to it. That is one compiled pattern
(`_FAST`), so the loop over chars runs in C and Python only touches whole words; camelCase cuts
come from a second pattern. `_FAST` uses `re` with explicit classes built at import from
`regex`'s tables: `re` compiles them to bitmaps and runs 2-4x faster than `regex` does on
property classes. Astral chars outside the emoji/CJK/tag blocks are replaced, for matching only,
by a BMP char with the same six properties (the rule reads nothing else).
`_FAST` is exact except where UAX #29 needs more than the previous char: a combining/format char
right after punctuation that can join two letters or digits (`a.\u0301b` keeps the mark with the
`b`, `a.\u0301` with the `.`), ZWJ + an emoji that is punctuation, and the word-joining chars
that are not punctuation (U+2044 FRACTION SLASH between digits, U+202F NARROW NO-BREAK SPACE).
`_HARD` finds those; the region around each (between whitespace runs and newlines, which are
always word boundaries) is split by `_split_exact` (in `hat._uax29`), a line-by-line port of the
Rust crate and of `unicode-segmentation`'s forward iterator. `regex`'s `(?w)\b` is not used: it
departs from UAX #29 (WB4 applied on one side only, an apostrophe-vowel tailoring, regional
indicators) and does not have `unicode-segmentation`'s quirks, which is where a `\b`-based
splitter diverges around U+200D and other format chars.

Unicode versions. `regex` ships Unicode 17 tables; the Rust crate was built with Unicode 16
(`unicode-segmentation` 1.12, `regex-syntax` 0.8.5). The code points whose words differ were found
by splitting every code point in 16 contexts with both (`hat.testing.probe_code_points`) and are
fixed by the override tables in `hat._uax29`; `tests/test_splitter.py` re-checks them. Unicode 17
additions are `Word_Break=Other` (5 of them not `\p{P}`), 707 pictographs that Unicode 17 dropped
from Extended_Pictographic still count as emoji after a ZWJ, U+00B8 is not a letter and U+0295 is
`Ll`.

Byte sequences (`word_lengths_from_bytes`, `word_lengths_batch`) extend the rule to any bytes
(model inputs with special-token bytes, invalid UTF-8); `WordBoundaryDetector` finds word ends
online, one byte at a time, for generation; `encode_batch` prepares a batch for collation.
"""

from __future__ import annotations

import dataclasses
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate, compress, count

import numpy as np
import regex

from . import _uax29
from ._uax29 import _C_EP, _C_LL, _C_LU, _C_P, _C_WS, _EFZ, _WB_OTHER, _props, _split_exact

__all__ = [
    "DEFAULT_MAX_WORD_SIZE",
    "DEFAULT_SPECIAL_BYTE_VALUES",
    "Push",
    "WordBoundaryDetector",
    "encode_batch",
    "split_with_specials",
    "split_words",
    "word_lengths_batch",
    "word_lengths_from_bytes",
]

DEFAULT_MAX_WORD_SIZE = 100
DEFAULT_SPECIAL_BYTE_VALUES = frozenset({192})  # <|eot_id|> in the released models
# Byte values that never occur in valid UTF-8: the only ones a special token may use.
NON_UTF8_BYTE_VALUES = frozenset({0xC0, 0xC1, *range(0xF5, 0x100)})

# The Unicode tables and the exact engine live in `hat._uax29` (imported above); the override
# tables' char sets are re-exported here for `tests/test_splitter.py`.
_WB_OTHER_CHARS = _uax29._WB_OTHER_CHARS
_EP_EXTRA_CHARS = _uax29._EP_EXTRA_CHARS
_P_DROP_CHARS = _uax29._P_DROP_CHARS
_LL_EXTRA_CHARS = _uax29._LL_EXTRA_CHARS


# ----------------------------------------------------------------------------------------------
# Fast path: one pattern whose matches are the words.
# ----------------------------------------------------------------------------------------------

# The pattern runs on the standard library's `re`: with explicit classes of BMP chars (compiled
# to a two-level bitmap) it is 2-4x faster than `regex` with property classes. The classes are
# built here from `regex`'s tables and the overrides, over the BMP plus the emoji and tag blocks
# (CJK extensions are all Word_Break=Other, which is what a class not listing them means).
_ASTRAL_BLOCKS = ((0x1F000, 0x1FAFF), (0xE0000, 0xE01EF))  # classes list their members here
_TABLE_CHARS = "".join(
    "".join(map(chr, range(lo, hi + 1)))
    for lo, hi in ((0, 0xD7FF), (0xE000, 0xFFFF), *_ASTRAL_BLOCKS)
)


def _re_class_body(cls: str) -> str:
    """The chars of `regex` class `cls` among `_TABLE_CHARS`, as the body of an `re` class."""
    parts = []
    for m in regex.finditer(rf"(?V1){cls}+", _TABLE_CHARS):
        lo, hi = ord(_TABLE_CHARS[m.start()]), ord(_TABLE_CHARS[m.end() - 1])
        parts.append(f"\\U{lo:08x}" if lo == hi else f"\\U{lo:08x}-\\U{hi:08x}")
    return "".join(parts)


_MID = r"\p{WB=MidLetter}\p{WB=MidNum}\p{WB=MidNumLet}\p{WB=Single_Quote}\p{WB=Double_Quote}\p{WB=ExtendNumLet}"
_R_LD = _re_class_body(rf"[[\p{{WB=ALetter}}\p{{WB=Hebrew_Letter}}\p{{WB=Numeric}}]--[{_WB_OTHER}]--{_C_P}]")
_R_EF = _re_class_body(rf"[[\p{{WB=Extend}}\p{{WB=Format}}]--[{_WB_OTHER}]]")  # WB4 marks, ZWJ apart
_R_KAT = _re_class_body(rf"[\p{{WB=Katakana}}--[{_WB_OTHER}]--{_C_P}]")
_R_P = _re_class_body(_C_P)
_R_LL = _re_class_body(rf"[[\p{{WB=ALetter}}--[{_WB_OTHER}]]&&{_C_LL}]")
_R_LU = _re_class_body(rf"[[\p{{WB=ALetter}}--[{_WB_OTHER}]]&&{_C_LU}]")
_R_WS = _re_class_body(_C_WS)
_R_EP = _re_class_body(_C_EP)
# Not handled by the pattern (see `_HARD`): word-joining chars that are not punctuation (U+2044,
# U+202F).
_R_HARD_CHARS = _re_class_body(rf"[[{_MID}]--{_C_P}--[{_WB_OTHER}]]")
# Punctuation after which a mark may belong to the next letter/digit: the Mid* joiners, and
# punctuation that UAX #29 counts as a letter, digit or Katakana.
_R_MID_P = _re_class_body(
    rf"[{_C_P}&&[{_MID}\p{{WB=ALetter}}\p{{WB=Hebrew_Letter}}\p{{WB=Numeric}}\p{{WB=Katakana}}]]"
)
_R_EP_P = _re_class_body(rf"[{_C_EP}&&{_C_P}]")
_R_RI = r"\U0001f1e6-\U0001f1ff"
_R_NL = r"\n\x0b\x0c\r\x85\u2028\u2029"
_R_WSEG = r"\x20\u1680\u2000-\u2006\u2008-\u200a\u205f\u3000"
_R_WSO = r"\t\xa0\u2007"  # whitespace that is Word_Break=Other: a word each
# Other astral chars are replaced, for matching, by a BMP char with the same properties (the rule
# reads nothing else), or by U+2044 (see `_HARD`) if there is none.
# The first BMP char of each property tuple that occurs in the BMP (`tests/test_splitter.py` checks
# the list is complete; of the astral tuples only Regional_Indicator's is missing, and those chars
# are in the built blocks).
_BY_PROPS = {_props(chr(c)): chr(c) for c in (
    0x20, 0x21, 0x22, 0x24, 0x27, 0x2C, 0x2E, 0x30, 0x3A, 0x41, 0x5F, 0x61, 0x85, 0xA0, 0xA9, 0xAA, 0xAD,
    0x300, 0x55A, 0x5D0, 0x66B, 0x200D, 0x202F, 0x203C, 0x2044, 0x2139, 0x24C2, 0x3031, 0x30A0, 0xA7CE,
    0xA7CF,
)}


def _stand_in(ch: str) -> str:
    return _BY_PROPS.get(_props(ch), "\u2044")  # U+2044: no BMP char like it, `_HARD` takes it


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # (one range: a fast scan)
_ASTRAL_UNBUILT = re.compile(  # astral chars outside the built blocks and the CJK extensions
    r"[\U00010000-\U0001efff\U0001fb00-\U0001ffff\U00040000-\U000dffff\U000e01f0-\U0010ffff]"
)


def _map_astral(text: str) -> str:
    """`text` with each astral char outside the built blocks replaced by its stand-in."""
    chars = set(_ASTRAL_UNBUILT.findall(text))
    return text.translate({ord(c): _stand_in(c) for c in chars}) if chars else text


_MARKS = rf"(?:\u200d[{_R_EP}]|[{_R_EF}\u200d])"  # after a char that takes marks: WB4, WB3c


def _zwj_tail(run: str) -> str:
    """After a run of `run` chars: a ZWJ inside the run, or ZWJ + emoji, which ends it (WB3c)."""
    return rf"(?:\u200d(?![{_R_EP}])[{run}]*)*(?:\u200d[{_R_EP}]{_MARKS}*)?"


_FAST = re.compile(
    # [Space] (token Punct* | Punct+). A token is one UAX #29 segment cut at punctuation: a
    # letter/digit run, any other char, a Katakana run, a regional-indicator pair, a run of marks
    # (after punctuation, a newline or the start), or a tab/no-break space with marks; each with
    # the marks after it (and an emoji with ZWJ + emoji after it).
    rf"\x20?(?:[{_R_LD}][{_R_LD}{_R_EF}]*{_zwj_tail(_R_LD + _R_EF)}[{_R_P}]*"
    rf"|(?![{_R_WS}])(?:(?:[^{_R_LD}{_R_EF}\u200d{_R_KAT}{_R_RI}{_R_P}{_R_WS}]{_MARKS}*"  # (fail fast on whitespace)
    rf"|[{_R_KAT}][{_R_KAT}{_R_EF}]*{_zwj_tail(_R_KAT + _R_EF)}"
    rf"|[{_R_RI}](?:[{_R_EF}]|\u200d(?![{_R_EP}]))*(?:[{_R_RI}](?:[{_R_EF}]|\u200d(?![{_R_EP}]))*)?"
    rf"(?:\u200d[{_R_EP}]{_MARKS}*)?"
    rf"|{_MARKS}+)[{_R_P}]*"
    rf"|[{_R_P}]+)"
    rf"|[{_R_WSO}]{_MARKS}+[{_R_P}]*)"
    # Whitespace words (whitespace with marks after it is a Word)
    rf"|\r\n|[{_R_NL}]|[{_R_WSEG}]+{_MARKS}+[{_R_P}]*"
    rf"|[{_R_WSEG}]{{2,}}|[\u1680\u2000-\u2006\u2008-\u200a\u205f\u3000]|[{_R_WSO}]"
    r"|\x20"
)
_CAMEL = re.compile(rf"[{_R_LU}](?<=[{_R_LL}].)")  # `_FAST` keeps camelCase whole: cut before these
# Where `_FAST` is not exact: `_R_HARD_CHARS`, a mark after punctuation that can join two letters or
# digits (the mark may then belong to the next letter), and ZWJ + an emoji that is punctuation
# (split after it). The pattern starts with a class, so `re` skips ahead quickly.
_HARD = re.compile(
    rf"[{_R_HARD_CHARS}{_R_MID_P}\u200d]"
    rf"(?:(?<=[{_R_HARD_CHARS}])|(?<=[{_R_MID_P}])(?=[{_R_EF}\u200d])|(?<=\u200d)(?=[{_R_EP_P}]))"
)
_REGION_BREAK = re.compile(rf"[{_R_NL}{_R_WSEG}]")
_NL_CHARS = frozenset("\n\x0b\x0c\r\x85\u2028\u2029")
_WSEG_CHARS = frozenset("\x20\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u205f\u3000")


def _fast(text: str, pos: int, end: int) -> list[str]:
    """`_FAST` words of `text[pos:end]`, cut at camelCase."""
    words = _FAST.findall(text, pos, end)  # every char starts a match (tests/test_splitter.py checks)
    cuts = [m.start() for m in _CAMEL.finditer(text, pos, end)]
    if not cuts:
        return words
    offsets = list(accumulate(map(len, words), initial=pos))  # start of each word, then `end`
    out: list[str] = []
    done = 0  # words[:done] are in `out`
    j = 0
    while j < len(cuts):
        i = bisect_right(offsets, cuts[j]) - 1  # the word holding cuts[j]
        if offsets[i] == cuts[j]:  # already a word start (e.g. after "a\u200dℹ", which ends a segment)
            j += 1
            continue
        out += words[done:i]
        word, base, stop = words[i], offsets[i], offsets[i + 1]
        st = 0
        while j < len(cuts) and cuts[j] < stop:
            out.append(word[st : cuts[j] - base])
            st = cuts[j] - base
            j += 1
        out.append(word[st:])
        done = i + 1
    out += words[done:]
    return out


def _region_start(text: str, lo: int, h: int) -> int:
    """Start of the region holding `text[h]`: after the last newline before it, or at the start
    of the last whitespace run before it; never before `lo`."""
    i = h - 1
    while i >= lo and text[i] not in _NL_CHARS and text[i] not in _WSEG_CHARS:
        i -= 1
    if i < lo or text[i] in _NL_CHARS:
        return i + 1
    while i > lo and text[i - 1] in _WSEG_CHARS:
        i -= 1
    return i


def _split_region(region: str) -> list[str]:
    """Words of a region (see `_split_str`) that holds astral chars outside the built blocks."""
    mapped = _map_astral(region)
    if _HARD.search(mapped) is not None:
        return _split_exact(region)
    words = _fast(mapped, 0, len(mapped))
    offsets = list(accumulate(map(len, words), initial=0))  # the same lengths, in `region`
    return [region[a:b] for a, b in zip(offsets, offsets[1:])]


def _split_str(text: str) -> list[str]:
    """The words of `text` before the size limit, as `str`."""
    n = len(text)
    hard = _HARD.search(text)
    astral = None if text.isascii() or _ASTRAL.search(text) is None else _ASTRAL_UNBUILT.search(text)
    if hard is None and astral is None:
        return _fast(text, 0, n)
    words: list[str] = []
    pos = 0
    while hard is not None or astral is not None:
        # The next char `_FAST` cannot handle on its own; its region runs from the start of the
        # whitespace run before it (or from after a newline) to the next whitespace/newline. Both
        # ends are always word boundaries, where UAX #29 starts afresh.
        h = min(m.start() for m in (hard, astral) if m is not None)
        start = _region_start(text, pos, h)
        m = _REGION_BREAK.search(text, h + 1)
        end = m.start() if m is not None else n
        if start > pos:
            words += _fast(text, pos, start)
        region = text[start:end]
        words += _split_exact(region) if hard is not None and hard.start() == h else _split_region(region)
        pos = end
        if hard is not None and hard.start() < pos:
            hard = _HARD.search(text, pos)
        if astral is not None and astral.start() < pos:
            astral = _ASTRAL_UNBUILT.search(text, pos)
    if pos < n:
        words += _fast(text, pos, n)
    return words


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


def _special_pattern(special_token_dict: dict[str, int]) -> regex.Pattern:
    for tok, value in special_token_dict.items():
        if not tok:
            raise ValueError("special token strings must be non-empty")
        if value not in NON_UTF8_BYTE_VALUES:
            raise ValueError(
                f"special token {tok!r} uses byte value {value!r}; it must be one that never occurs "
                f"in UTF-8 (0xC0, 0xC1 or 0xF5-0xFF)"
            )
    # Longest first, so that a token that is a prefix of another does not win.
    alts = sorted(special_token_dict, key=len, reverse=True)
    return regex.compile("|".join(regex.escape(t) for t in alts))


_SPECIAL_PATTERNS: dict[tuple, regex.Pattern] = {}


def _specials(special_token_dict: dict[str, int]) -> regex.Pattern:
    key = tuple(sorted(special_token_dict.items()))
    if key not in _SPECIAL_PATTERNS:
        _SPECIAL_PATTERNS[key] = _special_pattern(special_token_dict)
    return _SPECIAL_PATTERNS[key]


def split_with_specials(
    text: str, special_token_dict: dict[str, int], max_word_size: int = DEFAULT_MAX_WORD_SIZE
) -> list[bytes]:
    """Split trusted template text in which special tokens stand for one byte each.

    Each occurrence of a key of `special_token_dict` (e.g. `"<|eot_id|>"`) becomes the one-byte
    word `bytes([value])`; the text between occurrences is split with `split_words` on its own.

    Args:
        text (`str`): chat-template text; only pass text whose special strings are meant as tokens.
        special_token_dict (`dict[str, int]`): special string -> byte value (0xC0, 0xC1, 0xF5-0xFF).
        max_word_size (`int`): as in `split_words`.

    Raises:
        `ValueError`: for a byte value that can occur in UTF-8, an empty token, or `max_word_size < 1`.
    """
    _check_max_word_size(max_word_size)
    if not special_token_dict:
        return split_words(text, max_word_size)
    pattern = _specials(special_token_dict)
    words: list[bytes] = []
    pos = 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            words += split_words(text[pos : m.start()], max_word_size)
        words.append(bytes([special_token_dict[m.group()]]))
        pos = m.end()
    if pos < len(text):
        words += split_words(text[pos:], max_word_size)
    return words


# ----------------------------------------------------------------------------------------------
# Public API: bytes
# ----------------------------------------------------------------------------------------------

def _check_specials(special_byte_values: Iterable[int]) -> frozenset[int]:
    values = frozenset(special_byte_values)
    bad = sorted(v for v in values if v not in NON_UTF8_BYTE_VALUES)
    if bad:
        raise ValueError(f"special byte values {bad} can occur in UTF-8; use 0xC0, 0xC1 or 0xF5-0xFF")
    return values


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
    return _lengths(_as_bytes(data), _check_specials(special_byte_values), max_word_size)


def word_lengths_batch(
    rows: Sequence[bytes | Sequence[int]],
    special_byte_values: Iterable[int] = DEFAULT_SPECIAL_BYTE_VALUES,
    max_word_size: int = DEFAULT_MAX_WORD_SIZE,
) -> list[list[int]]:
    """`word_lengths_from_bytes` of each row (rows may have different lengths)."""
    _check_max_word_size(max_word_size)
    specials = _check_specials(special_byte_values)
    return [_lengths(_as_bytes(row), specials, max_word_size) for row in rows]


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


# ----------------------------------------------------------------------------------------------
# Online word boundaries, for generation
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Push:
    """What one byte did to the word segmentation.

    Attributes:
        completed (`list[bytes]`): the words this byte completed, oldest first (usually none, one
            at a word boundary, two when the byte is a special token: the open word and itself).
        carried (`int`): how many bytes at the start of the new current word were pushed before
            this byte and belonged to the word(s) now completed, e.g. 2 when the third byte of a
            CJK char completes the char and shows it starts a new word. Those positions were
            decoded as part of the old word and must be recomputed. 0 when nothing completed.
    """

    completed: list[bytes]
    carried: int = 0


class WordBoundaryDetector:
    """Finds word ends online, one byte at a time, for one sequence (SPEC §3).

    After each byte, the open (current) word plus the byte is split again with the byte rule
    (`word_lengths_from_bytes`); if that gives more than one word, all but the last are complete
    and the last is the new current word. A special byte completes the current word and is itself
    a complete word. The split restarts at the current word where that is exact: the word is not
    the rest of a longer one cut at `max_word_size`, and does not start with a mark
    (Extend/Format/ZWJ) or U+2044, where UAX #29 depends on what came before. Otherwise the
    completed words of the stretch stay in the split as context (never re-emitted), up to 4 KiB.

        det = WordBoundaryDetector(prefix=prompt_bytes)
        for byte in sampled:
            push = det.push(byte)
            for word in push.completed: ...  # run the connector and one backbone step

    Feeding `data` byte by byte yields `word_lengths_from_bytes(data)` (completed words, then the
    current word) wherever the rule is causal. It is not always (hat-splitter's rule looks
    ahead): `" \\t"` splits as `[" ", "\\t"]` but `" \\t\\u0301"` as `[" \\t\\u0301"]`, and
    `"1\\u2044"` as `["1", "\\u2044"]` but `"1\\u20442"` as `["1\\u20442"]`; then the words
    already completed stand, and splitting goes on after them.

    Args:
        special_byte_values (iterable of `int`): special byte values (e.g. `{192}` for `<|eot_id|>`).
        max_word_size (`int`): longest word in bytes; the byte that would make the open word longer
            completes it (cut as in `split_words`).
        prefix (`bytes`): bytes already in the sequence (the prompt); its last word is the
            current word.
    """

    _MAX_CONTEXT = 4096  # bytes of context kept before falling back to the current word alone

    def __init__(
        self,
        special_byte_values: Iterable[int] = DEFAULT_SPECIAL_BYTE_VALUES,
        max_word_size: int = DEFAULT_MAX_WORD_SIZE,
        prefix: bytes | Sequence[int] = b"",
    ):
        _check_max_word_size(max_word_size)
        self.special_byte_values = _check_specials(special_byte_values)
        self.max_word_size = max_word_size
        self._context = b""  # the bytes the next split starts from
        self._done = 0  # bytes at the start of `_context` that are in completed words
        prefix = _as_bytes(prefix)
        if prefix:
            offsets, natural = self._split(prefix)
            self._context, self._done = prefix, offsets[-2]
            self._trim(natural)

    @property
    def current_word(self) -> bytes:
        """The open word (empty at the start and after a special byte)."""
        return self._context[self._done :]

    def push(self, byte: int) -> Push:
        """Append one byte; return the words it completed and how many bytes moved."""
        if not 0 <= byte <= 255:
            raise ValueError(f"byte must be in [0, 255], got {byte!r}")
        if byte in self.special_byte_values:
            completed = [self.current_word] if self.current_word else []
            self._context, self._done = b"", 0
            return Push(completed + [bytes((byte,))], 0)
        context = self._context + bytes((byte,))
        if (  # fast path: an ASCII letter/digit after one, no camelCase cut, within the limit
            byte in _ASCII_ALNUM
            and len(context) - self._done <= self.max_word_size
            and context[-2:-1] in _ASCII_ALNUM_BYTES
            and not (_is_lower(context[-2]) and 0x41 <= byte <= 0x5A)
        ):
            self._context = context
            return Push([], 0)
        offsets, natural = self._split(context)
        k = bisect_right(offsets, self._done) - 1  # offsets[k] == _done: the current word starts there
        if offsets[k] != self._done:  # the byte re-split completed words (not causal): keep them
            context = context[self._done :]
            (offsets, natural), self._done, k = self._split(context), 0, 0
        self._context = context
        if len(offsets) - k <= 2:  # still one open word
            return Push([], 0)
        completed = [context[offsets[i] : offsets[i + 1]] for i in range(k, len(offsets) - 2)]
        self._done = offsets[-2]
        self._trim(natural)
        return Push(completed, offsets[-1] - offsets[-2] - 1)

    def finish(self) -> bytes:
        """Complete the open word (end of sequence) and return it; the detector starts afresh."""
        word = self.current_word
        self._context, self._done = b"", 0
        return word

    def _split(self, data: bytes) -> tuple[list[int], set[int]]:
        """Word start offsets in `data` (then `len(data)`), and the starts before the size limit."""
        words = _byte_words(data, self.special_byte_values)
        natural = set(accumulate(map(len, words), initial=0))
        return list(accumulate(map(len, _limit(words, self.max_word_size)), initial=0)), natural

    def _trim(self, natural: set[int]) -> None:
        """Start the context at the current word when splitting from there is exact: a word start
        before the size limit, not at a mark (or when the context has grown too long)."""
        word = self._context[self._done :]
        if (self._done in natural and _restart_ok(word)) or len(self._context) > self._MAX_CONTEXT:
            self._context, self._done = word, 0


_ASCII_ALNUM = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ASCII_ALNUM_BYTES = frozenset(bytes((b,)) for b in _ASCII_ALNUM)


def _is_lower(b: int) -> bool:
    return 0x61 <= b <= 0x7A


def _restart_ok(word: bytes) -> bool:
    """Whether splitting from the start of `word` (a word start) gives what splitting from
    earlier gives: not when it starts with a mark (Extend/Format/ZWJ) or U+2044."""
    if not word or word[0] < 0x80:
        return True
    first = word[: 2 if word[0] < 0xE0 else 3 if word[0] < 0xF0 else 4].decode("utf-8", errors="replace")
    if len(first) != 1 or first == "\ufffd":
        return True  # a stray byte or an unfinished char: the byte rule restarts there anyway
    return first != "\u2044" and _props(first)[0] not in _EFZ

r"""Steps 1-5 of the word rule (see `hat.splitter`), fast: one compiled pattern whose matches are the words.

Steps 2-5 only look at neighbouring pieces, so each word can be matched directly:
`" "? (token \p{P}* | \p{P}+) | whitespace`, where a token is a UAX #29 segment cut at punctuation:
a letter/digit run, a Katakana run, a regional-indicator pair, or any other char, each with the
Extend/Format/ZWJ chars that WB4 attaches to it. That is one compiled pattern (`_FAST`), so the loop
over chars runs in C and Python only touches whole words; camelCase cuts come from a second pattern.
`_FAST` uses `re` with explicit classes built at import from `regex`'s tables: `re` compiles them to
bitmaps and runs 2-4x faster than `regex` does on property classes. Astral chars outside the
emoji/CJK/tag blocks are replaced, for matching only, by a BMP char with the same six properties (the
rule reads nothing else).

`_FAST` is exact except where UAX #29 needs more than the previous char: a combining/format char
right after punctuation that can join two letters or digits (`a.\u0301b` keeps the mark with the
`b`, `a.\u0301` with the `.`), ZWJ + an emoji that is punctuation, and the word-joining chars
that are not punctuation (U+2044 FRACTION SLASH between digits, U+202F NARROW NO-BREAK SPACE).
`_HARD` finds those; the region around each (between whitespace runs and newlines, which are
always word boundaries) is split by `_split_exact` (in `hat.splitter.uax29`), a line-by-line port of
the Rust crate and of `unicode-segmentation`'s forward iterator. `regex`'s `(?w)\b` is not used: it
departs from UAX #29 (WB4 applied on one side only, an apostrophe-vowel tailoring, regional
indicators) and does not have `unicode-segmentation`'s quirks, which is where a `\b`-based
splitter diverges around U+200D and other format chars.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate

import regex

from .uax29 import _C_EP, _C_LL, _C_LU, _C_P, _C_WS, _WB_OTHER, _props, _split_exact

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
# The first BMP char of each property tuple that occurs in the BMP (`tests/splitter/test_fast.py` checks
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
    words = _FAST.findall(text, pos, end)  # every char starts a match (tests/splitter/test_fast.py checks)
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


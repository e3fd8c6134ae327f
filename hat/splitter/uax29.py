r"""The exact engine of `hat.splitter`: a char-by-char port of the Rust `hat-splitter` 0.1.10's word
rule (before the size limit), and the Unicode tables it reads.

`hat.splitter`'s docstring gives the rule (steps 1-6), `hat.splitter.fast`'s how the fast path uses
this module. Here:
- the Unicode tables: `regex`'s (Unicode 17) with the override tables that make them the Rust
  crate's (Unicode 16): `_WB_OTHER`, `_EP_EXTRA`, `_P_DROP`, `_LL_EXTRA` as `regex` class bodies,
  the same as char sets (`_WB_OTHER_CHARS`, ...), and the character classes built from them
  (`_C_P`, `_C_LL`, `_C_LU`, `_C_WS`, `_C_EP`), from which `hat.splitter.fast` builds its patterns;
- `_props`: the six properties of a char that the rule reads (word-break category, `\p{P}`,
  `\p{Ll}`, `\p{Lu}`, White_Space, Extended_Pictographic), cached;
- `_uax29_segments`: a line-by-line port of `unicode-segmentation` 1.12's forward word-bound
  iterator (`split_word_bounds`, quirks included), i.e. step 1;
- `_split_exact`: hat-splitter's lex/parse on top of it (steps 2-5, no size limit). Slow; exact on
  any text; `hat.splitter.fast` uses it for the rare regions its pattern cannot split.
"""

from __future__ import annotations

import regex


# ----------------------------------------------------------------------------------------------
# Unicode tables: `regex`'s (Unicode 17) with the overrides that make them the Rust crate's.
# ----------------------------------------------------------------------------------------------

def _ranges_to_class(spec: str) -> str:
    """`"00B8 058B-058C"` -> regex class body `\\U000000B8\\U0000058B-\\U0000058C`."""
    parts = []
    for item in spec.split():
        lo, _, hi = item.partition("-")
        parts.append(f"\\U{int(lo, 16):08X}" + (f"-\\U{int(hi, 16):08X}" if hi else ""))
    return "".join(parts)


# Word_Break is Other for the Rust crate (Unicode 17 additions, and U+00B8, ALetter since 17).
_WB_OTHER = _ranges_to_class(
    "00B8 0558 058B-058C 05C8-05C9 088F 0B53-0B54 0C5C 0CDC 1ACF-1AF0 208F 209D-209F A7CE-A7CF A7D2 "
    "A7D4 A7DD A7E2 A7F1 AB6C-AB6D 107BB-107BF 10940-10959 10EC5-10EC7 10ECB-10ECF 10ED9-10EEE "
    "10EF0-10EFB 11B0A 11B60-11B67 11DB0-11DDB 11DE0-11DE9 11DF0-11DF1 1246F 12475-1247F "
    "12550-12686 16EA0-16EB8 16EBB-16ED3 1B124-1B128 1B168 1D127-1D128 1D250-1D252 1D25B-1D25C "
    "1D25F 1D280-1D281 1D6A6 1DF1F-1DF24 1DF2B-1DF81 1DF90-1DF96 1DFCD-1DFFF 1E6C0-1E6DE "
    "1E6E0-1E6F5 1E6FE-1E6FF"
)
# Extended_Pictographic for the Rust crate (Unicode 16) but not for Unicode 17.
_EP_EXTRA = _ranges_to_class(
    "2388 2605 2607-260D 260F-2610 2612 2616-2617 2619-261C 261E-261F 2621 2624-2625 2627-2629 "
    "262B-262D 2630-2637 263B-263F 2641 2643-2647 2654-265E 2661-2662 2664 2667 2669-267A "
    "267C-267D 2680-2685 2690-2691 2698 269A 269D-269F 26A2-26A6 26A8-26A9 26AC-26AF 26B2-26BC "
    "26BF-26C3 26C6-26C7 26C9-26CD 26D0 26D2 26D5-26E8 26EB-26EF 26F6 26FB-26FC 26FE-2701 "
    "2703-2704 270E 2710-2711 2765-2767 1F000-1F003 1F005-1F02B 1F030-1F093 1F0A0-1F0AE "
    "1F0B1-1F0BF 1F0C1-1F0CE 1F0D1-1F0F5 1F10D-1F10F 1F12F 1F16C-1F16F 1F1AD-1F1AE 1F260-1F265 "
    "1F322-1F323 1F394-1F395 1F398 1F39C-1F39D 1F3F1-1F3F2 1F3F6 1F4FE 1F546-1F548 1F54F "
    "1F568-1F56E 1F571-1F572 1F57B-1F586 1F588-1F589 1F58E-1F58F 1F591-1F594 1F597-1F5A3 "
    "1F5A6-1F5A7 1F5A9-1F5B0 1F5B3-1F5BB 1F5BD-1F5C1 1F5C5-1F5D0 1F5D4-1F5DB 1F5DF-1F5E0 1F5E2 "
    "1F5E4-1F5E7 1F5E9-1F5EE 1F5F0-1F5F2 1F5F4-1F5F9 1F6C6-1F6CA 1F6D3-1F6D4 1F6E6-1F6E8 1F6EA "
    "1F6F1-1F6F2 1F774-1F77F 1F7D5-1F7DB 1F7F1-1F7FF 1F8B0-1F8BB 1F8C0-1F8C1 1F8D0-1F8D8 "
    "1FA00-1FA57 1FA60-1FA6D"
)
_P_DROP = _ranges_to_class("2E60-2E63 10ED0")  # \p{P} in Unicode 17 only
_LL_EXTRA = _ranges_to_class("0295")  # Ll in Unicode 16, Lo in 17

# Character classes (regex VERSION1 set syntax), each the Rust crate's view.
_C_P = rf"[\p{{P}}--[{_P_DROP}]]"
_C_LL = rf"[\p{{Ll}}{_LL_EXTRA}]"
_C_LU = r"\p{Lu}"
_C_WS = r"\p{White_Space}"  # Rust's \s
_C_EP = rf"[\p{{ExtPict}}{_EP_EXTRA}]"


# ----------------------------------------------------------------------------------------------
# Exact engine: a port of unicode-segmentation's forward UWordBounds + hat-splitter's lex/parse.
# Used for the rare regions `hat.splitter.fast._FAST` cannot split; reads one char at a time.
# ----------------------------------------------------------------------------------------------

(_OTHER, _CR, _LF, _NEWLINE, _EXTEND, _ZWJ, _RI, _FORMAT, _KATAKANA, _HEBREW, _ALETTER, _SQ, _DQ,
 _MIDNUMLET, _MIDLETTER, _MIDNUM, _NUMERIC, _EXTENDNUMLET, _WSEGSPACE) = range(19)
_WB_NAMES = ("Other", "CR", "LF", "Newline", "Extend", "ZWJ", "Regional_Indicator", "Format",
             "Katakana", "Hebrew_Letter", "ALetter", "Single_Quote", "Double_Quote", "MidNumLet",
             "MidLetter", "MidNum", "Numeric", "ExtendNumLet", "WSegSpace")


def _class_chars(body: str) -> frozenset[str]:
    """The chars of a class body made by `_ranges_to_class`."""
    chars: set[str] = set()
    for lo, hi in regex.findall(r"\\U([0-9A-F]{8})(?:-\\U([0-9A-F]{8}))?", body):
        chars.update(map(chr, range(int(lo, 16), int(hi or lo, 16) + 1)))
    return frozenset(chars)


_WB_OTHER_CHARS = _class_chars(_WB_OTHER)
_EP_EXTRA_CHARS = _class_chars(_EP_EXTRA)
_P_DROP_CHARS = _class_chars(_P_DROP)
_LL_EXTRA_CHARS = _class_chars(_LL_EXTRA)
# One match reads all six properties of a char (the `regex` tables; overrides applied after).
# Word-break classes are tried most common first; `lastindex` names the one that matched.
_WB_ORDER = (_OTHER, _ALETTER, _EXTEND, _NUMERIC, _KATAKANA, _FORMAT, _HEBREW, _MIDLETTER, _MIDNUM,
             _MIDNUMLET, _SQ, _DQ, _EXTENDNUMLET, _WSEGSPACE, _RI, _ZWJ, _CR, _LF, _NEWLINE)
_PROPS_RE = regex.compile(
    r"(?=(\p{P})?)(?=(\p{Ll})?)(?=(\p{Lu})?)(?=(\p{White_Space})?)(?=(\p{ExtPict})?)(?:"
    + "|".join(f"(\\p{{WB={_WB_NAMES[i]}}})" for i in _WB_ORDER) + ")"
)
_EFZ = (_EXTEND, _FORMAT, _ZWJ)
_PROPS: dict[str, tuple[int, bool, bool, bool, bool, bool]] = {}


def _props(ch: str) -> tuple[int, bool, bool, bool, bool, bool]:
    """(word-break category, is P, is Ll, is Lu, is White_Space, is Extended_Pictographic), as the
    Rust crate sees them."""
    p = _PROPS.get(ch)
    if p is None:
        if len(_PROPS) >= 1 << 18:
            _PROPS.clear()
        m = _PROPS_RE.match(ch)
        g = m.groups()
        p = _PROPS[ch] = (
            _OTHER if ch in _WB_OTHER_CHARS else _WB_ORDER[m.lastindex - 6],
            g[0] is not None and ch not in _P_DROP_CHARS,
            g[1] is not None or ch in _LL_EXTRA_CHARS,
            g[2] is not None,
            g[3] is not None,
            g[4] is not None or ch in _EP_EXTRA_CHARS,
        )
    return p


def _props_of(text: str) -> list[tuple[int, bool, bool, bool, bool, bool]]:
    props = list(map(_PROPS.get, text))
    if None in props:
        props = [p or _props(c) for p, c in zip(props, text)]
    return props


# States of the forward state machine (names as in unicode-segmentation's word.rs).
(_START, _LETTER, _HLETTER, _NUMERIC_S, _KATAKANA_S, _EXTENDNUMLET_S, _REGIONAL_HALF,
 _REGIONAL_FULL, _ZWJ_S, _EMOJI, _WSEGSPACE_S, _FE_ACCEPT_NONE, _FE_REQUIRE_LETTER,
 _FE_REQUIRE_HLETTER, _FE_ACCEPT_QLETTER, _FE_REQUIRE_NUMERIC) = range(16)


def _uax29_segments(props: list[tuple]) -> list[int]:
    """End indices of `text.split_word_bounds()` (unicode-segmentation 1.12, quirks included),
    given `props = _props_of(text)`."""
    cats = [p[0] for p in props]
    n = len(props)
    out = []
    start = 0
    while start < n:
        take_curr = True
        idx = save_idx = i = start
        state = _START
        cat = _OTHER
        skipped_format_extend = False
        while i < n:
            idx = i
            prev_zwj = cat == _ZWJ
            cat = cats[i]
            if state != _START and cat in _EFZ:  # WB4
                skipped_format_extend = True
                i += 1
                continue
            if prev_zwj and props[i][5]:  # WB3c
                state = _EMOJI
                i += 1
                continue
            if state == _START:
                if cat == _CR:
                    if i + 1 < n and cats[i + 1] == _LF:  # WB3
                        idx += 1
                    break
                if cat == _ALETTER:
                    state = _LETTER
                elif cat == _HEBREW:
                    state = _HLETTER
                elif cat == _NUMERIC:
                    state = _NUMERIC_S
                elif cat == _KATAKANA:
                    state = _KATAKANA_S
                elif cat == _EXTENDNUMLET:
                    state = _EXTENDNUMLET_S
                elif cat == _RI:
                    state = _REGIONAL_HALF
                elif cat == _LF or cat == _NEWLINE:
                    break
                elif cat == _ZWJ:
                    state = _ZWJ_S
                elif cat == _WSEGSPACE:
                    state = _WSEGSPACE_S
                else:
                    if i + 1 < n and cats[i + 1] in _EFZ:
                        state = _FE_ACCEPT_NONE
                        i += 1
                        continue
                    break
            elif state == _WSEGSPACE_S:
                if cat != _WSEGSPACE or skipped_format_extend:
                    take_curr = False
                    break
            elif state == _LETTER or state == _HLETTER:
                if cat == _ALETTER:
                    state = _LETTER
                elif cat == _HEBREW:
                    state = _HLETTER
                elif cat == _NUMERIC:
                    state = _NUMERIC_S
                elif cat == _EXTENDNUMLET:
                    state = _EXTENDNUMLET_S
                elif cat == _DQ and state == _HLETTER:
                    save_idx = idx
                    state = _FE_REQUIRE_HLETTER
                elif cat == _SQ and state == _HLETTER:
                    state = _FE_ACCEPT_QLETTER
                elif cat in (_MIDLETTER, _MIDNUMLET, _SQ):
                    save_idx = idx
                    state = _FE_REQUIRE_LETTER
                else:
                    take_curr = False
                    break
            elif state == _NUMERIC_S:
                if cat == _NUMERIC:
                    pass
                elif cat == _ALETTER:
                    state = _LETTER
                elif cat == _HEBREW:
                    state = _HLETTER
                elif cat == _EXTENDNUMLET:
                    state = _EXTENDNUMLET_S
                elif cat in (_MIDNUM, _MIDNUMLET, _SQ):
                    save_idx = idx
                    state = _FE_REQUIRE_NUMERIC
                else:
                    take_curr = False
                    break
            elif state == _KATAKANA_S:
                if cat == _EXTENDNUMLET:
                    state = _EXTENDNUMLET_S
                elif cat != _KATAKANA:
                    take_curr = False
                    break
            elif state == _EXTENDNUMLET_S:
                if cat == _ALETTER:
                    state = _LETTER
                elif cat == _HEBREW:
                    state = _HLETTER
                elif cat == _NUMERIC:
                    state = _NUMERIC_S
                elif cat == _KATAKANA:
                    state = _KATAKANA_S
                elif cat != _EXTENDNUMLET:
                    take_curr = False
                    break
            elif state == _REGIONAL_HALF:
                if cat != _RI:
                    take_curr = False
                    break
                state = _REGIONAL_FULL
            elif state in (_ZWJ_S, _EMOJI, _REGIONAL_FULL):
                take_curr = False
                break
            else:  # FormatExtend(t)
                if state == _FE_REQUIRE_NUMERIC and cat == _NUMERIC:
                    state = _NUMERIC_S
                elif state in (_FE_REQUIRE_LETTER, _FE_ACCEPT_QLETTER) and cat == _ALETTER:
                    state = _LETTER
                elif state in (_FE_REQUIRE_LETTER, _FE_ACCEPT_QLETTER, _FE_REQUIRE_HLETTER) and cat == _HEBREW:
                    state = _HLETTER
                elif state in (_FE_ACCEPT_NONE, _FE_ACCEPT_QLETTER):
                    take_curr = False
                    break
                else:
                    break  # rewound below
            i += 1
        if state in (_FE_REQUIRE_LETTER, _FE_REQUIRE_HLETTER, _FE_REQUIRE_NUMERIC):
            idx = save_idx  # the Mid* char did not join two letters/digits: back up
            take_curr = False
        if take_curr:
            idx += 1
        out.append(idx)
        start = idx
    return out


_SPACE, _WHITESPACE, _PUNCT, _WORD = range(4)


def _split_exact(text: str) -> list[str]:
    """hat-splitter's `split` (no size limit), char by char. Slow; exact on any text."""
    props = _props_of(text)
    bounds = []  # piece ends
    st = 0
    for end in _uax29_segments(props):
        for j in range(st, end - 1):  # split after \p{P}; split \p{Ll}|\p{Lu}
            p = props[j]
            if p[1] or (p[2] and props[j + 1][3]):
                bounds.append(j + 1)
        bounds.append(end)
        st = end
    is_ws = [p[4] for p in props]
    words: list[str] = []
    last = None
    st = 0
    for end in bounds:
        piece = text[st:end]
        if piece == " " and words and last in (_SPACE, _WHITESPACE) and words[-1].strip(" ") == "":
            words[-1] += " "  # combine_spaces: after an all-" " piece (always a word of its own)
            last = _WHITESPACE
            st = end
            continue
        if piece == " ":
            kind = _SPACE
        elif all(is_ws[st:end]):
            kind = _WHITESPACE
        elif end - st == 1 and props[st][1]:
            kind = _PUNCT
        else:
            kind = _WORD
        if words and ((last == _SPACE and kind == _WORD) or (last != _WHITESPACE and kind == _PUNCT)):
            words[-1] += piece
        else:
            words.append(piece)
        last = kind
        st = end
    return words

r"""HAT word splitting: text and byte sequences -> words (ARCHITECTURE.md §1).

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

The modules, bottom to top:
- `uax29`: the Unicode tables (Unicode 17 from `regex`, with overrides that make them the Rust crate's
  Unicode 16) and the exact engine, a line-by-line port of the Rust crate's steps 1-5. Slow, exact on
  any text.
- `fast`: steps 1-5 as one compiled pattern whose matches are the words; it hands the rare regions it
  cannot split exactly to the exact engine.
- `text`: step 6 (the size limit) and the text API: `split_words`, `split_with_specials`, `encode_batch`.
- `byte_rule`: the rule extended to any bytes (model inputs with special-token bytes, invalid UTF-8):
  `word_lengths_from_bytes`, `word_lengths_batch`.
- `online`: `WordBoundaryDetector`, which finds word ends one byte at a time, for generation.

Unicode versions. `regex` ships Unicode 17 tables; the Rust crate was built with Unicode 16
(`unicode-segmentation` 1.12, `regex-syntax` 0.8.5). The code points whose words differ were found
by splitting every code point in 16 contexts with both (the splitter tests' `probe_code_points`) and
are fixed by the override tables in `uax29`; `tests/splitter/test_uax29.py` re-checks them. Unicode 17
additions are `Word_Break=Other` (5 of them not `\p{P}`), 707 pictographs that Unicode 17 dropped
from Extended_Pictographic still count as emoji after a ZWJ, U+00B8 is not a letter and U+0295 is
`Ll`.
"""

from ..special_tokens import DEFAULT_SPECIAL_BYTE_VALUES
from .byte_rule import word_lengths_batch, word_lengths_from_bytes
from .online import Push, WordBoundaryDetector
from .text import DEFAULT_MAX_WORD_SIZE, encode_batch, split_with_specials, split_words

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

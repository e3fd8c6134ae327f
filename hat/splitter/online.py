"""Word ends found online, one byte at a time, for generation (ARCHITECTURE.md §1, "Online", and §5):
`WordBoundaryDetector` re-splits the open word plus each new byte with the byte rule."""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate

from ..special_tokens import DEFAULT_SPECIAL_BYTE_VALUES, check_special_byte_values
from .byte_rule import _as_bytes, _byte_words
from .text import DEFAULT_MAX_WORD_SIZE, _check_max_word_size, _limit
from .uax29 import _EFZ, _props


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
    """Finds word ends online, one byte at a time, for one sequence (ARCHITECTURE.md §5).

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
        self.special_byte_values = check_special_byte_values(special_byte_values)
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

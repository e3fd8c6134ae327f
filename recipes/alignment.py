"""Where a HAT's words and its source Llama's tokens meet (ARCHITECTURE.md §7.2): the alignment that teacher-guided
stage-1 training needs.

    spellings = token_spellings(tokenizer)                    # the bytes of every token id
    batch = align_batch(rows, word_lengths, tokenizer, spellings, special_tokens)

A HAT word and a Llama token both carry their leading space (`" world"`), so most word ends are token ends: on the
bundled corpus 99.6% of English and 99.3% of German words (SmolLM2's tokenizer; `benchmarks/bench_conversion_quality.py`
reports them for each tokenizer). A word whose last byte ends a token is *aligned*: the teacher's state at that
token is what the backbone should hold after that word, and the teacher's next-token distribution there is a
target for the bytes that follow. The other words are masked out of those losses.

Everything is computed from byte offsets, for any Hugging Face tokenizer with a fast (`tokenizers`) backend:
byte-level BPE (Llama 3, SmolLM2, GPT-2: each token's bytes come from its vocabulary string), SentencePiece with
byte fallback (`▁` and `<0xNN>` pieces), or anything else through the tokenizer's own decoder. Where the tokens'
bytes do not add up to the text (a normalising tokenizer), the character offsets of the encoding are used instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


# ----------------------------------------------------------------------------------------------------------
# Token spellings
# ----------------------------------------------------------------------------------------------------------
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: the character a byte-level BPE vocabulary uses for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and "ByteLevel" in repr(backend.decoder)


def token_spellings(tokenizer) -> list[bytes]:
    """The UTF-8 bytes of every token id (`b""` for special tokens, which never stand for text).

    Raises:
        ValueError: the tokenizer has no fast backend (offsets and vocabulary strings are needed).
    """
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError(f"{type(tokenizer).__name__} has no fast (`tokenizers`) backend; alignment needs one")
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    out: list[bytes] = []
    if _is_byte_level(tokenizer):
        alphabet = _byte_level_alphabet()
        for i, piece in enumerate(vocab):
            if i in special or piece is None or any(c not in alphabet for c in piece):
                out.append(b"")
            else:
                out.append(bytes(alphabet[c] for c in piece))
        return out
    for i, piece in enumerate(vocab):
        if i in special or piece is None:
            out.append(b"")
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):  # SentencePiece byte fallback
            out.append(bytes([int(piece[3:5], 16)]))
        else:
            out.append(piece.replace("\u2581", " ").encode("utf-8"))
    return out


# ----------------------------------------------------------------------------------------------------------
# Alignment of a batch
# ----------------------------------------------------------------------------------------------------------
@dataclass
class AlignedBatch:
    """The teacher's tokens for a batch of byte rows and where they meet the HAT's words and bytes.

    B rows, T byte columns (right padded), N token slots, W word slots.
    """

    token_ids: torch.Tensor  # (B, N) teacher token ids (right padded with 0)
    token_mask: torch.Tensor  # (B, N) 1 for real tokens
    word_token: torch.Tensor  # (B, W) index of the token that ends where the word ends, -1: not aligned / padding
    byte_token: torch.Tensor  # (B, T) index of the token holding each byte, -1 for padding
    byte_token_start: torch.Tensor  # (B, T) byte column where that token starts

    @property
    def aligned_fraction(self) -> float:
        """Aligned words / words (padding slots excluded by the caller's word count)."""
        return float((self.word_token >= 0).sum()) / max(1, int((self.word_token >= -1).sum()))


def _pieces(row: bytes, special_ids: dict[int, int]) -> list[tuple[bytes | int]]:
    """A byte row -> text pieces (bytes) and special tokens (their teacher id), in order."""
    out, start = [], 0
    for i, b in enumerate(row):
        if b in special_ids:
            if i > start:
                out.append(row[start:i])
            out.append(special_ids[b])
            start = i + 1
    if start < len(row):
        out.append(row[start:])
    return out


def _token_ends(text: str, data: bytes, ids: list[int], offsets, spellings: Sequence[bytes]) -> list[int]:
    """Byte end (exclusive) of each token of `text` (its UTF-8 is `data`), non-decreasing, the last at len(data)."""
    lengths = [len(spellings[i]) for i in ids]
    if sum(lengths) == len(data) and b"".join(spellings[i] for i in ids) == data:
        ends, total = [], 0
        for n in lengths:
            total += n
            ends.append(total)
        return ends
    char_to_byte = [0]
    for c in text:
        char_to_byte.append(char_to_byte[-1] + len(c.encode("utf-8")))
    ends, prev = [], 0
    for _, end in offsets:
        prev = max(prev, char_to_byte[min(end, len(text))])
        ends.append(prev)
    if ends:
        ends[-1] = len(data)
    return ends


def align_batch(
    rows: Sequence[bytes],
    word_lengths: Sequence[Sequence[int]],
    tokenizer,
    spellings: Sequence[bytes],
    special_ids: dict[int, int],
) -> AlignedBatch:
    """Tokenise each byte row for the teacher and align its tokens with the row's words and bytes.

    Args:
        rows (`list[bytes]`): HAT input bytes per row: UTF-8 text with special bytes (e.g. 192 for `<|eot_id|>`)
            between documents.
        word_lengths (`list[list[int]]`): the HAT's words of each row (bytes per word, summing to the row's length).
        tokenizer: the source Llama's fast tokenizer.
        spellings (`list[bytes]`): `token_spellings(tokenizer)`.
        special_ids (`dict[int, int]`): special byte value -> teacher token id (see `teacher_special_ids`).

    Raises:
        ValueError: a row's text part is not valid UTF-8, or word lengths that do not add up to the row.
    """
    B = len(rows)
    per_row: list[tuple[list[int], list[int]]] = []
    texts, where = [], []  # every text piece of the batch, tokenised in one call
    for b, row in enumerate(rows):
        if sum(word_lengths[b]) != len(row):
            raise ValueError(f"row {b}: word lengths add up to {sum(word_lengths[b])} bytes, the row has {len(row)}")
        for piece in _pieces(bytes(row), special_ids):
            if isinstance(piece, bytes):
                try:
                    texts.append(piece.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise ValueError(f"row {b}: bytes {e.start}-{e.end} of a text piece are not valid UTF-8") from e
                where.append(b)
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True) if texts else None
    k = 0
    for b, row in enumerate(rows):
        ids, ends, pos = [], [], 0
        for piece in _pieces(bytes(row), special_ids):
            if isinstance(piece, int):
                ids.append(piece)
                pos += 1
                ends.append(pos)
                continue
            text = texts[k]
            piece_ids = encoded["input_ids"][k]
            piece_ends = _token_ends(text, piece, piece_ids, encoded["offset_mapping"][k], spellings)
            ids += piece_ids
            ends += [pos + e for e in piece_ends]
            pos += len(piece)
            k += 1
        per_row.append((ids, ends))

    N = max(1, max(len(ids) for ids, _ in per_row))
    T = max(1, max(len(r) for r in rows))
    W = max(1, max(len(w) for w in word_lengths))
    token_ids = torch.zeros(B, N, dtype=torch.long)
    token_mask = torch.zeros(B, N, dtype=torch.long)
    word_token = torch.full((B, W), -1, dtype=torch.long)
    byte_token = torch.full((B, T), -1, dtype=torch.long)
    byte_token_start = torch.zeros(B, T, dtype=torch.long)
    for b, (ids, ends) in enumerate(per_row):
        n = len(ids)
        token_ids[b, :n] = torch.tensor(ids, dtype=torch.long)
        token_mask[b, :n] = 1
        ends_t = torch.tensor(ends, dtype=torch.long)  # (n,)
        word_ends = torch.tensor(word_lengths[b], dtype=torch.long).cumsum(0)  # (w,)
        # the last token ending at each word end (zero-byte tokens share an end with the token before them)
        last = torch.searchsorted(ends_t, word_ends, right=True) - 1  # (w,)
        hit = (last >= 0) & (ends_t[last.clamp(min=0)] == word_ends)
        word_token[b, : len(word_ends)] = torch.where(hit, last, -1)
        cols = torch.arange(len(rows[b]))
        holder = torch.searchsorted(ends_t, cols, right=True)  # (t,) first token ending after the byte
        byte_token[b, : len(cols)] = holder
        starts = torch.cat([torch.zeros(1, dtype=torch.long), ends_t[:-1]])
        byte_token_start[b, : len(cols)] = starts[holder]
    return AlignedBatch(token_ids, token_mask, word_token, byte_token, byte_token_start)


def teacher_special_ids(tokenizer, special_token_dict: dict[str, int]) -> dict[int, int]:
    """The teacher token id for each of the HAT's special bytes: the token of the same name if the teacher has one
    (`<|eot_id|>` in Llama 3), else the teacher's eos for the HAT's end of text.

    Raises:
        ValueError: a special token the teacher has no counterpart for.
    """
    vocab = tokenizer.get_vocab()
    out = {}
    for name, value in special_token_dict.items():
        if name in vocab:
            out[value] = vocab[name]
        elif name == "<|eot_id|>" and tokenizer.eos_token_id is not None:
            out[value] = tokenizer.eos_token_id
        else:
            raise ValueError(f"special token {name!r} (byte {value}) has no counterpart in the teacher's tokenizer")
    return out

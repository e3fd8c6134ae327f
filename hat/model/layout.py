"""Where every byte and word of a batch sits, and the attention masks built from it (ARCHITECTURE.md §3.1).

Pure functions from word lengths to the index tensors every part of the model needs, in torch ops on the batch's
device. B rows, T byte columns, W word slots, L bytes per word.

A row may hold several documents (TRL's padding-free batches: `position_ids` restarting at 0, or `cu_seq_lens_q`,
`seq_idx`; `packed_documents` reads them): then every document is what it would be alone (ARCHITECTURE.md §3.1):
bytes and words attend within their document only, positions restart, and its first word gets the learned first-word
prediction. Its words are split on its own bytes (`packed_word_lengths`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class WordLayout:
    """Where every byte and word of a padded batch sits. B rows, T byte columns, W word slots, L bytes/word.

    Real bytes of a row are contiguous (left or right padding). Words are packed to the left of the word axis.
    """

    word_lengths: torch.Tensor  # (B, W) long, bytes per word, right-padded with 0
    byte_valid: torch.Tensor  # (B, T) bool
    byte_positions: torch.Tensor  # (B, T) long, 0.. over the real bytes of a row
    byte_word: torch.Tensor  # (B, T) long, word slot of each byte (0 for padding)
    word_valid: torch.Tensor  # (B, W) bool
    word_bytes: torch.Tensor  # (B, W, L) long, byte column of each byte of each word (0 for padding)
    word_bytes_valid: torch.Tensor  # (B, W, L) bool
    word_positions: torch.Tensor  # (B, W) long: the word's index in its document, RoPE position of pooling and backbone
    # Packed rows only (None: one document per row)
    byte_document: torch.Tensor | None = None  # (B, T) long, document of each byte
    word_document: torch.Tensor | None = None  # (B, W) long, document of each word (of its first byte)
    first_words: torch.Tensor | None = None  # (B, W) bool, the first word of each document

    @property
    def num_words(self) -> torch.Tensor:  # (B,)
        return self.word_valid.sum(-1)

    def byte_mask(self, window: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask (B, 1, T, T) of a byte stack: causal within `window` keys (the byte itself and the
        `window - 1` before it), real bytes of the same document only."""
        return additive_mask(_within(causal_mask(self.byte_valid, window), self.byte_document), dtype)

    def word_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask (B, 1, W, W) of the backbone: causal over the real words of the same document."""
        return additive_mask(_within(causal_mask(self.word_valid), self.word_document), dtype)


def _within(allowed: torch.Tensor, document: torch.Tensor | None) -> torch.Tensor:
    """A (B, 1, Q, K) mask over one axis, restricted to pairs in the same document (B, K) (queries: the last Q)."""
    if document is None:
        return allowed
    Q = allowed.shape[-2]
    return allowed & (document[:, None, -Q:, None] == document[:, None, None, :])


def build_layout(
    word_lengths: Sequence[Sequence[int]] | torch.Tensor, attention_mask: torch.Tensor,
    documents: torch.Tensor | None = None,
) -> WordLayout:
    """Index tensors for a batch whose row b holds `sum(word_lengths[b])` real bytes, built on the mask's device.

    Args:
        word_lengths (`list[list[int]]` or `torch.LongTensor` of shape `(B, W)`): bytes per word, per row; a tensor
            is right-padded with 0 (the data collator's format).
        attention_mask (`torch.Tensor` of shape `(B, T)`): 1 for real bytes, contiguous in each row.
        documents (`torch.LongTensor` of shape `(B, T)`, *optional*): the document of each byte of packed rows
            (`packed_documents`); a new document starts wherever the value changes.

    Raises:
        ValueError: the word lengths do not add up to a row's real bytes, are not positive (then 0-padded), do not
            have one row per batch row, a row's real bytes are not contiguous, or a word spans two documents.
    """
    device = attention_mask.device
    mask = attention_mask.bool()  # (B, T)
    B, T = mask.shape
    lengths = _length_tensor(word_lengths, B, device)  # (B, W)

    n_real = mask.sum(1)  # (B,)
    starts = mask.int().argmax(1)  # (B,) column of each row's first real byte (0 for an empty row)
    offset = torch.arange(T, device=device) - starts[:, None]  # (B, T) byte index within the row's real bytes
    ends = lengths.cumsum(1)  # (B, W) offset one past each word's last byte
    word_valid = lengths > 0  # (B, W)
    # One device-to-host copy for every check and the longest word.
    bad_sum = ends[:, -1] != n_real  # (B,)
    bad_mask = mask != ((offset >= 0) & (offset < n_real[:, None]))  # (B, T)
    bad_lengths = (lengths < 0) | (word_valid[:, 1:] & ~word_valid[:, :-1]).any(1, keepdim=True)  # (B, W)
    word_start = starts[:, None] + ends - lengths  # (B, W) column of each word's first byte
    if documents is None:
        word_document = first_words = None
        bad_words = torch.zeros_like(word_valid)
    else:
        if documents.shape != mask.shape:
            raise ValueError(f"documents must be (batch, bytes) {tuple(mask.shape)}, got {tuple(documents.shape)}")
        documents = documents.to(device=device, dtype=torch.long)
        first_col, last_col = word_start.clamp(0, T - 1), (word_start + lengths - 1).clamp(0, T - 1)  # (B, W)
        word_document = documents.gather(1, first_col).masked_fill(~word_valid, -1)  # (B, W)
        bad_words = word_valid & (documents.gather(1, last_col) != word_document)  # (B, W) words across documents
        previous = torch.cat([word_document.new_full((B, 1), -2), word_document[:, :-1]], 1)  # (B, W)
        first_words = word_valid & (word_document != previous)
    # One device-to-host copy for every check and the longest word.
    bad = bad_sum | bad_mask.any(1) | bad_lengths.any(1) | bad_words.any(1)  # (B,)
    bad, longest = torch.stack([bad.any(), lengths.max()]).tolist()
    if bad:
        _raise_layout_error(lengths, n_real, bad_sum, bad_mask, bad_lengths, bad_words)
    L = max(1, longest)

    byte_word = torch.searchsorted(ends, offset.clamp(min=0), right=True)  # (B, T) words ending at or before a byte
    byte_word = byte_word.masked_fill(~mask, 0)
    within = torch.arange(L, device=device)  # (L,)
    word_bytes_valid = within < lengths[:, :, None]  # (B, W, L)
    word_bytes = torch.where(word_bytes_valid, word_start[:, :, None] + within, 0)  # (B, W, L)
    cols, slots = torch.arange(T, device=device).expand(B, T), torch.arange(lengths.shape[1], device=device)
    if documents is None:
        byte_positions = (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        word_positions = slots.expand(B, -1)  # (B, W)
    else:
        previous = torch.cat([documents[:, :1] - 1, documents[:, :-1]], 1)  # (B, T)
        first_bytes = mask & ((documents != previous) | (offset == 0))  # (B, T) first byte of each document
        byte_positions = cols - torch.where(first_bytes, cols, 0).cummax(1).values  # (B, T) offset in its document
        byte_positions = byte_positions.masked_fill(~mask, 0)
        word_positions = slots - torch.where(first_words, slots, 0).cummax(1).values  # (B, W) index in its document
        word_positions = word_positions.masked_fill(~word_valid, 0)
    return WordLayout(
        word_lengths=lengths,
        byte_valid=mask,
        byte_positions=byte_positions,
        byte_word=byte_word,
        word_valid=word_valid,
        word_bytes=word_bytes,
        word_bytes_valid=word_bytes_valid,
        word_positions=word_positions,
        byte_document=None if documents is None else documents,
        word_document=word_document,
        first_words=first_words,
    )


def _length_tensor(word_lengths, batch_size: int, device: torch.device) -> torch.Tensor:
    """word_lengths (list of lists, or (B, W)) -> (B, max(W, 1)) long on `device`, right-padded with 0."""
    if isinstance(word_lengths, torch.Tensor):
        if word_lengths.dim() != 2 or word_lengths.shape[0] != batch_size:
            raise ValueError(f"word_lengths must be ({batch_size}, words), got shape {tuple(word_lengths.shape)}")
        lengths = word_lengths.to(device=device, dtype=torch.long)
    else:
        if len(word_lengths) != batch_size:
            raise ValueError(f"word_lengths has {len(word_lengths)} rows, the batch has {batch_size}")
        W = max((len(row) for row in word_lengths), default=0)
        lengths = torch.tensor([list(row) + [0] * (W - len(row)) for row in word_lengths], dtype=torch.long)
        lengths = lengths.reshape(batch_size, W).to(device)
    if lengths.shape[1] == 0:  # no row has a word: one empty word slot, so that every part sees W >= 1
        lengths = lengths.new_zeros(batch_size, 1)
    return lengths


def _raise_layout_error(lengths, n_real, bad_sum, bad_mask, bad_lengths, bad_words) -> None:
    """The ValueError for the first bad row of `build_layout` (the error path: host copies are fine here)."""
    b = int((bad_lengths.any(1) | bad_sum | bad_mask.any(1) | bad_words.any(1)).nonzero()[0])
    row = lengths[b].tolist()
    if bad_lengths[b].any():
        raise ValueError(f"row {b}: word lengths must be positive, then padded with 0, got {row}")
    if bad_sum[b]:
        raise ValueError(f"row {b}: word lengths add up to {sum(row)} bytes, the row has {int(n_real[b])}")
    if bad_words[b].any():
        w = int(bad_words[b].nonzero()[0])
        raise ValueError(f"row {b}: word {w} ({row[w]} bytes) spans two packed documents; split each document's "
                         "bytes on their own (hat.model.layout.packed_word_lengths)")
    raise ValueError(f"row {b}: attention_mask must be one contiguous run of ones (left or right padding)")


def packed_documents(
    shape: tuple[int, int], position_ids: torch.Tensor | None = None, cu_seq_lens: torch.Tensor | None = None,
    seq_idx: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """The document of each byte of a batch of `shape` (B, T) that packs several documents per row, as transformers'
    attention kwargs (and TRL's padding-free collator) describe them; None when none of them is given.

    Args:
        position_ids (`torch.LongTensor` of shape `(B, T)`, *optional*): a document starts wherever the position does
            not follow the one before by 1 (transformers' rule: positions restart at 0 for each document).
        cu_seq_lens (`torch.Tensor` of shape `(N + 1,)`, *optional*): the flash-attention form for one packed row
            (B = 1): the first column of each of its N documents, then T.
        seq_idx (`torch.Tensor` of shape `(B, T)`, *optional*): the document of each column.
    The first one given is used, in the order `cu_seq_lens`, `seq_idx`, `position_ids`.

    Raises:
        ValueError: a tensor that does not fit the batch.
    """
    B, T = shape
    if cu_seq_lens is not None:
        cu = cu_seq_lens.long().flatten()
        if B != 1 or cu.numel() < 2 or int(cu[0]) != 0 or int(cu[-1]) != T or (cu.diff() < 0).any():
            raise ValueError(f"cu_seq_lens must run from 0 to {T} (one packed row) for a batch of shape {(B, T)}, got "
                             f"{cu.tolist()}")
        return torch.searchsorted(cu[1:], torch.arange(T, device=cu.device), right=True)[None]  # (1, T)
    if seq_idx is not None:
        if tuple(seq_idx.shape) != (B, T):
            raise ValueError(f"seq_idx must be {(B, T)}, got shape {tuple(seq_idx.shape)}")
        return seq_idx.long()
    if position_ids is not None:
        if tuple(position_ids.shape) != (B, T):
            raise ValueError(f"position_ids must be {(B, T)}, got shape {tuple(position_ids.shape)}")
        starts = position_ids.diff(dim=-1, prepend=position_ids[:, :1] - 1) != 1  # (B, T)
        return starts.long().cumsum(-1)
    return None


def document_lengths(documents: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """documents, attention_mask (B, T) -> the bytes of each document among each row's real bytes, in order (host)."""
    lengths = []
    for row_documents, row_mask in zip(documents.cpu(), attention_mask.bool().cpu()):
        _, counts = torch.unique_consecutive(row_documents[row_mask], return_counts=True)
        lengths.append(counts.tolist())
    return lengths


def packed_word_lengths(
    rows: Sequence[Sequence[int]], lengths: Sequence[Sequence[int]],
    split: Callable[[list[list[int]]], list[list[int]]],
) -> list[list[int]]:
    """The word lengths of rows that pack documents: each document of `rows[b]` (its bytes, `lengths[b]` per
    document) split on its own by `split` (rows of bytes -> their word lengths), concatenated per row."""
    pieces, owner = [], []
    for b, (row, row_lengths) in enumerate(zip(rows, lengths, strict=True)):
        start = 0
        for n in row_lengths:
            pieces.append(list(row[start : start + n]))
            owner.append(b)
            start += n
    out: list[list[int]] = [[] for _ in rows]
    for b, words in zip(owner, split(pieces)):
        out[b].extend(words)
    return out


def causal_mask(key_valid: torch.Tensor, window: int | None = None, q_len: int | None = None) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, Q, K): causal, optionally within `window`, never attending to invalid keys.

    The last `Q` of the `K` columns are the queries. A query with no valid key (a padding row) attends to
    itself so that softmax never sees an empty row.
    """
    B, K = key_valid.shape
    Q = K if q_len is None else q_len
    q_idx = torch.arange(K - Q, K, device=key_valid.device)[:, None]  # (Q, 1)
    k_idx = torch.arange(K, device=key_valid.device)[None, :]  # (1, K)
    allowed = k_idx <= q_idx
    if window is not None:
        allowed = allowed & (q_idx - k_idx < window)
    allowed = allowed[None] & key_valid[:, None, :]  # (B, Q, K)
    allowed = allowed | (k_idx == q_idx)[None]
    return allowed[:, None]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean mask -> additive float mask (0 / most negative), which eager and SDPA attention both honour."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def gather_words(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) gathered at index (B, ...) along dim 1."""
    B = x.shape[0]
    flat = index.reshape(B, -1)  # (B, N)
    out = x[torch.arange(B, device=x.device)[:, None], flat]  # (B, N, ...)
    return out.reshape(*index.shape, *x.shape[2:])

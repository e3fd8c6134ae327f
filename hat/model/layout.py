"""Where every byte and word of a batch sits, and the attention masks built from it (ARCHITECTURE.md §3.1).

Pure functions from word lengths to the index tensors every part of the model needs, in torch ops on the batch's
device. B rows, T byte columns, W word
slots, L bytes per word.
"""

from __future__ import annotations

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

    @property
    def num_words(self) -> torch.Tensor:  # (B,)
        return self.word_valid.sum(-1)

    @property
    def word_positions(self) -> torch.Tensor:  # (B, W) long: the word index, RoPE position of pooling and backbone
        B, W = self.word_valid.shape
        return torch.arange(W, device=self.word_valid.device).expand(B, W)

    def byte_mask(self, window: int, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask (B, 1, T, T) of a byte stack: causal within `window` bytes, real bytes only."""
        return additive_mask(causal_mask(self.byte_valid, window), dtype)

    def word_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """Additive mask (B, 1, W, W) of the backbone: causal over the real words."""
        return additive_mask(causal_mask(self.word_valid), dtype)


def build_layout(word_lengths: Sequence[Sequence[int]] | torch.Tensor, attention_mask: torch.Tensor) -> WordLayout:
    """Index tensors for a batch whose row b holds `sum(word_lengths[b])` real bytes, built on the mask's device.

    Args:
        word_lengths (`list[list[int]]` or `torch.LongTensor` of shape `(B, W)`): bytes per word, per row; a tensor
            is right-padded with 0 (the data collator's format).
        attention_mask (`torch.Tensor` of shape `(B, T)`): 1 for real bytes, contiguous in each row.

    Raises:
        ValueError: the word lengths do not add up to a row's real bytes, are not positive (then 0-padded), do not
            have one row per batch row, or a row's real bytes are not contiguous.
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
    bad, longest = torch.stack([(bad_sum | bad_mask.any(1) | bad_lengths.any(1)).any(), lengths.max()]).tolist()
    if bad:
        _raise_layout_error(lengths, n_real, bad_sum, bad_mask, bad_lengths)
    L = max(1, longest)

    byte_word = torch.searchsorted(ends, offset.clamp(min=0), right=True)  # (B, T) words ending at or before a byte
    byte_word = byte_word.masked_fill(~mask, 0)
    within = torch.arange(L, device=device)  # (L,)
    word_bytes_valid = within < lengths[:, :, None]  # (B, W, L)
    word_start = starts[:, None] + ends - lengths  # (B, W) column of each word's first byte
    word_bytes = torch.where(word_bytes_valid, word_start[:, :, None] + within, 0)  # (B, W, L)
    return WordLayout(
        word_lengths=lengths,
        byte_valid=mask,
        byte_positions=(mask.long().cumsum(-1) - 1).clamp(min=0),
        byte_word=byte_word,
        word_valid=word_valid,
        word_bytes=word_bytes,
        word_bytes_valid=word_bytes_valid,
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


def _raise_layout_error(lengths, n_real, bad_sum, bad_mask, bad_lengths) -> None:
    """The ValueError for the first bad row of `build_layout` (the error path: host copies are fine here)."""
    b = int((bad_lengths.any(1) | bad_sum | bad_mask.any(1)).nonzero()[0])
    row = lengths[b].tolist()
    if bad_lengths[b].any():
        raise ValueError(f"row {b}: word lengths must be positive, then padded with 0, got {row}")
    if bad_sum[b]:
        raise ValueError(f"row {b}: word lengths add up to {sum(row)} bytes, the row has {int(n_real[b])}")
    raise ValueError(f"row {b}: attention_mask must be one contiguous run of ones (left or right padding)")


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

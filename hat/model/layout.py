"""Where every byte and word of a batch sits, and the attention masks built from it (ARCHITECTURE.md §3.1).

Pure functions from word lengths to the index tensors every part of the model needs. B rows, T byte columns, W word
slots, L bytes per word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class WordLayout:
    """Where every byte and word of a padded batch sits. B rows, T byte columns, W word slots, L bytes/word.

    Real bytes of a row are contiguous (left or right padding). Words are packed to the left of the word axis.
    """

    byte_valid: torch.Tensor  # (B, T) bool
    byte_positions: torch.Tensor  # (B, T) long, 0.. over the real bytes of a row
    byte_word: torch.Tensor  # (B, T) long, word slot of each byte (0 for padding)
    word_valid: torch.Tensor  # (B, W) bool
    word_bytes: torch.Tensor  # (B, W, L) long, byte column of each byte of each word (0 for padding)
    word_bytes_valid: torch.Tensor  # (B, W, L) bool

    @property
    def num_words(self) -> torch.Tensor:  # (B,)
        return self.word_valid.sum(-1)


def build_layout(word_lengths: Sequence[Sequence[int]], attention_mask: torch.Tensor) -> WordLayout:
    """Index tensors for a batch whose row b holds `sum(word_lengths[b])` real bytes.

    Args:
        word_lengths (`list[list[int]]`): bytes per word, per row.
        attention_mask (`torch.Tensor` of shape `(B, T)`): 1 for real bytes, contiguous in each row.

    Raises:
        ValueError: the word lengths do not add up to a row's real bytes, or a row's real bytes are not contiguous.
    """
    device = attention_mask.device
    mask = attention_mask.bool().cpu().numpy()
    B, T = mask.shape
    n_real = mask.sum(1)
    starts = mask.argmax(1)
    for b in range(B):
        if sum(word_lengths[b]) != n_real[b]:
            raise ValueError(f"row {b}: word lengths add up to {sum(word_lengths[b])} bytes, the row has {n_real[b]}")
        if n_real[b] and not mask[b, starts[b] : starts[b] + n_real[b]].all():
            raise ValueError(f"row {b}: attention_mask must be one contiguous run of ones (left or right padding)")
    W = max(1, max(len(w) for w in word_lengths))
    L = max(1, max((max(w) for w in word_lengths if len(w)), default=1))

    byte_word = np.zeros((B, T), dtype=np.int64)
    word_valid = np.zeros((B, W), dtype=bool)
    word_bytes = np.zeros((B, W, L), dtype=np.int64)
    word_bytes_valid = np.zeros((B, W, L), dtype=bool)
    ar = np.arange(L)
    for b, lengths in enumerate(word_lengths):
        if not len(lengths):
            continue
        lengths = np.asarray(lengths, dtype=np.int64)
        n = len(lengths)
        word_start = starts[b] + np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (n,) column of each word's first byte
        byte_word[b, starts[b] : starts[b] + n_real[b]] = np.repeat(np.arange(n), lengths)
        word_valid[b, :n] = True
        valid = ar[None, :] < lengths[:, None]  # (n, L)
        word_bytes[b, :n] = np.where(valid, word_start[:, None] + ar[None, :], 0)
        word_bytes_valid[b, :n] = valid

    byte_valid = torch.from_numpy(mask)
    positions = (byte_valid.long().cumsum(-1) - 1).clamp(min=0)
    return WordLayout(
        byte_valid=byte_valid.to(device),
        byte_positions=positions.to(device),
        byte_word=torch.from_numpy(byte_word).to(device),
        word_valid=torch.from_numpy(word_valid).to(device),
        word_bytes=torch.from_numpy(word_bytes).to(device),
        word_bytes_valid=torch.from_numpy(word_bytes_valid).to(device),
    )


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

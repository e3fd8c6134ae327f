"""The caches of cached HAT decoding (`hat.generation.decoding`), one row per sequence, batch-first.

- `ModelCaches`: the three KV caches, one per stack, which `HATModel.forward` fills in the prefill.

- `ByteKVCache` (encoder, decoder): a ring of `window + slack` slots per layer; byte column `c` of a row lives in slot
  `c % capacity`, so memory is bounded by the sliding window. A layer's keys and values share one buffer, written
  with one `index_copy_` per step (`update_packed`, used by `fused.FusedStack`; `update` serves HF's layers).
- `WordKVCache` (backbone): per layer a `(B, Hkv, capacity, hd)` buffer and a word count per row; a backbone step
  runs for any subset of rows, each writing its word at its own length, attention masked by length (no holes).
- `ByteSlots`: each ring slot's byte position and validity (left padding), and the incrementally kept additive window
  mask of each row's newest byte.
- `RotaryTable`: a byte stack's RoPE cos / sin for positions 0.., computed once by the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..model.layout import additive_mask


class ByteKVCache:
    """Sliding-window KV cache of a byte-level stack (encoder or decoder): a ring of `capacity` slots per layer.

    Duck-types the one `Cache` method a `LlamaDecoderLayer` calls, `update(key_states, value_states, layer_idx)`, and
    offers `update_packed` to `fused.FusedStack`. `prefilling=True`: the call stores the last `capacity` columns
    and attends to all of its own keys. Afterwards the owner calls `begin_step(rows, slots, write, n_keys)` before each
    step: row `rows[i]` stores its Q new keys in `slots[i]` where `write[i]` holds (the other positions keep their
    entries), and attention reads the first `n_keys` slots of every row. A layer's keys and values share one buffer
    (B, 2 Hkv, C, hd) (keys, then values), so that a step's writes are one `index_copy_` of its (row, head, slot)
    triples, and attention reads each head's slots contiguously.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.kv: dict[int, torch.Tensor] = {}  # layer -> (B, 2 Hkv, C, hd): keys, then values
        self.prefilling = True
        self.rows: torch.Tensor | None = None  # (n,) rows that write, None: all rows
        self.slots: torch.Tensor | None = None  # (n, Q)
        self.write: torch.Tensor | None = None  # (n, Q, 1, 1) bool, None: all
        self.flat: torch.Tensor | None = None  # (n 2Hkv Q,) flat (row, head, slot) of each write, built per step
        self.n_keys = capacity

    def begin_step(self, rows, slots, write, n_keys) -> None:
        self.prefilling, self.rows, self.slots, self.write, self.n_keys = False, rows, slots, write, n_keys
        self.flat = None

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """key_states, value_states (B, Hkv, Q, hd) -> the keys and values the step attends to (B, Hkv, K, hd)."""
        return self.update_packed(torch.cat([key_states, value_states], dim=1).transpose(1, 2), layer_idx)

    def update_packed(self, packed: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """packed (B, Q, 2 Hkv, hd), a step's keys then values per position -> keys, values (B, Hkv, K, hd)."""
        if self.prefilling:  # T columns: keep the last C of them, attend to all T
            packed = packed.transpose(1, 2)  # (B, 2 Hkv, T, hd)
            B, heads, T, hd = packed.shape
            keep = min(T, self.capacity)
            slots = torch.arange(T - keep, T, device=packed.device) % self.capacity  # (keep,)
            self.kv[layer_idx] = packed.new_zeros(B, heads, self.capacity, hd)
            self.kv[layer_idx][:, :, slots] = packed[:, :, T - keep :]
            return packed[:, : heads // 2], packed[:, heads // 2 :]
        buf = self.kv[layer_idx]
        B, heads, C, hd = buf.shape
        if self.rows is not None:
            packed = packed.index_select(0, self.rows)
        if self.write is None:
            if self.flat is None:  # the same for every layer of the step
                rows = self._row_index(packed.shape[0], packed.device)
                head = torch.arange(heads, device=packed.device)
                self.flat = ((rows[:, None, None] * heads + head[None, :, None]) * C + self.slots[:, None]).flatten()
            buf.view(-1, hd).index_copy_(0, self.flat, packed.transpose(1, 2).reshape(-1, hd))
        else:
            index = (self._row_index(packed.shape[0], packed.device)[:, None], slice(None), self.slots)  # (n, Q, ...)
            buf[index] = torch.where(self.write, packed, buf[index])
        return buf[:, : heads // 2, : self.n_keys], buf[:, heads // 2 :, : self.n_keys]

    def _row_index(self, n: int, device) -> torch.Tensor:
        """(n,) the batch row of each writing row."""
        return self.rows if self.rows is not None else torch.arange(n, device=device)

    def select_rows(self, rows: torch.Tensor) -> None:
        for i in self.kv:
            self.kv[i] = self.kv[i].index_select(0, rows)


class WordKVCache:
    """Backbone KV cache with a word count per row, so that a step can run on any subset of rows.

    `prefilling=True`: `update` stores all W words of every row and returns them (the prefill attends to all).
    Afterwards the owner calls `begin_step(rows, positions, n_keys)`: each of the n rows writes its one new word at
    its own position, and the attention reads those rows' first `n_keys` slots (masked by length by the caller).
    """

    def __init__(self):
        self.keys: dict[int, torch.Tensor] = {}  # layer -> (B, Hkv, capacity, hd)
        self.values: dict[int, torch.Tensor] = {}
        self.prefilling = True
        self.rows: torch.Tensor | None = None  # (n,) rows of this step, None: all rows in order
        self.positions: torch.Tensor | None = None  # (n,) slot each row writes
        self.n_keys = 0

    @property
    def capacity(self) -> int:
        return next(iter(self.keys.values())).shape[2] if self.keys else 0

    def begin_step(self, rows: torch.Tensor | None, positions: torch.Tensor, n_keys: int) -> None:
        self.prefilling, self.rows, self.positions, self.n_keys = False, rows, positions, n_keys
        if n_keys > self.capacity:  # grow geometrically
            new_cap = max(2 * self.capacity, n_keys, 16)
            for store in (self.keys, self.values):
                for i, buf in store.items():
                    grown = buf.new_zeros(*buf.shape[:2], new_cap, buf.shape[3])
                    grown[:, :, : buf.shape[2]] = buf
                    store[i] = grown

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """key_states, value_states (n, Hkv, Q, hd) -> keys and values to attend to."""
        if self.prefilling:
            B, H, W, D = key_states.shape
            cap = max(2 * W, 16)
            for store, new in ((self.keys, key_states), (self.values, value_states)):
                buf = new.new_zeros(B, H, cap, D)
                buf[:, :, :W] = new
                store[layer_idx] = buf
            return key_states, value_states
        k, v = self.keys[layer_idx], self.values[layer_idx]
        rows = self.rows if self.rows is not None else torch.arange(key_states.shape[0], device=k.device)
        k[rows, :, self.positions] = key_states[:, :, 0]  # (n, Hkv, hd) at (row, :, position)
        v[rows, :, self.positions] = value_states[:, :, 0]
        k, v = k[:, :, : self.n_keys], v[:, :, : self.n_keys]
        if self.rows is not None:
            k, v = k.index_select(0, self.rows), v.index_select(0, self.rows)  # (n, Hkv, K, hd)
        return k, v

    def select_rows(self, rows: torch.Tensor) -> None:
        for store in (self.keys, self.values):
            for i in store:
                store[i] = store[i].index_select(0, rows)


@dataclass
class ByteSlots:
    """Byte position and validity of every ring slot, shared by the encoder and decoder caches.

    `bias` (B, C) is the additive mask of each row's newest byte as a query (0: a valid key within `window`, else
    the most negative value). `append` keeps it current with two writes per byte instead of rebuilding it.
    """

    positions: torch.Tensor  # (B, C) long
    valid: torch.Tensor  # (B, C) bool
    window: int
    bias: torch.Tensor  # (B, C) float

    @classmethod
    def from_prefill(cls, positions, valid, window: int, dtype: torch.dtype) -> ByteSlots:
        last = positions.max(1, keepdim=True).values  # (B, 1) every row's newest position
        allowed = valid & (last - positions < window)
        return cls(positions, valid, window, additive_mask(allowed, dtype))

    def append(self, rows: torch.Tensor, cols: torch.Tensor, positions: torch.Tensor) -> None:
        """Row `rows[i]` gets a byte at column `cols[i]`, position `positions[i]` (all (n,))."""
        C = self.positions.shape[1]
        slots = cols % C
        self.positions[rows, slots] = positions
        self.valid[rows, slots] = True
        leaving = (cols - self.window) % C  # the slot whose byte leaves the window
        self.bias[rows, leaving] = torch.where(cols >= self.window, torch.finfo(self.bias.dtype).min,
                                               self.bias[rows, leaving])
        self.bias[rows, slots] = 0.0

    def select_rows(self, rows: torch.Tensor) -> ByteSlots:
        return ByteSlots(self.positions.index_select(0, rows), self.valid.index_select(0, rows), self.window,
                         self.bias.index_select(0, rows))

    def mask(self, query_positions: torch.Tensor, window: int, n_keys: int, dtype: torch.dtype) -> torch.Tensor:
        """query_positions (B, Q) -> additive mask (B, 1, Q, n_keys): causal, within `window`, valid keys only."""
        kpos = self.positions[:, None, :n_keys]  # (B, 1, K)
        qpos = query_positions[:, :, None]  # (B, Q, 1)
        allowed = self.valid[:, None, :n_keys] & (kpos <= qpos) & (qpos - kpos < window)  # (B, Q, K)
        return additive_mask(allowed[:, None], dtype)


class RotaryTable:
    """cos / sin of a byte stack's RoPE for positions 0.., computed once by `compute` and grown on demand.

    `compute(positions)`: positions (1, n) -> cos, sin (1, n, hd), e.g. one of `HATModel.byte_position_embeddings`.
    """

    def __init__(self, compute: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], device: torch.device):
        self.compute, self.device = compute, device
        self.cos = self.sin = None  # (L, hd)

    def __call__(self, positions: torch.Tensor, max_position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, Q) -> cos, sin (B, Q, hd)."""
        if self.cos is None or max_position >= self.cos.shape[0]:
            n = max(2 * max_position, 1024)
            cos, sin = self.compute(torch.arange(n, device=self.device)[None])  # (1, n, hd)
            self.cos, self.sin = cos[0], sin[0]
        return self.cos[positions], self.sin[positions]


@dataclass
class ModelCaches:
    """The KV caches of the three stacks, what `HATModel.forward(past_key_values=...)` fills."""

    encoder: ByteKVCache
    backbone: WordKVCache
    decoder: ByteKVCache

    def select_rows(self, rows: torch.Tensor) -> None:
        for cache in (self.encoder, self.backbone, self.decoder):
            cache.select_rows(rows)
